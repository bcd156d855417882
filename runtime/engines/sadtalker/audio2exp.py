"""Audio-to-expression net: one mel window per frame -> 64 BFM expression coefficients."""

from __future__ import annotations

import torch
from torch import nn

from .layers import wav2lip_audio_encoder


class Audio2Exp(nn.Module):
    """Wav2Lip audio encoder + a linear map conditioned on the source expression and blink.

    Every frame is independent, so a whole utterance runs as one batch.
    """

    def __init__(self):
        super().__init__()
        self.audio_encoder = wav2lip_audio_encoder()
        self.mapping1 = nn.Linear(512 + 64 + 1, 64)

    def forward(self, mels: torch.Tensor, source_exp: torch.Tensor,
                blink: torch.Tensor) -> torch.Tensor:
        """mels (N, 1, 80, 16), source_exp (N, 64), blink (N, 1) eye-closure ratio 0..1
        -> expression coefficients (N, 64)."""
        audio = self.audio_encoder(mels).flatten(1)
        return self.mapping1(torch.cat([audio, source_exp, blink], dim=1))
