"""Mapping net: a window of 3DMM coefficients -> head pose, translation, keypoint deltas."""

from __future__ import annotations

import torch
from torch import nn

from .config import MappingConfig


class MappingNet(nn.Module):
    """Temporal conv encoder over a (B, coeff, 27) coefficient window.

    Returns yaw/pitch/roll as (B, 66) bin logits, translation (B, 3) and expression deltas for
    every keypoint (B, 15 * 3).
    """

    def __init__(self, cfg: MappingConfig):
        super().__init__()
        self.num_layers = cfg.num_layers
        c = cfg.descriptor_channels
        self.first = nn.Sequential(nn.Conv1d(cfg.coeff_channels, c, kernel_size=7))
        for i in range(cfg.num_layers):
            setattr(self, f"encoder{i}",
                    nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(c, c, kernel_size=3, dilation=3)))
        self.fc_roll = nn.Linear(c, cfg.num_bins)
        self.fc_pitch = nn.Linear(c, cfg.num_bins)
        self.fc_yaw = nn.Linear(c, cfg.num_bins)
        self.fc_t = nn.Linear(c, 3)
        self.fc_exp = nn.Linear(c, 3 * cfg.num_keypoints)

    def forward(self, coeff_window: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.first(coeff_window)
        for i in range(self.num_layers):
            # The dilated conv trims 3 steps at each end; the residual is cropped to match.
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        descriptor = out.mean(dim=2)
        return {
            "yaw": self.fc_yaw(descriptor),
            "pitch": self.fc_pitch(descriptor),
            "roll": self.fc_roll(descriptor),
            "t": self.fc_t(descriptor),
            "exp": self.fc_exp(descriptor),
        }
