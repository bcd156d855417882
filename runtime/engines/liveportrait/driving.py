"""Speech -> per-frame driving keypoints: lips through the lip MLP, blinks through the eye MLP,
a small head motion through the rotation, stitching on every frame. All frames at once.

The speech analysis itself (mouth opening, blinks, head sway and nods) is the shared
`runtime.media.speech_motion`; this module only maps it into LivePortrait's keypoint space.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...media.speech_motion import FaceMotion
from .keypoints import SourceMotion, eye_delta, lip_delta, rotation_matrix, stitch, transform_keypoints
from .stitching_retargeting import StitchingRetargetingModule

# Lip-open ratio (inner-lip gap / mouth width) for a fully open speaking mouth; a closed mouth is 0.
# Upstream's retargeting slider spans 0-0.8; speech rarely opens wider than ~0.45.
SPEAKING_LIP_RATIO_MAX = 0.45
CLOSED_EYE_RATIO = 0.0


@dataclass(frozen=True)
class DrivingTargets:
    """Per-frame targets (N,) float32: lip_ratio, eye_ratio; head offsets in degrees."""

    lip_ratio: np.ndarray
    eye_ratio: np.ndarray
    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray


def driving_targets(motion: FaceMotion, source_eye_ratios: np.ndarray, *, expression_scale: float = 1.0,
                    still: bool = False) -> DrivingTargets:
    """Map the shared speech motion to LivePortrait's retargeting inputs.

    lip: 0..1 opening -> lip-open ratio 0..0.45 (times expression_scale); eyes: the source's
    own openness, closing to 0 during blinks; head: the sway and nods in degrees (zero if still)."""
    lip_ratio = np.clip(motion.mouth.lip_open * SPEAKING_LIP_RATIO_MAX * expression_scale, 0.0, 0.8)
    open_eye = float(np.mean(source_eye_ratios))
    eye_ratio = open_eye + (CLOSED_EYE_RATIO - open_eye) * motion.blink
    zeros = np.zeros_like(motion.blink)
    head = (zeros, zeros, zeros) if still else (motion.head_pitch, motion.head_yaw, motion.head_roll)
    return DrivingTargets(lip_ratio=lip_ratio.astype(np.float32), eye_ratio=eye_ratio.astype(np.float32),
                          pitch=head[0].astype(np.float32), yaw=head[1].astype(np.float32),
                          roll=head[2].astype(np.float32))


@torch.no_grad()
def driving_keypoints(retargeting: StitchingRetargetingModule, source: SourceMotion, kp_source: torch.Tensor,
                      source_lip_ratio: float, source_eye_ratios: np.ndarray,
                      targets: DrivingTargets) -> torch.Tensor:
    """x_d for every frame, (N, K, 3) fp32 on kp_source's device.

    x_d = s (x_c R(pose_s + head offset) + delta_s) + t_s + lip delta + eye delta, then stitched,
    as upstream's image retargeting composes them (the deltas are relative to x_s)."""
    device = kp_source.device
    n = len(targets.lip_ratio)

    def column(values) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=device).reshape(n, 1)

    rotation = rotation_matrix(source.pitch + column(targets.pitch)[:, 0], source.yaw + column(targets.yaw)[:, 0],
                               source.roll + column(targets.roll)[:, 0])
    kp_posed = transform_keypoints(source.canonical.expand(n, -1, -1), rotation, source.expression.expand(n, -1, -1),
                                   source.scale.expand(n, -1), source.translation.expand(n, -1))
    kp_src = kp_source.expand(n, -1, -1)
    lips = lip_delta(retargeting, kp_src, column([source_lip_ratio] * n), column(targets.lip_ratio))
    eyes = eye_delta(retargeting, kp_src,
                     torch.as_tensor(source_eye_ratios, dtype=torch.float32, device=device).reshape(1, 2).expand(n, 2),
                     column(targets.eye_ratio))
    return stitch(retargeting, kp_src, kp_posed + lips + eyes)
