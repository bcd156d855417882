"""Head pose and keypoint math of the face renderer (no learnt weights).

The mapping net predicts each angle as logits over 66 bins of 3 degrees; the expected bin
gives degrees. The canonical keypoints are rotated, shifted vertically and displaced by the
predicted expression deltas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..head_pose import axis_rotations, rotate_keypoints

NUM_BINS = 66
# Upstream converts degrees with 3.14, not pi; kept so poses match the trained behaviour.
DEGREES_TO_RADIANS = 3.14 / 180


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) angle logits -> (B,) degrees in [-99, 96]."""
    bins = torch.arange(NUM_BINS, device=logits.device, dtype=logits.dtype)
    return (F.softmax(logits, dim=1) * bins).sum(dim=1) * 3 - 99


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) each -> R = Rx(pitch) Ry(yaw) Rz(roll), (B, 3, 3), acting on column vectors
    (runtime.engines.head_pose's convention)."""
    about_x, about_y, about_z = axis_rotations(*(angle * DEGREES_TO_RADIANS for angle in (pitch, yaw, roll)))
    return about_x @ about_y @ about_z


def transform_keypoints(canonical: torch.Tensor, head: dict[str, torch.Tensor]) -> torch.Tensor:
    """Canonical keypoints (B or 1, K, 3) + mapping-net outputs -> posed keypoints (B, K, 3).

    Only the vertical component of the predicted translation is used (upstream zeroes x and z).
    """
    rotation = rotation_matrix(bins_to_degrees(head["pitch"]), bins_to_degrees(head["yaw"]),
                               bins_to_degrees(head["roll"]))
    rotated = rotate_keypoints(canonical, rotation)
    shift = head["t"] * head["t"].new_tensor([0.0, 1.0, 0.0])
    return rotated + shift.unsqueeze(1) + head["exp"].view(rotation.shape[0], -1, 3)
