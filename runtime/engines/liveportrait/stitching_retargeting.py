"""S: the stitching MLP and the lip and eye retargeting MLPs (plain ReLU MLPs)."""
from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from .config import EYE_MLP, LIP_MLP, STITCHING_MLP, MlpConfig


class RetargetingMLP(nn.Module):
    """(B, input_size) -> (B, output_size): Linear layers with ReLU between them.

    The layers sit at even indices of `mlp` (ReLUs at odd ones), as the official keys expect."""

    def __init__(self, config: MlpConfig):
        super().__init__()
        sizes = [config.input_size, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], config.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class StitchingRetargetingModule(nn.Module):
    """The three MLPs of the official `stitching_retargeting_module.pth`.

    stitching: [x_s, x_d] (B, 126) -> (B, 65) keypoint deltas (63) + (tx, ty)
    lip:       [x_s, c_s_lip, c_d_lip] (B, 65) -> (B, 63) keypoint deltas
    eye:       [x_s, c_s_left, c_s_right, c_d_eye] (B, 66) -> (B, 63) keypoint deltas
    """

    def __init__(self):
        super().__init__()
        self.stitching = RetargetingMLP(STITCHING_MLP)
        self.lip = RetargetingMLP(LIP_MLP)
        self.eye = RetargetingMLP(EYE_MLP)
