"""Occlusion-aware SPADE generator: source image + source/driving keypoints -> frame.

The source image is encoded once into a 3D feature volume (`encode_source`); each frame warps
that volume by the dense motion, masks occluded regions and decodes with a SPADE decoder
(`render`). Splitting the two is what lets us batch frames against one cached source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..dense_motion import DenseMotionNetwork
from ..motion_field import warp_volume
from .config import GeneratorConfig
from ..face_vid2vid import ConvNormAct, PreActResBlock3d
from .layers import SPADEResBlock


MASK_FLOOR = 1e-3  # dense-motion assignment weights below this are zeroed (upstream does the same)


class SPADEDecoder(nn.Module):
    """(B, 256, h, w) warped features -> (B, 3, 4h, 4w) image in [0, 1]."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        ic, oc, hidden = cfg.decoder_in_channels, cfg.decoder_out_channels, cfg.spade_hidden
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResBlock(2 * ic, 2 * ic, ic, hidden))
        self.up_0 = SPADEResBlock(2 * ic, ic, ic, hidden)
        self.up_1 = SPADEResBlock(ic, oc, ic, hidden)
        self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)

    def blocks(self) -> list[SPADEResBlock]:
        return [getattr(self, f"G_middle_{i}") for i in range(6)] + [self.up_0, self.up_1]

    def fuse(self) -> None:
        """Fuse each block's SPADE convs (see SPADEResBlock.fuse); call after loading weights."""
        for block in self.blocks():
            block.fuse()

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2.0), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2.0), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


@dataclass
class SourceEncoding:
    """Per-portrait tensors the renderer reuses for every frame."""

    feature_3d: torch.Tensor  # (1, 32, 16, S/4, S/4)
    compressed: torch.Tensor  # (1, 4, 16, S/4, S/4) fp32, input of the dense motion warps


class OcclusionAwareSPADEGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(cfg.dense_motion, cfg.num_keypoints, cfg.feature_channels,
                                                       mask_floor=MASK_FLOOR)
        self.first = ConvNormAct(cfg.image_channels, cfg.block_expansion, dims=2)
        self.down_blocks = nn.ModuleList(
            ConvNormAct(cfg.block_expansion * 2**i, cfg.block_expansion * 2 ** (i + 1), dims=2, pool=True)
            for i in range(cfg.num_down_blocks))
        encoded = cfg.block_expansion * 2**cfg.num_down_blocks
        self.second = nn.Conv2d(encoded, cfg.max_features, 1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", PreActResBlock3d(cfg.reshape_channels))
        self.third = ConvNormAct(cfg.max_features, encoded, dims=2, leaky=True)
        self.fourth = nn.Conv2d(encoded, encoded, 1)
        self.decoder = SPADEDecoder(cfg)
        self.reshape_channels = cfg.reshape_channels
        self.reshape_depth = cfg.reshape_depth
        self.conv_dtype: torch.dtype | None = None  # set by the renderer for a mixed-precision decoder

    def encode_source(self, source_image: torch.Tensor) -> SourceEncoding:
        """source_image (1, 3, S, S) in [0, 1] -> cached feature volumes."""
        out = self.second(self.down_blocks[1](self.down_blocks[0](self.first(source_image))))
        b, _, h, w = out.shape
        volume = self.resblocks_3d(out.view(b, self.reshape_channels, self.reshape_depth, h, w))
        return SourceEncoding(volume, self.dense_motion_network.compress_source(volume))

    def render(self, source: SourceEncoding, kp_source: torch.Tensor,
               kp_driving: torch.Tensor) -> torch.Tensor:
        """kp_source, kp_driving (B, 15, 3) -> frames (B, 3, S, S) in [0, 1]."""
        deformation, occlusion = self.dense_motion_network(source.compressed, kp_driving, kp_source)
        warped = warp_volume(source.feature_3d, deformation.to(source.feature_3d.dtype))
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w)))
        out = out * occlusion.to(out.dtype)
        if self.conv_dtype is not None and self.conv_dtype != out.dtype:
            return self.decoder(out.to(self.conv_dtype)).to(out.dtype)
        return self.decoder(out)

    def forward(self, source_image: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> torch.Tensor:
        return self.render(self.encode_source(source_image), kp_source, kp_driving)
