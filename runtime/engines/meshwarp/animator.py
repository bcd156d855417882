"""Audio-driven dense warp of a portrait around its MediaPipe face mesh.

Once per portrait: landmarks, a region of interest around the face, and for each elementary motion
(motion_basis.BASES) a smooth backward displacement field, interpolated from the landmark
displacements with a thin-plate spline. Per frame: the field is the coefficient-weighted sum of
those fields (a few thousand multiply-adds on a coarse grid), upsampled and applied with cv2.remap;
where the lips part, a mouth interior (dark cavity, a hint of teeth) is painted in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from ...media import landmarks as lm
from ...media.landmarks import FaceLandmarks, FaceLocator, square_around
from ...media.speech_motion import FaceMotion
from . import motion_basis

MAX_LIP_GAP = 0.085  # inner-lip opening of a wide-open mouth, in face heights
MAX_LIP_ROUND = 0.22  # share of the mouth's width lost to full rounding
ROI_SCALE = 1.9  # warped region: this times the face's landmark extent
GRID_CELLS = 96  # the fields are interpolated on this many cells across the region, then upsampled
_BORDER_ANCHORS = 24  # zero-motion anchors on each side of the region keep its edge seamless
# Inner-lip points sit on top of each other in a closed mouth yet move apart: they would fold the
# field, so the warp leaves them out (the painted mouth interior covers the gap between the lips).
_WARP_EXCLUDED = sorted(set(lm.INNER_LIP_UPPER + lm.INNER_LIP_LOWER) | set(range(468, 478)))
_INNER_LIP_POLYGON = lm.INNER_LIP_UPPER + lm.INNER_LIP_LOWER[-2:0:-1]
_TEETH_COLOR = np.array([240, 233, 220], np.float32)


@dataclass(frozen=True)
class PreparedPortrait:
    """Everything that depends only on the portrait. Arrays in the region's pixel coordinates."""

    image: np.ndarray  # (H, W, 3) RGB uint8, the full portrait
    face: FaceLandmarks
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 in the full image
    landmark_basis: np.ndarray  # (K, 478, 2) float32, forward displacement per unit of each basis
    field_basis: np.ndarray  # (K, gh, gw, 2) float32, backward displacement per unit, pixels
    base_map: np.ndarray  # (h, w, 2) float32, identity sampling coordinates of the region
    source_lip_gap: float  # inner-lip opening of the portrait, face heights
    lip_color: np.ndarray  # (3,) float32, median colour of the lips


def _region_of_interest(face: FaceLandmarks, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0 = face.points.min(axis=0)
    x1, y1 = face.points.max(axis=0)
    return square_around((int(x0), int(y0), int(x1), int(y1)), shape, ROI_SCALE)


def _border_anchors(width: int, height: int) -> np.ndarray:
    steps = np.linspace(0.0, 1.0, _BORDER_ANCHORS, endpoint=False)
    sides = [
        np.stack([steps * width, np.zeros_like(steps)], 1),
        np.stack([np.full_like(steps, width), steps * height], 1),
        np.stack([width - steps * width, np.full_like(steps, height)], 1),
        np.stack([np.zeros_like(steps), height - steps * height], 1),
    ]
    return np.concatenate(sides).astype(np.float32)


def _backward_fields(points: np.ndarray, displacements: np.ndarray, width: int, height: int) -> np.ndarray:
    """Thin-plate-spline fields on a coarse grid: (K, gh, gw, 2), minus the forward displacement
    (for small motions, sampling at p - d(p) moves the content at p by d)."""
    keep = np.setdiff1d(np.arange(len(points)), _WARP_EXCLUDED)
    anchors = _border_anchors(width, height)
    scale = float(max(width, height))
    controls = np.concatenate([points[keep], anchors]) / scale
    n_bases = displacements.shape[0]
    values = np.concatenate(
        [displacements[:, keep].transpose(1, 0, 2).reshape(len(keep), -1), np.zeros((len(anchors), n_bases * 2))]
    )
    spline = RBFInterpolator(controls, values, kernel="thin_plate_spline", smoothing=1e-6)
    cell = scale / GRID_CELLS
    grid_w, grid_h = int(np.ceil(width / cell)) + 1, int(np.ceil(height / cell)) + 1
    gy, gx = np.mgrid[0:grid_h, 0:grid_w].astype(np.float32) * cell
    sample = np.stack([gx.ravel(), gy.ravel()], 1) / scale
    fields = spline(sample).reshape(grid_h, grid_w, n_bases, 2).transpose(2, 0, 1, 3)
    return (-fields).astype(np.float32)


def _lip_color(image: np.ndarray, face: FaceLandmarks) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    outer = np.round(face.points[lm.OUTER_LIP_UPPER + lm.OUTER_LIP_LOWER[::-1]]).astype(np.int32)
    inner = np.round(face.points[_INNER_LIP_POLYGON]).astype(np.int32)
    cv2.fillPoly(mask, [outer], 1)
    cv2.fillPoly(mask, [inner], 0)
    pixels = image[mask.astype(bool)]
    return np.median(pixels, axis=0).astype(np.float32) if len(pixels) else np.array([150, 80, 80], np.float32)


class MeshWarpAnimator:
    """Prepares portraits and renders frames. Stateless per request; safe to share between threads."""

    def __init__(self, locator: FaceLocator):
        self.locator = locator

    def prepare(self, image: np.ndarray) -> PreparedPortrait:
        """Landmarks and motion fields of a portrait (H, W, 3) RGB uint8. Raises NoFaceError."""
        face = self.locator.locate(image)
        x0, y0, x1, y1 = _region_of_interest(face, image.shape)
        local = FaceLandmarks(points=face.points - np.array([x0, y0], np.float32), depth=face.depth, box=face.box)
        landmark_basis = motion_basis.all_bases(local)
        field_basis = _backward_fields(local.points, landmark_basis, x1 - x0, y1 - y0)
        ys, xs = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32)
        return PreparedPortrait(
            image=image,
            face=local,
            roi=(x0, y0, x1, y1),
            landmark_basis=landmark_basis,
            field_basis=field_basis,
            base_map=np.stack([xs, ys], axis=-1),
            source_lip_gap=local.lip_gap(),
            lip_color=_lip_color(image[y0:y1, x0:x1], local),
        )

    @staticmethod
    def coefficients(
        prepared: PreparedPortrait, motion: FaceMotion, *, still: bool = False, expression_scale: float = 1.0
    ) -> np.ndarray:
        """(n_frames, K) weights of motion_basis.BASES for each frame."""
        mouth = motion.mouth
        lip_round = np.clip(mouth.lip_round * expression_scale, 0, 1)
        target_gap = np.clip(mouth.lip_open * expression_scale, 0, 1.2) * MAX_LIP_GAP * (1 - 0.35 * lip_round)
        jaw = (target_gap - prepared.source_lip_gap) / (1 + motion_basis._UPPER_LIP_LIFT)
        head = np.zeros((3, motion.n_frames), np.float32) if still else np.stack(
            [motion.head_pitch, motion.head_yaw, motion.head_roll]
        )
        return np.stack([jaw, MAX_LIP_ROUND * lip_round, motion.blink, *head], axis=1).astype(np.float32)

    def render(self, prepared: PreparedPortrait, weights: np.ndarray) -> np.ndarray:
        """One frame (H, W, 3) RGB uint8 for weights (K,)."""
        x0, y0, x1, y1 = prepared.roi
        width, height = x1 - x0, y1 - y0
        coarse = np.tensordot(weights, prepared.field_basis, axes=1)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
        sampling = prepared.base_map + field
        region = prepared.image[y0:y1, x0:x1]
        warped = cv2.remap(region, sampling[..., 0], sampling[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        moved = prepared.face.points + np.tensordot(weights, prepared.landmark_basis, axes=1)
        _paint_mouth_interior(warped, moved, prepared)
        frame = prepared.image.copy()
        frame[y0:y1, x0:x1] = warped
        return frame

    def frames(
        self, prepared: PreparedPortrait, motion: FaceMotion, *, still: bool = False, expression_scale: float = 1.0
    ) -> Iterator[np.ndarray]:
        for weights in self.coefficients(prepared, motion, still=still, expression_scale=expression_scale):
            yield self.render(prepared, weights)


def _paint_mouth_interior(region: np.ndarray, moved: np.ndarray, prepared: PreparedPortrait) -> None:
    """Paint a dark cavity with a hint of teeth inside the moved inner-lip outline, in place."""
    face_height = prepared.face.face_height
    upper = moved[lm.INNER_LIP_UPPER]
    lower = moved[lm.INNER_LIP_LOWER]
    gap = float(np.max(lower[:, 1] - upper[:, 1]))
    if gap < 0.004 * face_height:
        return
    polygon = moved[_INNER_LIP_POLYGON]
    margin = 3
    bx0, by0 = np.floor(polygon.min(axis=0)).astype(int) - margin
    bx1, by1 = np.ceil(polygon.max(axis=0)).astype(int) + margin
    bx0, by0 = max(bx0, 0), max(by0, 0)
    bx1, by1 = min(bx1, region.shape[1]), min(by1, region.shape[0])
    if bx1 <= bx0 or by1 <= by0:
        return
    size = (by1 - by0, bx1 - bx0)
    origin = np.array([bx0, by0], np.float32)
    subpixel = 8  # fillPoly's fixed-point shift of 3 bits

    def fill(points: np.ndarray) -> np.ndarray:
        mask = np.zeros(size, np.uint8)
        cv2.fillPoly(mask, [np.round((points - origin) * subpixel).astype(np.int32)], 255, cv2.LINE_AA, shift=3)
        return mask.astype(np.float32) / 255.0

    mouth_mask = fill(polygon)
    mouth_width = float(np.linalg.norm(upper[-1] - upper[0]))
    sigma = 0.5 + 0.012 * mouth_width
    mouth_mask = cv2.GaussianBlur(mouth_mask, (0, 0), sigma)

    # Cavity: the lips' own hue, very dark, darkest in the middle of the opening.
    rows = (np.arange(size[0], dtype=np.float32) + by0 - upper[:, 1].mean()) / max(gap, 1.0)
    depth_shade = 0.10 + 0.12 * np.abs(rows - 0.5)[:, None, None]
    interior = np.broadcast_to(prepared.lip_color * depth_shade, size + (3,)).copy()

    # Upper teeth just under the upper lip across the middle of the mouth; lower teeth once wide open.
    # Both are shaded darker towards the corners, where they turn away into the cavity.
    centre_x = (upper[0, 0] + upper[-1, 0]) / 2 - bx0
    columns = np.abs(np.arange(size[1], dtype=np.float32) - centre_x) / max(mouth_width / 2, 1.0)
    side_shade = np.clip(1.0 - 0.55 * columns**2, 0.35, 1.0)[None, :, None]
    teeth_height = min(0.4 * gap, 0.03 * face_height)
    middle = upper[2:-2]
    upper_teeth = cv2.GaussianBlur(fill(np.concatenate([middle, middle[::-1] + [0, teeth_height]])), (0, 0), sigma)
    # Teeth catch light at the top and fall into shadow towards their edges.
    teeth_rows = np.clip((np.arange(size[0], dtype=np.float32) + by0 - middle[:, 1].mean()) / max(teeth_height, 1.0), 0, 1)
    teeth_shade = (1.0 - 0.3 * teeth_rows**2)[:, None, None] * side_shade
    interior += (_TEETH_COLOR * teeth_shade - interior) * upper_teeth[..., None] * 0.92
    if gap > 0.035 * face_height:
        bottom = lower[3:-3]
        lower_teeth = cv2.GaussianBlur(fill(np.concatenate([bottom, bottom[::-1] - [0, 0.3 * teeth_height]])), (0, 0), sigma)
        interior += (_TEETH_COLOR * 0.7 * side_shade - interior) * lower_teeth[..., None] * 0.6

    patch = region[by0:by1, bx0:bx1].astype(np.float32)
    alpha = mouth_mask[..., None]
    region[by0:by1, bx0:bx1] = np.clip(patch * (1 - alpha) + interior * alpha, 0, 255).astype(np.uint8)
