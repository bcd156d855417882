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
# Upper and lower inner-lip points sit on top of each other in a closed mouth yet move apart: both
# would fold the field, so the warp follows the lower ones only (the painted mouth interior covers
# the gap). Iris points duplicate the eye's.
_WARP_EXCLUDED = sorted(set(lm.INNER_LIP_UPPER[1:-1]) | set(range(468, 478)))
_INNER_LIP_POLYGON = lm.INNER_LIP_UPPER + lm.INNER_LIP_LOWER[-2:0:-1]
_TEETH_COLOR = np.array([238, 228, 210], np.float32)
_CAVITY_TINT = np.array([1.0, 0.6, 0.6], np.float32)  # a mouth's inside is redder than its lips
_BLINK = motion_basis.BASES.index("blink")
_LASH_COLOR = np.array([45, 32, 30], np.float32)


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
    eyelid_colors: tuple[np.ndarray, ...]  # (3,) float32 per eye, median colour of the skin above the lid


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
    return np.ascontiguousarray(-fields, dtype=np.float32)


def _lip_color(image: np.ndarray, face: FaceLandmarks) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    outer = np.round(face.points[lm.OUTER_LIP_UPPER + lm.OUTER_LIP_LOWER[::-1]]).astype(np.int32)
    inner = np.round(face.points[_INNER_LIP_POLYGON]).astype(np.int32)
    cv2.fillPoly(mask, [outer], 1)
    cv2.fillPoly(mask, [inner], 0)
    pixels = image[mask.astype(bool)]
    return np.median(pixels, axis=0).astype(np.float32) if len(pixels) else np.array([150, 80, 80], np.float32)


def _eyelid_colors(image: np.ndarray, face: FaceLandmarks) -> tuple[np.ndarray, ...]:
    """Median colour between each upper lid and its crease: the skin a blink shows."""
    colors = []
    for (upper, _), crease in zip(lm.EYELID_PAIRS, lm.EYELID_CREASES):
        mask = np.zeros(image.shape[:2], np.uint8)
        band = np.concatenate([face.points[upper], face.points[crease][::-1]])
        cv2.fillPoly(mask, [np.round(band).astype(np.int32)], 1)
        pixels = image[mask.astype(bool)]
        colors.append(np.median(pixels, axis=0).astype(np.float32) if len(pixels) else _skin_near_nose(image, face))
    return tuple(colors)


def _skin_near_nose(image: np.ndarray, face: FaceLandmarks) -> np.ndarray:
    """Fallback skin colour: the pixel at the nose tip."""
    x, y = np.clip(np.round(face.points[lm.NOSE_TIP]).astype(int), 0, [image.shape[1] - 1, image.shape[0] - 1])
    return image[y, x].astype(np.float32)


def _weighted_sum(weights: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """sum_k weights[k] * basis[k] as one matrix-vector product over a contiguous (K, ...) basis
    (np.tensordot would copy the basis on every call)."""
    return (weights.astype(basis.dtype) @ basis.reshape(len(basis), -1)).reshape(basis.shape[1:])


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
            eyelid_colors=_eyelid_colors(image[y0:y1, x0:x1], local),
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
        coarse = _weighted_sum(weights, prepared.field_basis)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
        sampling = prepared.base_map + field
        region = prepared.image[y0:y1, x0:x1]
        warped = cv2.remap(region, sampling[..., 0], sampling[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        moved = prepared.face.points + _weighted_sum(weights, prepared.landmark_basis)
        _paint_mouth_interior(warped, moved, prepared)
        _paint_eyelids(warped, moved, prepared, float(weights[_BLINK]))
        frame = prepared.image.copy()
        frame[y0:y1, x0:x1] = warped
        return frame

    def frames(
        self, prepared: PreparedPortrait, motion: FaceMotion, *, still: bool = False, expression_scale: float = 1.0
    ) -> Iterator[np.ndarray]:
        for weights in self.coefficients(prepared, motion, still=still, expression_scale=expression_scale):
            yield self.render(prepared, weights)


class _Patch:
    """A small box of the region around some points, where shapes are filled anti-aliased and
    composited back. Coordinates in and out are the region's."""

    _SHIFT = 3  # fillPoly's fixed-point fraction bits: 1/8 pixel precision

    def __init__(self, region: np.ndarray, points: np.ndarray, margin: int = 3):
        x0, y0 = np.floor(points.min(axis=0)).astype(int) - margin
        x1, y1 = np.ceil(points.max(axis=0)).astype(int) + margin
        self.x0, self.y0 = max(int(x0), 0), max(int(y0), 0)
        self.x1, self.y1 = min(int(x1), region.shape[1]), min(int(y1), region.shape[0])
        self.region = region

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def rows(self) -> np.ndarray:
        """(h,) region y coordinate of each patch row."""
        return np.arange(self.y0, self.y1, dtype=np.float32)

    def columns(self) -> np.ndarray:
        return np.arange(self.x0, self.x1, dtype=np.float32)

    def fill(self, polygon: np.ndarray, blur_sigma: float = 0.0) -> np.ndarray:
        """(h, w) float32 coverage in [0, 1] of a polygon (n, 2)."""
        mask = np.zeros(self.shape, np.uint8)
        scaled = np.round((polygon - [self.x0, self.y0]) * (1 << self._SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [scaled], 255, cv2.LINE_AA, shift=self._SHIFT)
        coverage = mask.astype(np.float32) / 255.0
        return cv2.GaussianBlur(coverage, (0, 0), blur_sigma) if blur_sigma > 0 else coverage

    def composite(self, color: np.ndarray, alpha: np.ndarray) -> None:
        """Blend color (h, w, 3) over the region with alpha (h, w), in place."""
        patch = self.region[self.y0 : self.y1, self.x0 : self.x1].astype(np.float32)
        blended = patch + (color - patch) * alpha[..., None]
        self.region[self.y0 : self.y1, self.x0 : self.x1] = np.clip(blended, 0, 255).astype(np.uint8)


def _paint_mouth_interior(region: np.ndarray, moved: np.ndarray, prepared: PreparedPortrait) -> None:
    """Paint a dark cavity with a hint of teeth inside the moved inner-lip outline, in place."""
    face_height = prepared.face.face_height
    upper = moved[lm.INNER_LIP_UPPER]
    lower = moved[lm.INNER_LIP_LOWER]
    gap = float(np.max(lower[:, 1] - upper[:, 1]))
    if gap < 0.004 * face_height:
        return
    polygon = moved[_INNER_LIP_POLYGON]
    patch = _Patch(region, polygon)
    if patch.empty:
        return
    mouth_width = float(np.linalg.norm(upper[-1] - upper[0]))
    sigma = 0.5 + 0.012 * mouth_width
    mouth_mask = patch.fill(polygon, sigma)

    # Cavity: the lips' own hue, very dark, darkest in the middle of the opening.
    rows = (patch.rows() - upper[:, 1].mean()) / max(gap, 1.0)
    depth_shade = 0.10 + 0.12 * np.abs(rows - 0.5)[:, None, None]
    interior = np.broadcast_to(prepared.lip_color * _CAVITY_TINT * depth_shade, patch.shape + (3,)).copy()

    # Upper teeth just under the upper lip across the middle of the mouth; lower teeth once wide open.
    # Both are shaded darker towards the corners, where they turn away into the cavity.
    centre_x = (upper[0, 0] + upper[-1, 0]) / 2
    columns = np.abs(patch.columns() - centre_x) / max(mouth_width / 2, 1.0)
    side_shade = np.clip(1.0 - 0.55 * columns**2, 0.35, 1.0)[None, :, None]
    teeth_height = min(0.4 * gap, 0.03 * face_height)
    middle = upper[2:-2]
    upper_teeth = patch.fill(np.concatenate([middle, middle[::-1] + [0, teeth_height]]), 0.5 * sigma)  # crisper than the lips
    # Teeth catch light at the top and fall into shadow towards their edges.
    teeth_rows = np.clip((patch.rows() - middle[:, 1].mean()) / max(teeth_height, 1.0), 0, 1)
    teeth_shade = (1.0 - 0.3 * teeth_rows**2)[:, None, None] * side_shade
    interior += (_TEETH_COLOR * teeth_shade - interior) * upper_teeth[..., None] * 0.92
    if gap > 0.035 * face_height:
        bottom = lower[3:-3]
        lower_teeth = patch.fill(np.concatenate([bottom, bottom[::-1] - [0, 0.3 * teeth_height]]), sigma)
        interior += (_TEETH_COLOR * 0.7 * side_shade - interior) * lower_teeth[..., None] * 0.6
    patch.composite(interior, mouth_mask)


def _paint_eyelids(region: np.ndarray, moved: np.ndarray, prepared: PreparedPortrait, blink: float) -> None:
    """Lower each upper eyelid over the eye, in place: skin of the lid's own colour, a lash line at its edge.

    The warp alone cannot close an eye (that would squeeze the eye to nothing, which a backward
    warp cannot express), so it brings the lid skin part way down and this paints the rest."""
    if blink < 0.05:
        return
    warped_share = motion_basis.BLINK_WARP_SHARE * blink
    cover = float(np.clip((blink - warped_share) / max(1.0 - warped_share, 1e-3), 0, 1))
    face_height = prepared.face.face_height
    for (upper_ids, lower_ids), (outer, inner), skin in zip(lm.EYELID_PAIRS, lm.EYE_CORNERS, prepared.eyelid_colors):
        upper, lower = moved[upper_ids], moved[lower_ids]
        lid_edge = upper + (lower - upper) * cover
        corners = moved[[outer, inner]]
        lid = np.concatenate([corners[:1], upper, corners[1:], lid_edge[::-1]])
        patch = _Patch(region, np.concatenate([lid, lower]))
        if patch.empty:
            continue
        eye_width = float(np.linalg.norm(corners[1] - corners[0]))
        sigma = 0.4 + 0.02 * eye_width
        coverage = patch.fill(lid, sigma)
        # Skin shades darker towards the lid's edge; the lashes draw a dark line along it.
        rows = np.clip((patch.rows() - upper[:, 1].mean()) / max(float((lid_edge - upper)[:, 1].max()), 1.0), 0, 1)
        color = np.broadcast_to(skin * (1.0 - 0.18 * rows)[:, None, None], patch.shape + (3,)).copy()
        lash_width = max(0.7, 0.007 * face_height) * cover
        lashes = patch.fill(np.concatenate([corners[:1], lid_edge, corners[1:], lid_edge[::-1] - [0, lash_width]]), sigma)
        color += (_LASH_COLOR - color) * lashes[..., None] * 0.7
        patch.composite(color, np.maximum(coverage, lashes * cover))
