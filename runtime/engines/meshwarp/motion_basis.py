"""Landmark displacements for each elementary face motion, at unit strength.

Every frame's landmark motion is a weighted sum of these bases, so the dense warp field is the same
weighted sum of per-basis fields computed once per portrait. Units: `jaw`, `lip_round` and `blink`
are in face heights / fractions; the head bases are per degree.
"""
from __future__ import annotations

import numpy as np

from ...media import landmarks as lm

BASES = ("jaw", "lip_round", "blink", "head_pitch", "head_yaw", "head_roll")

UPPER_LIP_LIFT = 0.12  # the upper lip rises a little as the jaw drops
_JAW_FOLLOW = 0.85  # the chin travels slightly less than the lower lip


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def jaw_drop(points: np.ndarray, face_height: float) -> np.ndarray:
    """(478, 2) displacement when the jaw opens by one face height at the lower lip's centre."""
    displacement = np.zeros_like(points)
    left, right = points[lm.MOUTH_CORNERS[0]], points[lm.MOUTH_CORNERS[1]]
    centre_x = (left[0] + right[0]) / 2
    half_mouth = max(abs(right[0] - left[0]) / 2, 1.0)
    upper_y = points[lm.UPPER_LIP_MID, 1]
    lower_y = points[lm.LOWER_LIP_MID, 1]
    chin_y = points[lm.CHIN_BOTTOM, 1]
    oval = points[lm.FACE_OVAL]
    half_face = max((oval[:, 0].max() - oval[:, 0].min()) / 2, 1.0)

    # How much of the jaw's drop each point follows: nothing above the lip line, all of it below
    # the lower lip, less towards the jaw's angles (they sit near the hinge).
    below = _smoothstep((points[:, 1] - upper_y) / max(lower_y - upper_y + 0.04 * face_height, 1.0))
    sideways = 1.0 - 0.7 * _smoothstep((np.abs(points[:, 0] - centre_x) - 0.3 * half_face) / (0.7 * half_face))
    towards_chin = np.clip((points[:, 1] - lower_y) / max(chin_y - lower_y, 1.0), 0, 1)
    follow = below * sideways * (1.0 - (1.0 - _JAW_FOLLOW) * towards_chin)
    displacement[:, 1] = follow * face_height

    # Lips: the lower lip drops most at its centre, the corners stay nearly put; the upper lip lifts.
    across = np.clip(1.0 - np.abs(points[:, 0] - centre_x) / half_mouth, 0, 1)
    lower_lip = sorted(set(lm.INNER_LIP_LOWER + lm.OUTER_LIP_LOWER))
    upper_lip = sorted(set(lm.INNER_LIP_UPPER + lm.OUTER_LIP_UPPER))
    shape = 0.25 + 0.75 * np.sqrt(across[lower_lip])
    inner_gaps = points[lm.INNER_LIP_LOWER, 1] - points[lm.INNER_LIP_UPPER, 1]
    centre_gap = float(points[lm.LOWER_LIP_MID, 1] - points[lm.UPPER_LIP_MID, 1])
    if centre_gap > 0.02 * face_height:
        # An open mouth closes along its own outline: each point of the lower lip travels its share
        # of the opening above it, so that in a pause the lips meet from corner to corner.
        order = np.argsort(points[lm.INNER_LIP_LOWER, 0])
        profile = np.interp(points[lower_lip, 0], points[lm.INNER_LIP_LOWER, 0][order], inner_gaps[order]) / centre_gap
        shape = np.clip(profile, 0.25, 1.0)
    displacement[lower_lip, 1] = shape * face_height
    displacement[upper_lip, 1] = -UPPER_LIP_LIFT * np.sqrt(across[upper_lip]) * face_height
    return displacement


def lip_round(points: np.ndarray, face_height: float) -> np.ndarray:
    """(478, 2) displacement of full rounding: corners pulled to the centre, lips pushed out vertically."""
    displacement = np.zeros_like(points)
    left, right = points[lm.MOUTH_CORNERS[0]], points[lm.MOUTH_CORNERS[1]]
    centre = (left + right) / 2
    lips = sorted(set(lm.INNER_LIP_UPPER + lm.INNER_LIP_LOWER + lm.OUTER_LIP_UPPER + lm.OUTER_LIP_LOWER))
    relative = points[lips] - centre
    displacement[lips, 0] = -relative[:, 0]
    displacement[lips, 1] = 0.35 * relative[:, 1]  # pursed lips bulge: taller as they narrow
    return displacement


def blink(points: np.ndarray, face_height: float) -> np.ndarray:
    """(478, 2) displacement of a full blink: each upper lid down onto its lower lid, nothing else."""
    displacement = np.zeros_like(points)
    for upper, lower in lm.EYELID_PAIRS:
        displacement[upper] = points[lower] - points[upper]
    return displacement


def _rotation_axis_depth(depth: np.ndarray, face_height: float) -> float:
    """Depth of the head's rotation centre: about half a face height behind the face's deepest point."""
    return float(depth.max() + 0.5 * face_height)


def head_pitch(points: np.ndarray, depth: np.ndarray, face_height: float) -> np.ndarray:
    """(478, 2) displacement for one degree of nod (chin down): points nearer the camera move more."""
    displacement = np.zeros_like(points)
    displacement[:, 1] = np.deg2rad(1.0) * (_rotation_axis_depth(depth, face_height) - depth)
    return displacement


def head_yaw(points: np.ndarray, depth: np.ndarray, face_height: float) -> np.ndarray:
    """(478, 2) displacement for one degree of turn to the viewer's right."""
    displacement = np.zeros_like(points)
    displacement[:, 0] = np.deg2rad(1.0) * (_rotation_axis_depth(depth, face_height) - depth)
    return displacement


def head_roll(points: np.ndarray, face_height: float) -> np.ndarray:
    """(478, 2) displacement for one degree of clockwise tilt about the neck, below the chin."""
    pivot = points[lm.CHIN_BOTTOM] + np.array([0.0, 0.35 * face_height], dtype=np.float32)
    relative = points - pivot
    angle = np.deg2rad(1.0)
    return np.stack([-relative[:, 1] * angle, relative[:, 0] * angle], axis=1).astype(np.float32)


def all_bases(face: lm.FaceLandmarks) -> np.ndarray:
    """(len(BASES), 478, 2) float32 displacements in pixels, in the order of BASES."""
    points, depth, height = face.points, face.depth, face.face_height
    return np.stack([
        jaw_drop(points, height),
        lip_round(points, height),
        blink(points, height),
        head_pitch(points, depth, height),
        head_yaw(points, depth, height),
        head_roll(points, height),
    ]).astype(np.float32)
