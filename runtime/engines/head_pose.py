"""Head rotations both engines pose their keypoints with, in one convention.

A rotation matrix R acts on column vectors: a keypoint p rotates to R p. Keypoints are stored as
rows, (B, K, 3), so `rotate_keypoints` computes p R^T for each row. The two engines compose the
same three axis rotations in different orders (each as it was trained) and convert degrees
differently; those choices stay in each engine, the convention is this one.
"""
from __future__ import annotations

import torch


def axis_rotations(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Angles (B,) in radians -> rotations about x by pitch, about y by yaw and about z by roll,
    (B, 3, 3) each."""
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)

    def matrix(*entries: torch.Tensor) -> torch.Tensor:
        return torch.stack(entries, dim=-1).view(-1, 3, 3)

    about_x = matrix(one, zero, zero, zero, pitch.cos(), -pitch.sin(), zero, pitch.sin(), pitch.cos())
    about_y = matrix(yaw.cos(), zero, yaw.sin(), zero, one, zero, -yaw.sin(), zero, yaw.cos())
    about_z = matrix(roll.cos(), -roll.sin(), zero, roll.sin(), roll.cos(), zero, zero, zero, one)
    return about_x, about_y, about_z


def rotate_keypoints(keypoints: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """keypoints (B or 1, K, 3) as rows, rotation (B, 3, 3) -> (B, K, 3): each row p becomes R p."""
    return keypoints @ rotation.transpose(1, 2)
