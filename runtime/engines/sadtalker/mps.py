"""Fast paths for what Apple's MPS backend lacks, so no op silently crawls on the CPU.

- 3D grid_sample: see `runtime.engines.motion_field.grid_sample_3d_via_2d` (chosen by `grid_sample_3d`).
- 3D pooling / nearest upsampling: done through their 2D kernels everywhere (`layers.pool_hw`,
  `layers.upsample_hw`).
- Conv3d: missing before macOS 13.2 and limited in size after; `Conv3dAs2d` computes it as one
  2D conv per depth tap over the depth-shifted volume, exactly.
- BatchNorm3d (eval): a per-channel scale and shift (`FrozenBatchNorm3d`), plain arithmetic.

`adapt_for_mps(module)` swaps these in place; the renderer calls it on MPS only. The tests run
the adapted networks on the CPU against the originals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv3dAs2d(nn.Module):
    """A stride-1 Conv3d (B, C, D, H, W) -> (B, C', D', H, W) as a sum of 2D convs, one per
    depth tap: out[:, :, d] = bias + sum_t conv2d(x[:, :, d + t - pad], weight[:, :, t])."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1:
            raise ValueError("Conv3dAs2d supports plain stride-1 convolutions only")
        self.depth_taps = conv.kernel_size[0]
        self.depth_pad = conv.padding[0]
        self.spatial_pad = conv.padding[1:]
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        padded = F.pad(x, (0, 0, 0, 0, self.depth_pad, self.depth_pad))
        depth_out = d + 2 * self.depth_pad - self.depth_taps + 1
        # (B, C, D+2p, H, W) -> (B, D+2p, C, H, W): each depth slice becomes a 2D image
        slices = padded.transpose(1, 2)
        out = None
        for tap in range(self.depth_taps):
            window = slices[:, tap:tap + depth_out].reshape(b * depth_out, c, h, w)
            part = F.conv2d(window, self.weight[:, :, tap], None, padding=self.spatial_pad)
            out = part if out is None else out + part
        out = out.view(b, depth_out, -1, *out.shape[-2:]).transpose(1, 2)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out.contiguous()


class FrozenBatchNorm3d(nn.Module):
    """Eval-mode BatchNorm3d as y = x * scale + shift per channel."""

    def __init__(self, norm: nn.BatchNorm3d):
        super().__init__()
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        self.register_buffer("scale", scale.detach().view(1, -1, 1, 1, 1))
        self.register_buffer("shift", (norm.bias - norm.running_mean * scale).detach().view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def adapt_for_mps(module: nn.Module) -> nn.Module:
    """Replace every Conv3d and BatchNorm3d below `module` (in place); returns `module`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv3d):
            setattr(module, name, Conv3dAs2d(child))
        elif isinstance(child, nn.BatchNorm3d):
            setattr(module, name, FrozenBatchNorm3d(child))
        else:
            adapt_for_mps(child)
    return module
