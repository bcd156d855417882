"""Trilinear 3-D grid sampling that runs on every device.

torch's `F.grid_sample` on 5-D inputs has no mps kernel; there we gather the eight corners
ourselves. Semantics equal `F.grid_sample(volume, grid, mode="bilinear",
padding_mode="zeros", align_corners=False)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """volume (N, C, D, H, W), grid (N, d, h, w, 3) of (x, y, z) in [-1, 1] -> (N, C, d, h, w)."""
    if volume.device.type != "mps":
        return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _grid_sample_3d_gather(volume, grid)


def _grid_sample_3d_gather(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    n, c, depth, height, width = volume.shape
    out_shape = grid.shape[1:4]
    grid = grid.reshape(n, -1, 3).to(volume.dtype)
    # align_corners=False: -1 and 1 are the outer edges of the border voxels.
    x = ((grid[..., 0] + 1) * width - 1) / 2
    y = ((grid[..., 1] + 1) * height - 1) / 2
    z = ((grid[..., 2] + 1) * depth - 1) / 2
    x0, y0, z0 = x.floor(), y.floor(), z.floor()
    flat = volume.reshape(n, c, -1)
    out = volume.new_zeros(n, c, grid.shape[1])
    for dz in (0, 1):
        zi = z0 + dz
        wz = 1 - (z - zi).abs()
        for dy in (0, 1):
            yi = y0 + dy
            wy = 1 - (y - yi).abs()
            for dx in (0, 1):
                xi = x0 + dx
                wx = 1 - (x - xi).abs()
                inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height) & (zi >= 0) & (zi < depth)
                index = (zi.clamp(0, depth - 1) * height + yi.clamp(0, height - 1)) * width + xi.clamp(0, width - 1)
                values = torch.gather(flat, 2, index.long().unsqueeze(1).expand(n, c, -1))
                out += values * (wx * wy * wz * inside).unsqueeze(1)
    return out.reshape(n, c, *out_shape)
