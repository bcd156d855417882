"""Hyperparameters of the LivePortrait human-portrait networks (upstream's `src/config/models.yaml`).

They fix every tensor shape of the official checkpoints, so they are constants, not settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..dense_motion_config import DenseMotionConfig

NUM_KEYPOINTS = 21  # implicit 3-D keypoints per face
NUM_POSE_BINS = 66  # head-pose classifier bins, 3 degrees each, centred on -97.5 + 3 * i
FEATURE_VOLUME = (16, 64, 64)  # (D, H, W) of F's appearance volume for its 256x256 input: W works at this size


@dataclass(frozen=True)
class AppearanceConfig:
    """F: 256x256 RGB -> 32x16x64x64 appearance feature volume."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


@dataclass(frozen=True)
class MotionConfig:
    """M: ConvNeXt-V2 tiny -> canonical keypoints, pose bins, translation, expression, scale."""

    num_kp: int = NUM_KEYPOINTS
    num_bins: int = NUM_POSE_BINS
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)


@dataclass(frozen=True)
class WarpingConfig:
    """W: feature volume + source/driving keypoints -> 256x64x64 warped feature map."""

    num_kp: int = NUM_KEYPOINTS
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass(frozen=True)
class SpadeConfig:
    """G: 256x64x64 warped features -> 3x512x512 image in [0, 1]."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64

    @property
    def input_channels(self) -> int:
        return min(self.max_features, self.block_expansion * 2**self.num_down_blocks)


@dataclass(frozen=True)
class MlpConfig:
    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


# S: stitching (x_s, x_d) -> 63 keypoint deltas + (tx, ty); lip (x_s, [c_s, c_d]) -> 63; eye (x_s, [l, r, c_d]) -> 63.
STITCHING_MLP = MlpConfig(input_size=126, hidden_sizes=(128, 128, 64), output_size=65)
LIP_MLP = MlpConfig(input_size=65, hidden_sizes=(128, 128, 64), output_size=63)
EYE_MLP = MlpConfig(input_size=66, hidden_sizes=(256, 256, 128, 128, 64), output_size=63)
