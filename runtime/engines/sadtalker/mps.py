"""Fast paths for what Apple's MPS backend lacks, so no op silently crawls on the CPU.

- 3D grid_sample: see `runtime.engines.motion_field.grid_sample_3d_via_2d` (chosen by `grid_sample_3d`).
- 3D pooling / nearest upsampling: done through their 2D kernels on MPS
  (`runtime.engines.face_vid2vid.pool_hw`, `upsample_hw`).
- Conv3d: missing before macOS 13.2 and limited in size after; computed as one 2D conv over the
  depth slices with a block of outputs per depth tap, then the shifted taps summed
  (`runtime.engines.conv_rewrites.RewrittenConv(depth_slices=True)`, which LivePortrait uses too).
- BatchNorm3d (eval): a per-channel scale and shift (`FrozenBatchNorm3d`), plain arithmetic.

`adapt_for_mps(module)` swaps these in place; the renderer calls it on MPS only. The tests run
the adapted networks on the CPU against the originals.
"""

from __future__ import annotations

import torch
from torch import nn

from ..conv_rewrites import RewrittenConv


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
            setattr(module, name, RewrittenConv(child, depth_slices=True).to(child.weight.device, child.weight.dtype))
        elif isinstance(child, nn.BatchNorm3d):
            setattr(module, name, FrozenBatchNorm3d(child))
        else:
            adapt_for_mps(child)
    return module
