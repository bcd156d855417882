"""F, the appearance feature extractor: a source crop -> its 3-D appearance feature volume."""
from __future__ import annotations

import torch
from torch import nn

from ..face_vid2vid import ConvNormAct, PreActResBlock3d
from .config import AppearanceConfig


class AppearanceFeatureExtractor(nn.Module):
    """(B, 3, 256, 256) RGB in [0, 1] -> f_s (B, 32, 16, 64, 64).

    Two 2-D down blocks reach 64x64, a 1x1 conv widens to 512 channels, which are read as
    32 channels x 16 depth slices and refined by 3-D residual blocks.
    """

    def __init__(self, config: AppearanceConfig | None = None):
        super().__init__()
        config = config or AppearanceConfig()
        self.config = config
        width = config.block_expansion
        self.first = ConvNormAct(config.image_channel, width, dims=2)
        channels = [min(config.max_features, width * 2**i) for i in range(config.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            ConvNormAct(channels[i], channels[i + 1], dims=2, pool=True) for i in range(config.num_down_blocks)
        )
        self.second = nn.Conv2d(channels[-1], config.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(config.num_resblocks):
            # '3dr{i}' is the official checkpoint's naming.
            self.resblocks_3d.add_module(f"3dr{i}", PreActResBlock3d(config.reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        batch, _, height, width = x.shape
        volume = x.view(batch, self.config.reshape_channel, self.config.reshape_depth, height, width)
        return self.resblocks_3d(volume)
