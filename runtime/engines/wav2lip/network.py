"""The Wav2Lip generator, with upstream's parameter names so the official checkpoints load strictly.

Input: a mel window (B, 1, 80, 16) and a face (B, 6, 96, 96) = [face with its lower half blanked,
reference face], BGR in [0, 1]. Output: the face (B, 3, 96, 96), BGR in [0, 1], its mouth following
the mel window. A U-Net: the audio embedding (B, 512, 1, 1) is decoded, concatenated at each scale
with the face encoder's features.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """conv -> batch norm (-> + input) -> ReLU; upstream's `Conv2d` (keys conv_block.0/1)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return torch.relu(out + x if self.residual else out)


class UpConvBlock(nn.Module):
    """transposed conv -> batch norm -> ReLU; upstream's `Conv2dTranspose`."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv_block(x))


def _down(cin: int, cout: int, residuals: int, stride=2) -> list[nn.Module]:
    """A strided 3x3 conv, then `residuals` residual 3x3 convs at cout channels."""
    return [ConvBlock(cin, cout, 3, stride, 1)] + [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(residuals)]


def _up(cin: int, cout: int, residuals: int) -> nn.Sequential:
    """A 2x transposed conv, then `residuals` residual 3x3 convs at cout channels."""
    layers = [UpConvBlock(cin, cout, 3, 2, 1, output_padding=1)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(residuals)]
    return nn.Sequential(*layers)


class Wav2Lip(nn.Module):
    def __init__(self):
        super().__init__()
        # 96 -> 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1 px; channels 16 .. 512
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),
            nn.Sequential(*_down(16, 32, 2)),
            nn.Sequential(*_down(32, 64, 3)),
            nn.Sequential(*_down(64, 128, 2)),
            nn.Sequential(*_down(128, 256, 2)),
            nn.Sequential(*_down(256, 512, 1)),
            nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),
        ])
        # mel (80, 16) -> (27, 16) -> (9, 6) -> (3, 3) -> (1, 1)
        self.audio_encoder = nn.Sequential(
            *_down(1, 32, 2, stride=1),
            *_down(32, 64, 2, stride=(3, 1)),
            *_down(64, 128, 2, stride=3),
            *_down(128, 256, 1, stride=(3, 2)),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        # Each decoder block's input = previous output + the encoder's features at that scale.
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),
            nn.Sequential(UpConvBlock(1024, 512, 3, 1, 0), ConvBlock(512, 512, 3, 1, 1, residual=True)),
            _up(1024, 512, 2),
            _up(768, 384, 2),
            _up(512, 256, 2),
            _up(320, 128, 2),
            _up(160, 64, 2),
        ])
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel_windows: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """mel_windows (B, 1, 80, 16), faces (B, 6, 96, 96) -> (B, 3, 96, 96) in [0, 1]."""
        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mel_windows)
        for block, skip in zip(self.face_decoder_blocks, reversed(skips)):
            x = torch.cat((block(x), skip), dim=1)
        return self.output_block(x)
