"""M, the motion extractor: a ConvNeXt-V2 tiny that reads keypoints, pose and expression off a crop."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import MotionConfig


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on channels-last (B, H, W, C): rescales each channel by its relative L2 energy."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        relative = energy / (energy.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> 4x MLP with GELU and GRN, residual. Shape preserved."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # -> (B, H, W, C) for the per-pixel MLP
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


@dataclass
class MotionOutput:
    """Raw head outputs for a batch B (pose still as bin logits)."""

    kp: torch.Tensor  # (B, 63) canonical keypoints x_c
    pitch: torch.Tensor  # (B, 66) bin logits
    yaw: torch.Tensor  # (B, 66)
    roll: torch.Tensor  # (B, 66)
    t: torch.Tensor  # (B, 3) translation
    exp: torch.Tensor  # (B, 63) expression deformation
    scale: torch.Tensor  # (B, 1)


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 backbone with LivePortrait's regression heads."""

    def __init__(self, config: MotionConfig):
        super().__init__()
        dims = config.dims
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4),
                                                    ChannelsFirstLayerNorm(dims[0])))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(ChannelsFirstLayerNorm(dims[i]),
                                                        nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dims[i]) for _ in range(config.depths[i])]) for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        width, kp3 = dims[-1], 3 * config.num_kp
        self.fc_kp = nn.Linear(width, kp3)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, config.num_bins)
        self.fc_yaw = nn.Linear(width, config.num_bins)
        self.fc_roll = nn.Linear(width, config.num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, kp3)

    def forward(self, image: torch.Tensor) -> MotionOutput:
        x = image
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        pooled = self.norm(x.mean(dim=(-2, -1)))  # global average pool -> (B, 768)
        return MotionOutput(kp=self.fc_kp(pooled), pitch=self.fc_pitch(pooled), yaw=self.fc_yaw(pooled),
                            roll=self.fc_roll(pooled), t=self.fc_t(pooled), exp=self.fc_exp(pooled),
                            scale=self.fc_scale(pooled))


class MotionExtractor(nn.Module):
    """(B, 3, 256, 256) RGB in [0, 1] -> MotionOutput."""

    def __init__(self, config: MotionConfig | None = None):
        super().__init__()
        config = config or MotionConfig()
        self.config = config
        self.detector = ConvNeXtV2(config)  # 'detector.' is the official checkpoint's prefix

    def forward(self, image: torch.Tensor) -> MotionOutput:
        return self.detector(image)
