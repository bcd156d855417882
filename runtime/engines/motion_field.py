"""What the LivePortrait and SadTalker dense-motion networks (both first-order-motion style)
share: the identity grid their flows start from, keypoint heatmaps, the per-keypoint candidate
motions, and trilinear volume sampling with a fast path for backends that lack 3D grid_sample.

MPS implements `grid_sample` for 4D inputs only. Instead of letting the 5D call fall back to
the CPU (a per-frame device round trip), `grid_sample_3d_via_2d` lays the depth slices out as
one tall 2D atlas, samples the two depth neighbours of every point with bilinear 2D
grid_sample and blends them: the same result as trilinear `grid_sample` with zero padding and
align_corners=False.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KEYPOINT_VARIANCE = 0.01  # width of the gaussian heatmaps, in normalized units squared (both upstreams)


def identity_grid_3d(depth: int, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z) in [-1, 1] (linspace per axis, both upstreams'
    make_coordinate_grid): x to the right, y down, z inward, in grid_sample's order."""
    z = torch.linspace(-1.0, 1.0, depth, device=device, dtype=dtype)
    y = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    x = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def keypoint_heatmaps(keypoints: torch.Tensor, identity_grid: torch.Tensor) -> torch.Tensor:
    """Gaussian bumps: keypoints (B, K, 3), identity_grid (D, H, W, 3) -> (B, K, D, H, W)."""
    offset = identity_grid[None, None] - keypoints[:, :, None, None, None, :]
    return torch.exp(-0.5 * offset.pow(2).sum(-1) / KEYPOINT_VARIANCE)


def keypoint_motions(identity_grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """Candidate backward flows (B, 1+K, D, H, W, 3): the identity (background), then for each
    keypoint k the grid translated by x_s[k] - x_d[k] (where a driving voxel samples the source
    if only keypoint k moved)."""
    batch = kp_driving.shape[0]
    shift = (kp_source - kp_driving)[:, :, None, None, None, :]
    per_keypoint = identity_grid[None, None] + shift
    background = identity_grid[None, None].expand(batch, 1, *identity_grid.shape)
    return torch.cat([background, per_keypoint], dim=1)


def grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """volume (N, C, D, H, W), grid (N, D', H', W', 3) in [-1, 1] (x, y, z) -> (N, C, D', H', W')."""
    if volume.device.type == "mps":
        return grid_sample_3d_via_2d(volume, grid)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_volume(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear-sample volumes at grids (align_corners=False, zero padding).

    volume (V, C, D, H, W); grid (N, D', H', W', 3), N a multiple of V: grids
    [i N/V, (i + 1) N/V) sample volume i. Returns (N, C, D', H', W').
    A volume's grids ride along grid_sample's depth axis, so a volume shared by many grids (one
    portrait for a batch of frames, or for every keypoint's motion) is read in place by one call
    instead of being copied once per grid: less memory traffic, and the volume stays in cache.
    """
    volumes, channels = volume.shape[:2]
    n, depth, height, width, _ = grid.shape
    if n % volumes:
        raise ValueError(f"{n} grids do not split evenly over {volumes} volumes")
    per_volume = n // volumes
    if per_volume == 1:
        return grid_sample_3d(volume, grid)
    stacked = grid_sample_3d(volume, grid.reshape(volumes, per_volume * depth, height, width, 3))
    return stacked.view(volumes, channels, per_volume, depth, height, width).transpose(1, 2).reshape(
        n, channels, depth, height, width)


def grid_sample_3d_via_2d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    n, c, d, h, w = volume.shape
    _, d_out, h_out, w_out, _ = grid.shape
    # Atlas: slices stacked along H with one zero row between them, so bilinear taps that fall
    # off a slice read zeros exactly as zero padding would.
    slice_rows = h + 1
    atlas = F.pad(volume, (0, 0, 0, 1)).reshape(n, c, d * slice_rows, w)
    atlas = F.pad(atlas, (0, 0, 1, 0))  # zero row above slice 0 too
    atlas_rows = d * slice_rows + 1

    x, y, z = grid[..., 0], grid[..., 1], grid[..., 2]
    # align_corners=False: pixel index = ((coord + 1) * size - 1) / 2
    z_index = ((z + 1) * d - 1) / 2
    z0 = torch.floor(z_index)
    z_frac = z_index - z0
    y_pix = ((y + 1) * h - 1) / 2

    def sample_slice(slice_index: torch.Tensor) -> torch.Tensor:
        valid = (slice_index >= 0) & (slice_index <= d - 1)
        row = 1 + slice_index.clamp(0, d - 1) * slice_rows + y_pix
        # Rows outside this slice must read zeros: clamp into the separator band.
        row = torch.minimum(torch.maximum(row, 1 + slice_index.clamp(0, d - 1) * slice_rows - 1.0),
                            1 + slice_index.clamp(0, d - 1) * slice_rows + h)
        y_norm = (2 * row + 1) / atlas_rows - 1
        grid_2d = torch.stack([x, y_norm], dim=-1).reshape(n, d_out * h_out, w_out, 2)
        sampled = F.grid_sample(atlas, grid_2d, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        sampled = sampled.view(n, c, d_out, h_out, w_out)
        return sampled * valid.unsqueeze(1).to(sampled.dtype)

    weight = z_frac.unsqueeze(1).to(volume.dtype)
    return sample_slice(z0) * (1 - weight) + sample_slice(z0 + 1) * weight
