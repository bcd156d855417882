"""The face-vid2vid building blocks both engines' networks are made of (LivePortrait's W, F and
SadTalker's face renderer descend from the same design): conv-norm-activation units in 2-D and 3-D,
pre-activation 3-D residual blocks, the 3-D hourglass of the dense-motion networks (its config is
in dense_motion_config.py, which needs no torch).

Attribute names follow the official checkpoints' keys (`conv`, `norm`, `encoder.down_blocks`...),
which the two upstreams share, so the state dicts load strictly without renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv_rewrites import RewrittenConv, SplitOutputsConv

DECODER_SPLIT = 128  # see Hourglass.rewrite_3d_convs(split_decoder_conv=True)


def pool_hw(volume: torch.Tensor) -> torch.Tensor:
    """2x2 average pool of H and W of (B, C, D, H, W), depth kept. Off CUDA through the 2-D kernel
    over (B, C * D, H, W), the same numbers: MPS lacks 3-D pooling, and the CPU's has no bf16.
    On CUDA the 3-D kernel, which reads channels-last-3d volumes without a copy."""
    if volume.device.type == "cuda":
        return F.avg_pool3d(volume, (1, 2, 2))
    b, c, d, h, w = volume.shape
    return F.avg_pool2d(volume.reshape(b, c * d, h, w), 2).view(b, c, d, h // 2, w // 2)


def upsample_hw(volume: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsample of H and W of (B, C, D, H, W), depth kept (2-D kernel off CUDA, as pool_hw)."""
    if volume.device.type == "cuda":
        return F.interpolate(volume, scale_factor=(1, 2, 2))
    b, c, d, h, w = volume.shape
    return F.interpolate(volume.reshape(b, c * d, h, w), scale_factor=2.0, mode="nearest").view(b, c, d, 2 * h, 2 * w)


def fold_batchnorm_into_conv(conv: nn.Module, norm: nn.Module) -> None:
    """Fold an eval-mode BatchNorm that directly follows `conv` into the conv's weight and bias.

    After this the norm must be skipped: y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta
    becomes one conv with w' = w * k, b' = (b - mean) * k + beta, k = gamma / sqrt(var + eps).
    """
    with torch.no_grad():
        k = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        conv.weight.mul_(k.reshape(shape))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        new_bias = (bias - norm.running_mean) * k + norm.bias
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)


class ConvNormAct(nn.Module):
    """conv -> BatchNorm -> (leaky) ReLU, optionally 2x average-pooled; 2-D or 3-D.

    `fold_norm()` merges the BatchNorm into the conv for inference (the norm is then skipped).
    """

    def __init__(self, in_channels: int, out_channels: int, *, dims: int, kernel_size: int = 3,
                 padding: int = 1, leaky: bool = False, pool: bool = False):
        super().__init__()
        conv_cls, norm_cls = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv_cls(in_channels, out_channels, kernel_size=kernel_size, padding=padding)
        self.norm = norm_cls(out_channels, affine=True)
        self.leaky = leaky
        self.pool_kernel = None if not pool else ((2, 2) if dims == 2 else (1, 2, 2))
        self.norm_folded = False

    def fold_norm(self) -> None:
        if not self.norm_folded:  # folding twice would apply the norm twice
            fold_batchnorm_into_conv(self.conv, self.norm)
            self.norm_folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if not self.norm_folded:
            x = self.norm(x)
        x = F.leaky_relu(x) if self.leaky else F.relu(x)
        if self.pool_kernel is not None:
            x = F.avg_pool2d(x, self.pool_kernel) if len(self.pool_kernel) == 2 else pool_hw(x)
        return x


class PreActResBlock3d(nn.Module):
    """x + conv2(relu(bn2(conv1(relu(bn1(x)))))), 3x3x3 convs; shape preserved."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(F.relu(self.norm1(x)))
        residual = self.conv2(F.relu(self.norm2(residual)))
        return x + residual


class UpBlock3d(nn.Module):
    """Nearest 2x upsampling in h and w (not depth), then conv -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels, affine=True)
        self.norm_folded = False
        self.rewritten: RewrittenConv | None = None  # upsample + conv at low resolution, see rewrite_3d_convs()

    def fold_norm(self) -> None:
        if not self.norm_folded:
            fold_batchnorm_into_conv(self.conv, self.norm)
            self.norm_folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rewritten is not None:
            x = self.rewritten(x)  # upsample + conv computed at the input's resolution
        else:
            x = self.conv(upsample_hw(x))
        if not self.norm_folded:
            x = self.norm(x)
        return F.relu(x)


class HourglassEncoder(nn.Module):
    """num_blocks 3-D down blocks (h, w halved each); returns every level, input first."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        channels = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(
            ConvNormAct(channels[i], channels[i + 1], dims=3, pool=True) for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [x]
        for block in self.down_blocks:
            levels.append(block(levels[-1]))
        return levels


class HourglassDecoder(nn.Module):
    """Mirrors the encoder with skip concatenations; ends with conv -> BatchNorm -> ReLU.

    Output channels: block_expansion + in_features (the input is the last skip)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            width = min(max_features, block_expansion * 2 ** (i + 1))
            in_channels = width if i == num_blocks - 1 else 2 * width
            blocks.append(UpBlock3d(in_channels, min(max_features, block_expansion * 2**i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)
        self.norm_folded = False
        self.rewritten: RewrittenConv | SplitOutputsConv | None = None  # see rewrite_3d_convs()

    def fold_norm(self) -> None:
        for block in self.up_blocks:
            block.fold_norm()
        if not self.norm_folded:
            fold_batchnorm_into_conv(self.conv, self.norm)
            self.norm_folded = True

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        skips = list(levels)
        x = skips.pop()
        for block in self.up_blocks:
            x = torch.cat([block(x), skips.pop()], dim=1)
        x = (self.rewritten or self.conv)(x)
        if not self.norm_folded:
            x = self.norm(x)
        return F.relu(x)


class Hourglass(nn.Module):
    """3-D U-Net: (B, in_features, D, H, W) -> (B, block_expansion + in_features, D, H, W)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def fold_norm(self) -> None:
        for block in self.encoder.down_blocks:
            block.fold_norm()
        self.decoder.fold_norm()

    def rewrite_3d_convs(self, low_res_upsample: bool, split_decoder_conv: bool = False) -> None:
        """Exact speed rewrites of the convs (conv_rewrites), after fold_norm() and any channel
        padding: low_res_upsample computes each up block's conv of a 2x-upsampled input at low
        resolution; split_decoder_conv computes the decoder's last conv (144 outputs once aligned)
        as 128 outputs plus a depth-sliced rest (SplitOutputsConv)."""
        if not all(block.norm_folded for block in [*self.encoder.down_blocks, *self.decoder.up_blocks, self.decoder]):
            raise RuntimeError("rewrite_3d_convs() needs fold_norm() first (a rewrite copies the conv's weights)")
        if low_res_upsample:
            for block in self.decoder.up_blocks:
                block.rewritten = RewrittenConv(block.conv, upsample=2)
        if split_decoder_conv and self.decoder.conv.out_channels > DECODER_SPLIT:
            self.decoder.rewritten = SplitOutputsConv(self.decoder.conv, DECODER_SPLIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
