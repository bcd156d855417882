"""G, the SPADE decoder: warped features -> the 512x512 animated crop.

The official checkpoint stores its residual convs spectrally normalized (`weight_orig`,
`weight_u`, `weight_v`); `runtime.engines.checkpoints.fold_spectral_norm` turns them into plain
weights at load time, so this module holds ordinary convs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fusion import concat_convs
from .config import SpadeConfig
from ..conv_rewrites import RewrittenConv

SPADE_HIDDEN = 128
LEAKY_SLOPE = 0.2
INSTANCE_NORM_EPS = 1e-5
NARROW_SPADE = 64  # SPADEs this wide or narrower get one conv for gamma and beta (see fuse)


def instance_normalize(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free instance norm over (H, W), statistics in fp32, result in x's dtype and memory
    format (F.instance_norm would return channels-last inputs as NCHW, costing a transpose per call)."""
    var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
    return (x - mean.to(x.dtype)) * torch.rsqrt(var + INSTANCE_NORM_EPS).to(x.dtype)


class SPADE(nn.Module):
    """Spatially-adaptive norm: instance_norm(x) * (1 + gamma(seg)) + beta(seg).

    x (B, C, H, W); seg (B, S, h, w) is resized (nearest) to H x W first.
    """

    def __init__(self, channels: int, label_channels: int):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, SPADE_HIDDEN, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, channels, kernel_size=3, padding=1)

    def hidden(self, seg: torch.Tensor) -> torch.Tensor:
        return self.mlp_shared(seg)

    def modulate(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return instance_normalize(x) * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        return self.modulate(x, self.hidden(seg))


class SPADEResnetBlock(nn.Module):
    """x_s + conv_1(lrelu(SPADE_1(conv_0(lrelu(SPADE_0(x)))))); x_s is x or conv_s(SPADE_s(x)) when widths differ."""

    def __init__(self, fin: int, fout: int, label_channels: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_channels)
        self.norm_1 = SPADE(fmiddle, label_channels)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_channels)

    def spades(self) -> list[SPADE]:
        return [self.norm_0, self.norm_1] + ([self.norm_s] if self.learned_shortcut else [])

    def forward_with_hidden(self, x: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        """Same as forward, with each SPADE's hidden map (B, 128, H, W) already computed."""
        shortcut = self.conv_s(self.norm_s.modulate(x, hidden[2])) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0.modulate(x, hidden[0]), LEAKY_SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1.modulate(dx, hidden[1]), LEAKY_SLOPE))
        return shortcut + dx

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        return self.forward_with_hidden(x, [spade.hidden(seg) for spade in self.spades()])


def _compose_1x1_after(outer: nn.Conv2d, inner: nn.Conv2d) -> nn.Conv2d:
    """One conv equal to outer(inner(x)) for a bias-free 1x1 `outer`: weight W_o @ W_i, bias W_o @ b_i."""
    mixing = outer.weight[:, :, 0, 0].double()
    composed = nn.Conv2d(inner.in_channels, outer.out_channels, kernel_size=inner.kernel_size,
                         padding=inner.padding).to(inner.weight.device, inner.weight.dtype)
    with torch.no_grad():
        composed.weight.copy_(torch.einsum("oc,chyx->ohyx", mixing, inner.weight.double()))
        composed.bias.copy_(mixing @ inner.bias.double())
    return composed


def _split_channels(hidden: torch.Tensor) -> list[torch.Tensor]:
    """Per-SPADE hidden maps from the shared conv's output, each dense in the input's memory format
    (a channel slice of a channels-last tensor is strided, which slows the convs reading it)."""
    memory_format = torch.channels_last if hidden.is_contiguous(memory_format=torch.channels_last) \
        and not hidden.is_contiguous() else torch.contiguous_format
    return [part.contiguous(memory_format=memory_format) for part in hidden.split(SPADE_HIDDEN, dim=1)]


class SPADEDecoder(nn.Module):
    """(B, 256, 64, 64) warped features -> (B, 3, 512, 512) RGB in [0, 1].

    fc widens to 512; six SPADE residual blocks at 64x64; two upsampling blocks to 256x256;
    a 3x3 conv to 12 channels and a pixel shuffle give 512x512.
    """

    def __init__(self, config: SpadeConfig | None = None):
        super().__init__()
        config = config or SpadeConfig()
        self.config = config
        width = config.input_channels  # 256, also the SPADE label channels
        self.fc = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * width, 2 * width, width))
        self.up_0 = SPADEResnetBlock(2 * width, width, width)
        self.up_1 = SPADEResnetBlock(width, config.out_channels, width)
        # '.0' is the official key of this conv: it sits first in a (conv, pixel shuffle) pair.
        self.conv_img = nn.Sequential(nn.Conv2d(config.out_channels, 3 * config.upscale**2, kernel_size=3, padding=1),
                                      nn.PixelShuffle(config.upscale))
        self._fused: dict[str, nn.Module] | None = None
        self.low_res_upsample = False

    def middle_blocks(self) -> list[SPADEResnetBlock]:
        return [getattr(self, f"G_middle_{i}") for i in range(6)]

    def fuse(self, low_res_upsample: bool = False) -> None:
        """Inference fusion: every SPADE that reads the segmap at one resolution shares one conv
        for its hidden layer (one wide GEMM instead of up to twelve narrow ones). Exact up to rounding.

        low_res_upsample: the up blocks' hidden convs read the 64x64 segmap nearest-upsampled to
        128 and 256; compute them from the 64x64 map instead (conv_rewrites), 44% and 25% of the FLOPs."""
        if self._fused is not None:
            return
        middle_spades = [s for block in self.middle_blocks() for s in block.spades()]
        up_0 = concat_convs([s.mlp_shared[0] for s in self.up_0.spades()])
        up_1 = concat_convs([s.mlp_shared[0] for s in self.up_1.spades()])
        self.low_res_upsample = low_res_upsample
        fused = nn.ModuleDict({
            "middle_shared": concat_convs([s.mlp_shared[0] for s in middle_spades]),
            "up_0_shared": RewrittenConv(up_0, upsample=2) if low_res_upsample else up_0,
            "up_1_shared": RewrittenConv(up_1, upsample=4) if low_res_upsample else up_1,
            "up_0_shortcut_beta": _compose_1x1_after(self.up_0.conv_s, self.up_0.norm_s.mlp_beta),
            "up_1_shortcut_beta": _compose_1x1_after(self.up_1.conv_s, self.up_1.norm_s.mlp_beta),
            "conv_img": RewrittenConv(self.conv_img[0], align_outputs=16),  # 12 outputs -> 16: cuDNN's Hopper kernels
        })
        all_spades = middle_spades + self.up_0.spades() + self.up_1.spades()
        # gamma and beta stay two convs where they are wide: chunks of one fused output would be
        # strided views in channels-last memory, and the elementwise kernels reading them fall off
        # the fast path. A narrow pair (up_1's 64-channel SPADE) runs one GEMM 128 wide instead.
        for index, spade in enumerate(all_spades):
            if spade.mlp_gamma.out_channels <= NARROW_SPADE:
                fused[f"gamma_beta_{index}"] = concat_convs([spade.mlp_gamma, spade.mlp_beta])
        self._fused = fused
        self._fused_spades = all_spades

    def _fused_modulate(self, index: int, normalized: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        merged = f"gamma_beta_{index}"
        if merged in self._fused:
            gamma, beta = self._fused[merged](hidden).chunk(2, dim=1)
        else:
            spade = self._fused_spades[index]
            gamma, beta = spade.mlp_gamma(hidden), spade.mlp_beta(hidden)
        return torch.addcmul(normalized + beta, normalized, gamma)

    def _fused_block(self, block: SPADEResnetBlock, x: torch.Tensor, hidden: list[torch.Tensor],
                     first_index: int, shortcut_beta: nn.Module | None = None, upsample: int = 1) -> torch.Tensor:
        """upsample: x comes at 1/upsample of the block's resolution and is nearest-upsampled here,
        after the instance norm (an upsampled map's mean and variance are the map's own). Then the
        upsample fuses into the modulation's reads instead of materializing the large map and
        reading it twice more for the statistics (1 GB a batch of 32 before up_1)."""
        normalized = instance_normalize(x)
        if upsample > 1:
            normalized = F.interpolate(normalized, scale_factor=upsample, mode="nearest")
        if block.learned_shortcut:
            # conv_s(n * (1 + gamma) + beta) = conv_s(n * (1 + gamma)) + (conv_s o mlp_beta)(hidden):
            # conv_s is 1x1 and linear, so its product with mlp_beta is one conv with fewer outputs.
            gamma = self._fused_spades[first_index + 2].mlp_gamma(hidden[2])
            shortcut = block.conv_s(torch.addcmul(normalized, normalized, gamma)) + shortcut_beta(hidden[2])
        else:
            shortcut = x if upsample == 1 else F.interpolate(x, scale_factor=upsample, mode="nearest")
        dx = block.conv_0(F.leaky_relu(self._fused_modulate(first_index, normalized, hidden[0]), LEAKY_SLOPE))
        dx = block.conv_1(F.leaky_relu(self._fused_modulate(first_index + 1, instance_normalize(dx), hidden[1]),
                                       LEAKY_SLOPE))
        return shortcut + dx

    def _forward_fused(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)
        hidden = _split_channels(F.relu(self._fused["middle_shared"](seg)))
        index = 0
        for block in self.middle_blocks():
            x = self._fused_block(block, x, list(hidden[index:index + 2]), index)
            index += 2
        for name, block in (("up_0", self.up_0), ("up_1", self.up_1)):
            size = (2 * x.shape[2], 2 * x.shape[3])
            seg_in = seg if self.low_res_upsample else F.interpolate(seg, size=size, mode="nearest")
            block_hidden = _split_channels(F.relu(self._fused[f"{name}_shared"](seg_in)))
            x = self._fused_block(block, x, list(block_hidden), index, self._fused[f"{name}_shortcut_beta"], upsample=2)
            index += 3
        image = F.pixel_shuffle(self._fused["conv_img"](F.leaky_relu(x, LEAKY_SLOPE)), self.config.upscale)
        return torch.sigmoid(image)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if self._fused is not None:
            return self._forward_fused(feature)
        seg = feature
        x = self.fc(feature)
        for block in self.middle_blocks():
            x = block(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, LEAKY_SLOPE)))
