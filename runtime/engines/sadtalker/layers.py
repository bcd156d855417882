"""SadTalker's own building blocks: its SPADE residual block and Wav2Lip's audio encoder (the
face-vid2vid blocks it shares with LivePortrait are in runtime.engines.face_vid2vid).

Attribute names follow the official checkpoint keys (`conv`, `norm`, `conv1`, ...), so a
network's `state_dict()` lines up with its slice of the official file without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fusion import concat_convs


class SPADE(nn.Module):
    """Spatially-adaptive denormalization: instance-norm x, then scale/shift from a label map.

    x: (B, C, H, W); label: (B, L, h, w), nearest-resized to (H, W).
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = 128):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        if label.shape[-2:] != x.shape[-2:]:
            label = F.interpolate(label, size=x.shape[-2:], mode="nearest")
        hidden = self.mlp_shared(label)
        return normalized * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class SPADEResBlock(nn.Module):
    """Residual block with SPADE norms. Spectral norm of the official convs is folded into plain
    conv weights at load time (`runtime.engines.checkpoints.fold_spectral_norm`): no hooks per frame.

    After loading, `fuse()` merges the label convs of the block's two or three SPADE norms into
    one conv and each norm's gamma/beta convs into one: the same arithmetic in fewer, wider
    kernels, and the label is resized once per block instead of once per norm.
    """

    def __init__(self, in_channels: int, out_channels: int, label_channels: int, hidden: int = 128):
        super().__init__()
        middle = min(in_channels, out_channels)
        self.learned_shortcut = in_channels != out_channels
        self.conv_0 = nn.Conv2d(in_channels, middle, 3, padding=1)
        self.conv_1 = nn.Conv2d(middle, out_channels, 3, padding=1)
        self.norm_0 = SPADE(in_channels, label_channels, hidden)
        self.norm_1 = SPADE(middle, label_channels, hidden)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(in_channels, out_channels, 1, bias=False)
            self.norm_s = SPADE(in_channels, label_channels, hidden)
        self.fused: nn.ModuleDict | None = None

    def _norms(self) -> list[SPADE]:
        return [self.norm_0, self.norm_1] + ([self.norm_s] if self.learned_shortcut else [])

    @torch.no_grad()
    def fuse(self) -> None:
        norms = self._norms()
        shared = [n.mlp_shared[0] for n in norms]
        label_conv = concat_convs(shared)
        modulation = nn.ModuleList(concat_convs([n.mlp_gamma, n.mlp_beta]) for n in norms)
        self.fused = nn.ModuleDict({"label": label_conv, "modulation": modulation})
        self.hidden = shared[0].out_channels

    def _modulations(self, label: torch.Tensor, size) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(gamma, beta) of each SPADE norm, from the label resized to `size`."""
        if label.shape[-2:] != size:
            label = F.interpolate(label, size=size, mode="nearest")
        hidden = F.relu(self.fused["label"](label)).split(self.hidden, dim=1)
        out = []
        for h, conv in zip(hidden, self.fused["modulation"]):
            gamma, beta = conv(h).chunk(2, dim=1)
            out.append((gamma, beta))
        return out

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.fused is None:
            shortcut = self.conv_s(self.norm_s(x, label)) if self.learned_shortcut else x
            dx = self.conv_0(F.leaky_relu(self.norm_0(x, label), 0.2))
            dx = self.conv_1(F.leaky_relu(self.norm_1(dx, label), 0.2))
            return shortcut + dx
        mods = self._modulations(label, x.shape[-2:])
        normalized = F.instance_norm(x, eps=1e-5)
        shortcut = x
        if self.learned_shortcut:
            gamma, beta = mods[2]
            shortcut = self.conv_s(normalized * (1 + gamma) + beta)
        gamma, beta = mods[0]
        dx = self.conv_0(F.leaky_relu(normalized * (1 + gamma) + beta, 0.2))
        gamma, beta = mods[1]
        dx = self.conv_1(F.leaky_relu(F.instance_norm(dx, eps=1e-5) * (1 + gamma) + beta, 0.2))
        return shortcut + dx


class Wav2LipConv(nn.Module):
    """conv -> BN (+ input when residual) -> ReLU: the unit of Wav2Lip's audio encoder."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding,
                 residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


def wav2lip_audio_encoder() -> nn.Sequential:
    """Wav2Lip's mel encoder: (N, 1, 80, 16) mel window -> (N, 512, 1, 1) embedding."""
    spec = [
        # in, out, stride, padding, residual
        (1, 32, 1, 1, False), (32, 32, 1, 1, True), (32, 32, 1, 1, True),
        (32, 64, (3, 1), 1, False), (64, 64, 1, 1, True), (64, 64, 1, 1, True),
        (64, 128, 3, 1, False), (128, 128, 1, 1, True), (128, 128, 1, 1, True),
        (128, 256, (3, 2), 1, False), (256, 256, 1, 1, True),
        (256, 512, 1, 0, False),
    ]
    layers = [Wav2LipConv(i, o, 3, s, p, r) for i, o, s, p, r in spec]
    layers.append(Wav2LipConv(512, 512, 1, 1, 0))
    return nn.Sequential(*layers)
