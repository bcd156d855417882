"""The keypoint math of LivePortrait: pose bins to degrees, Eqn. 2, stitching and retargeting.

Shapes: B frames, K = 21 keypoints; keypoints are (B, K, 3) in the networks' normalized space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..head_pose import axis_rotations, rotate_keypoints
from .config import NUM_POSE_BINS
from .motion_extractor import MotionOutput
from .stitching_retargeting import StitchingRetargetingModule

BIN_DEGREES = 3.0
BIN_OFFSET_DEGREES = 97.5  # bin i covers -97.5 + 3 i degrees (upstream's modified centre)


def pose_degrees(bin_logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) pose-bin logits -> (B,) degrees: the softmax expectation over bin centres."""
    centres = torch.arange(NUM_POSE_BINS, device=bin_logits.device, dtype=bin_logits.dtype)
    return (torch.softmax(bin_logits, dim=1) * centres).sum(dim=1) * BIN_DEGREES - BIN_OFFSET_DEGREES


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) each -> R = Rz(roll) Ry(yaw) Rx(pitch), (B, 3, 3), acting on column vectors
    (runtime.engines.head_pose's convention)."""
    about_x, about_y, about_z = axis_rotations(*(angle.reshape(-1) * (math.pi / 180) for angle in (pitch, yaw, roll)))
    return about_z @ about_y @ about_x


def transform_keypoints(canonical: torch.Tensor, rotation: torch.Tensor, expression: torch.Tensor,
                        scale: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Eqn. 2 of the paper: x = s (R x_c + delta) + t, with t applied to x and y only.

    canonical, expression (B, K, 3); rotation (B, 3, 3) from rotation_matrix; scale (B, 1); translation (B, 3)."""
    moved = (rotate_keypoints(canonical, rotation) + expression) * scale[..., None]
    shift = torch.zeros_like(translation)
    shift[:, :2] = translation[:, :2]
    return moved + shift[:, None, :]


@dataclass
class SourceMotion:
    """What M says about the source crop, pose already in degrees. Batch B (usually 1)."""

    canonical: torch.Tensor  # (B, K, 3) x_c
    pitch: torch.Tensor  # (B,) degrees
    yaw: torch.Tensor
    roll: torch.Tensor
    translation: torch.Tensor  # (B, 3)
    expression: torch.Tensor  # (B, K, 3)
    scale: torch.Tensor  # (B, 1)

    @classmethod
    def from_network(cls, output: MotionOutput) -> SourceMotion:
        batch = output.kp.shape[0]
        return cls(canonical=output.kp.float().view(batch, -1, 3), pitch=pose_degrees(output.pitch.float()),
                   yaw=pose_degrees(output.yaw.float()), roll=pose_degrees(output.roll.float()),
                   translation=output.t.float(), expression=output.exp.float().view(batch, -1, 3),
                   scale=output.scale.float())

    def keypoints(self) -> torch.Tensor:
        """x_s (B, K, 3)."""
        return transform_keypoints(self.canonical, rotation_matrix(self.pitch, self.yaw, self.roll),
                                   self.expression, self.scale, self.translation)


def stitch(retargeting: StitchingRetargetingModule, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
    """Stitching: shift x_d so the face's border stays where the source's was. (B, K, 3) -> (B, K, 3)."""
    batch, num_kp, _ = kp_source.shape
    delta = retargeting.stitching(torch.cat([kp_source.reshape(batch, -1), kp_driving.reshape(batch, -1)], dim=1))
    kp = kp_driving + delta[:, : 3 * num_kp].view(batch, num_kp, 3)
    shift_xy = torch.zeros_like(kp)
    shift_xy[..., :2] = delta[:, 3 * num_kp: 3 * num_kp + 2].view(batch, 1, 2)
    return kp + shift_xy


def lip_delta(retargeting: StitchingRetargetingModule, kp_source: torch.Tensor,
              source_lip_ratio: torch.Tensor, target_lip_ratio: torch.Tensor) -> torch.Tensor:
    """Keypoint offsets that make the lips open to `target_lip_ratio`.

    kp_source (B, K, 3); source_lip_ratio (B, 1); target_lip_ratio (B, 1) -> (B, K, 3)."""
    batch, num_kp, _ = kp_source.shape
    features = torch.cat([kp_source.reshape(batch, -1), source_lip_ratio, target_lip_ratio], dim=1)
    return retargeting.lip(features).view(batch, num_kp, 3)


def eye_delta(retargeting: StitchingRetargetingModule, kp_source: torch.Tensor,
              source_eye_ratios: torch.Tensor, target_eye_ratio: torch.Tensor) -> torch.Tensor:
    """Keypoint offsets that set both eyes' openness to `target_eye_ratio`.

    kp_source (B, K, 3); source_eye_ratios (B, 2) left, right; target_eye_ratio (B, 1) -> (B, K, 3)."""
    batch, num_kp, _ = kp_source.shape
    features = torch.cat([kp_source.reshape(batch, -1), source_eye_ratios, target_eye_ratio], dim=1)
    return retargeting.eye(features).view(batch, num_kp, 3)
