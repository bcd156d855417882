"""Canonical keypoint detector: source image -> 15 implicit 3D keypoints.

A 2D encoder lifts the image into a (32, 16, 64, 64) volume; each keypoint is the soft-argmax
(expected coordinate under a temperature softmax) of its own heatmap in that volume.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .config import KeypointDetectorConfig
from ..motion_field import identity_grid_3d
from ..face_vid2vid import ConvNormAct, UpBlock3d


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then integer-stride subsampling (band-limited resize by `scale`)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad = size // 2
        self.stride = int(1 / scale)
        self.channels = channels
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        kernel_1d = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = torch.outer(kernel_1d, kernel_1d)
        kernel = (kernel / kernel.sum()).expand(channels, 1, size, size).contiguous()
        # Stored in the official checkpoint as `down.weight`, so kept as a persistent buffer.
        self.register_buffer("weight", kernel)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image, (self.pad,) * 4)
        # Strided depthwise conv == full-resolution blur followed by [::stride] subsampling.
        return F.conv2d(padded, self.weight.to(image.dtype), stride=self.stride, groups=self.channels)


class KeypointHourglass(nn.Module):
    """2D down path -> 1x1 conv to (C * depth) channels -> reshape to 3D -> 3D up path."""

    def __init__(self, cfg: KeypointDetectorConfig):
        super().__init__()
        width = lambda i: min(cfg.max_features, cfg.block_expansion * 2**i)  # noqa: E731
        self.down_blocks = nn.Sequential()
        for i in range(cfg.num_blocks):
            in_ch = cfg.image_channels if i == 0 else width(i)
            self.down_blocks.add_module(f"down{i}", ConvNormAct(in_ch, width(i + 1), dims=2, pool=True))
        self.conv = nn.Conv2d(width(cfg.num_blocks), cfg.reshape_channels, 1)
        self.up_blocks = nn.Sequential()
        for i in range(cfg.num_blocks):
            self.up_blocks.add_module(
                f"up{i}", UpBlock3d(width(cfg.num_blocks - i), width(cfg.num_blocks - i - 1)))
        self.reshape_depth = cfg.reshape_depth
        self.out_channels = width(0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) -> volume (B, 32, 16, H, W)."""
        out = self.conv(self.down_blocks(image))
        b, c, h, w = out.shape
        return self.up_blocks(out.view(b, c // self.reshape_depth, self.reshape_depth, h, w))


class KeypointDetector(nn.Module):
    def __init__(self, cfg: KeypointDetectorConfig = KeypointDetectorConfig()):
        super().__init__()
        self.predictor = KeypointHourglass(cfg)
        self.kp = nn.Conv3d(self.predictor.out_channels, cfg.num_keypoints, 3, padding=1)
        self.down = AntiAliasDownsample(cfg.image_channels, cfg.scale_factor)
        self.temperature = cfg.temperature

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) in [0, 1] -> canonical keypoints (B, 15, 3) in [-1, 1] (x, y, z)."""
        logits = self.kp(self.predictor(self.down(image)))
        b, k, d, h, w = logits.shape
        heatmap = F.softmax(logits.reshape(b, k, -1).float() / self.temperature, dim=2)
        grid = identity_grid_3d(d, h, w, image.device, torch.float32).view(1, 1, -1, 3)
        return (heatmap.unsqueeze(-1) * grid).sum(dim=2)
