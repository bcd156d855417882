"""W, the warping module: dense motion from sparse keypoints, then warp the appearance volume.

Given the source volume f_s and the source / driving keypoints x_s, x_d, it predicts for every
voxel a soft assignment to 21 keypoint motions plus the identity (background), blends them
into a dense backward flow, samples f_s along it, and masks occluded regions.
"""
from __future__ import annotations

import torch
from torch import nn

from ..dense_motion import DenseMotionNetwork
from ..face_vid2vid import ConvNormAct
from ..motion_field import warp_volume
from .config import WarpingConfig


class WarpingNetwork(nn.Module):
    """(f_s (B or 1, 32, 16, 64, 64), x_d (B, 21, 3), x_s (B, 21, 3)) -> warped features (B, 256, 64, 64).

    Output dtype is the weights' dtype (fp32 as loaded; half after `.to(torch.float16)`)."""

    def __init__(self, config: WarpingConfig | None = None):
        super().__init__()
        config = config or WarpingConfig()
        self.config = config
        self.dense_motion_network = DenseMotionNetwork(config.dense_motion, config.num_kp, config.reshape_channel)
        width = config.block_expansion * 2**config.num_down_blocks
        self.third = ConvNormAct(config.max_features, width, dims=2, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def fold_norm(self) -> None:
        """Merge every BatchNorm that follows a conv into it (inference only)."""
        self.dense_motion_network.fold_norm()
        self.third.fold_norm()

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        motion = self.dense_motion_network
        flow, occlusion = motion(motion.compress_source(feature_3d), kp_driving, kp_source)
        warped = warp_volume(feature_3d.float(), flow)  # (B, 32, 16, 64, 64)
        batch, channels, depth, height, width = warped.shape
        compute_dtype = self.fourth.weight.dtype
        warped = warped.reshape(batch, channels * depth, height, width).to(compute_dtype)
        if self.third.conv.weight.is_contiguous(memory_format=torch.channels_last) and not self.third.conv.weight.is_contiguous():
            warped = warped.contiguous(memory_format=torch.channels_last)
        out = self.fourth(self.third(warped))
        return out * occlusion.to(compute_dtype)
