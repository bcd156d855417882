"""Audio-driven dense warp of a portrait around its MediaPipe face mesh.

Once per portrait: landmarks (the portrait enlarged first when its face is small), a region of
interest around the face, a soft matte of the head and neck, and for each elementary motion
(motion_basis.BASES) a smooth forward displacement field on a coarse grid, interpolated from the
landmark displacements with a thin-plate spline and multiplied by the matte (the background never
moves). Per frame: the coefficient-weighted sum of those fields, inverted on the coarse grid (so
large motions such as closing an open mouth land where the landmarks say), upsampled and applied
with cv2.remap. Blinks are a local warp of the lid skin alone, in the portrait's own coordinates.
The mouth's inside is the portrait's own (its upper teeth move with the upper lip, the lower with
the lower lip); only what the portrait never showed is painted: a shaded cavity, a tongue, and
teeth for a portrait whose lips were closed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Optional

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from ...media import landmarks as lm
from ...media.landmarks import FaceLandmarks, FaceLocator, FaceSelector, square_around
from ...media.speech_motion import FaceMotion
from . import motion_basis

log = logging.getLogger(__name__)

MAX_LIP_GAP = 0.085  # inner-lip opening of a wide-open mouth, in face heights
MAX_LIP_ROUND = 0.22  # share of the mouth's width lost to full rounding
ROI_SCALE = 1.9  # warped region: this times the face's landmark extent
GRID_CELLS = 96  # the fields are interpolated on this many cells across the region, then upsampled
MIN_OUTPUT_SIDE = 256  # an enlarged portrait is at least this many pixels a side
_BORDER_ANCHORS = 24  # zero-motion anchors on each side of the region keep its edge seamless
_INVERSION_STEPS = 2  # fixed-point steps that turn the forward field into the backward one
_OPEN_INTERIOR = 0.012  # a lip gap above this (face heights) shows an inside worth keeping
_TEETH_OVER_LIPS = 1.2  # teeth are at least this much brighter than the lips around them
_CAVITY_MEETS = 0.015  # a dark band taller than this between the teeth means the jaw is open
_INNER_LIP_POLYGON = lm.INNER_LIP_UPPER + lm.INNER_LIP_LOWER[-2:0:-1]
_TEETH_COLOR = np.array([238, 228, 210], np.float32)
_CAVITY_TINT = np.array([1.0, 0.6, 0.6], np.float32)  # a mouth's inside is redder than its lips
_TONGUE_TINT = np.array([0.95, 0.55, 0.55], np.float32)
_BLINK = motion_basis.BASES.index("blink")
_LASH_COLOR = np.array([45, 32, 30], np.float32)
_IRIS = set(range(468, 478))  # iris points duplicate the eye's
_LIP_POINTS = sorted(set(lm.OUTER_LIP_UPPER + lm.OUTER_LIP_LOWER + lm.INNER_LIP_UPPER + lm.INNER_LIP_LOWER))


@dataclass(frozen=True)
class MouthInterior:
    """What the portrait shows between its lips. Curves are (11, 2) region pixels, corner to corner."""

    upper: np.ndarray  # inner edge of the upper lip
    lower: np.ndarray  # inner edge of the lower lip
    shows_inside: bool  # lips apart far enough to keep what is between them
    split: float  # 0..1 down the opening: above hangs from the upper lip, below rides on the lower
    jaw_open: bool  # a dark cavity between the teeth: the mouth is open, not a smile with teeth together
    shows_teeth: bool  # something much brighter than the lips between them
    greyscale: bool  # a black-and-white portrait: what is painted is grey too
    lip_color: np.ndarray  # (3,) float32, median colour of the lips


@dataclass(frozen=True)
class PreparedPortrait:
    """Everything that depends only on the portrait. Arrays in the region's pixel coordinates."""

    image: np.ndarray  # (H, W, 3) RGB uint8, the full portrait (enlarged when its face was small)
    scale: float  # image size over the portrait's as sent (1.0 unless enlarged)
    face: FaceLandmarks
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 in the full image
    landmark_basis: np.ndarray  # (K, 478, 2) float32, forward displacement per unit of each basis
    field_basis: np.ndarray  # (K, gh, gw, 2) float32, forward displacement per unit on the grid, pixels
    grid_nodes: np.ndarray  # (gh, gw, 2) float32, each node's own grid coordinates (x, y)
    cell: float  # grid spacing, pixels
    base_map: np.ndarray  # (h, w, 2) float32, identity sampling coordinates of the region
    motion_matte: np.ndarray  # (h, w) float32: where pixels may move (0 outside head and neck)
    source_lip_gap: float  # inner-lip opening of the portrait, face heights
    rest_lip_gap: float  # opening in a pause: the portrait's own when it shows teeth with the jaw closed, else 0
    mouth: MouthInterior
    lid_band_tops: tuple[np.ndarray, ...]  # (7,) per eye: top of the skin a blink may move (crease or below a rim)
    lid_colors: tuple[np.ndarray, ...]  # (3,) float32 per eye: the lid's skin colour
    glasses: bool  # rims found around both eyes


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


def _forward_fields(points: np.ndarray, displacements: np.ndarray, excluded: list[int], width: int, height: int,
                    cell: float) -> np.ndarray:
    """Thin-plate-spline interpolation of landmark displacements on a coarse grid: (K, gh, gw, 2)."""
    keep = np.setdiff1d(np.arange(len(points)), excluded)
    anchors = _border_anchors(width, height)
    scale = float(max(width, height))
    controls = np.concatenate([points[keep], anchors]) / scale
    n_bases = displacements.shape[0]
    values = np.concatenate(
        [displacements[:, keep].transpose(1, 0, 2).reshape(len(keep), -1), np.zeros((len(anchors), n_bases * 2))]
    )
    spline = RBFInterpolator(controls, values, kernel="thin_plate_spline", smoothing=1e-6)
    grid_w, grid_h = int(np.ceil(width / cell)) + 1, int(np.ceil(height / cell)) + 1
    gy, gx = np.mgrid[0:grid_h, 0:grid_w].astype(np.float32) * cell
    sample = np.stack([gx.ravel(), gy.ravel()], 1) / scale
    fields = spline(sample).reshape(grid_h, grid_w, n_bases, 2).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(fields, dtype=np.float32)


def _head_matte(locator: FaceLocator, region: np.ndarray, face: FaceLandmarks) -> np.ndarray:
    """(h, w) float32: the person's silhouette down to the neck, feathered; the face oval is always in."""
    height = face.face_height
    try:
        person = locator.person_matte(region)
    except RuntimeError as exc:
        # MediaPipe's segmenter can fail to start in some processes (seen beside coqui's torch build);
        # the head then moves inside its outline widened by a quarter face, hair tips may stay behind.
        log.warning("person segmentation failed; the head matte follows the face outline (%s)", exc)
        outline = np.zeros(region.shape[:2], np.uint8)
        cv2.fillPoly(outline, [np.round(face.points[lm.FACE_OVAL]).astype(np.int32)], 1)
        widen = max(3, int(0.25 * height)) | 1
        person = cv2.dilate(outline, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (widen, widen))).astype(np.float32)
    chin_y = face.points[lm.CHIN_BOTTOM, 1]
    rows = np.arange(region.shape[0], dtype=np.float32)
    # Head and neck: full weight to half a face height under the chin, fading out over a quarter more.
    neck = np.clip(1.0 - (rows - (chin_y + 0.5 * height)) / (0.25 * height), 0.0, 1.0)[:, None]
    oval = np.zeros(region.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(face.points[lm.FACE_OVAL]).astype(np.int32)], 1)
    matte = np.maximum(person * neck, oval.astype(np.float32))
    matte = cv2.dilate(matte, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))  # keep hair tips inside
    matte = cv2.GaussianBlur(matte, (0, 0), 0.03 * height)
    return np.clip((matte - 0.05) / 0.9, 0.0, 1.0)  # the segmenter's faint doubts and the blur's tails are background


def _lip_color(image: np.ndarray, face: FaceLandmarks) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    outer = np.round(face.points[lm.OUTER_LIP_UPPER + lm.OUTER_LIP_LOWER[::-1]]).astype(np.int32)
    inner = np.round(face.points[_INNER_LIP_POLYGON]).astype(np.int32)
    cv2.fillPoly(mask, [outer], 1)
    cv2.fillPoly(mask, [inner], 0)
    pixels = image[mask.astype(bool)]
    return np.median(pixels, axis=0).astype(np.float32) if len(pixels) else np.array([150, 80, 80], np.float32)


def _luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _mouth_interior(region: np.ndarray, face: FaceLandmarks) -> MouthInterior:
    """Where the portrait's upper and lower teeth meet, and whether a dark cavity (an open jaw) lies between.

    The opening is sampled down the middle half of the mouth. Rows much brighter than the darkest
    are teeth: the first bright run from the top hangs from the upper lip, everything below it rides
    on the lower lip; dark rows between the teeth are cavity."""
    upper, lower = face.points[lm.INNER_LIP_UPPER], face.points[lm.INNER_LIP_LOWER]
    gap = face.lip_gap()
    color = _lip_color(region, face)
    greyscale = bool(np.abs(region[::4, ::4].astype(np.int16) - region[::4, ::4, :1]).max() <= 2)
    if gap < _OPEN_INTERIOR:
        return MouthInterior(upper, lower, False, 0.5, False, False, greyscale, color)
    xs = np.linspace(upper[0, 0], upper[-1, 0], 41)[10:31]  # the middle half, corner to corner
    steps = np.linspace(0.0, 1.0, 17)
    top, bottom = _curve_at(xs, upper), _curve_at(xs, lower)
    map_y = (top[None, :] + steps[:, None] * (bottom - top)[None, :]).astype(np.float32)
    map_x = np.broadcast_to(xs[None, :], map_y.shape).astype(np.float32)
    samples = cv2.remap(np.ascontiguousarray(region), map_x, map_y, cv2.INTER_LINEAR)
    profile = np.median(_luminance(samples), axis=1)[1:-1]  # (15,) down the opening, lip edges left out
    bright = profile > 0.6 * profile.max()
    first = int(np.argmax(bright)) if bright.any() else len(profile)
    end = first
    while end < len(profile) and bright[end]:
        end += 1
    split = float((end + 1) / (len(profile) + 1)) if first < len(profile) // 2 else 0.0
    dark_share = float(np.mean(profile < 0.45 * profile.max()))
    jaw_open = dark_share * gap > _CAVITY_MEETS
    shows_teeth = bool(profile.max() > _TEETH_OVER_LIPS * float(_luminance(color[None])[0]))
    # Lips parted on nothing but shadow (or a mesh that parts them where the photo does not) have no
    # inside worth keeping: they are treated as closed, and an opening is painted.
    shows_inside = shows_teeth or jaw_open
    return MouthInterior(upper, lower, shows_inside, split, jaw_open, shows_teeth, greyscale, color)


def _eyelids(region: np.ndarray, face: FaceLandmarks) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], bool]:
    """Per eye: the top of the lid skin a blink may move ((7,) y: the crease, or just under a rigid
    edge such as a glasses rim found between crease and lid) and the lid's skin colour ((3,)); and
    whether rims run above and below both eyes (glasses)."""
    luminance = cv2.GaussianBlur(_luminance(region), (0, 0), 0.7)
    vertical_gradient = np.abs(cv2.Sobel(luminance, cv2.CV_32F, 0, 1, ksize=3))
    strong = np.percentile(vertical_gradient, 97)
    tops, colors, rims = [], [], []
    for (upper_ids, lower_ids), crease_ids, (outer, inner) in zip(lm.EYELID_PAIRS, lm.EYELID_CREASES, lm.EYE_CORNERS):
        upper, lower, crease = face.points[upper_ids], face.points[lower_ids], face.points[crease_ids]
        corners = face.points[[outer, inner]]
        eye_width = float(np.linalg.norm(corners[1] - corners[0]))
        # A rim spans past the eye's corners, where the lid's own edge and lashes end.
        left, right = corners[:, 0].min() - 0.25 * eye_width, corners[:, 0].max() + 0.25 * eye_width
        columns = np.clip(np.round(np.linspace(left, right, 13)).astype(int), 0, region.shape[1] - 1)

        def rim_rows(first: int, last: int) -> list[int]:
            rows = range(max(first, 0), min(last, region.shape[0]))
            return [row for row in rows if (vertical_gradient[row, columns] > strong).mean() >= 0.7]

        lid_top, lid_bottom = float(upper[:, 1].min()), float(lower[:, 1].max())
        above = rim_rows(int(lid_top - 0.9 * eye_width), int(lid_top) - 1)
        below = rim_rows(int(lid_bottom) + 2, int(lid_bottom + 0.9 * eye_width))
        top = crease[:, 1].copy()
        in_band = [row for row in above if row > crease[:, 1].min()]
        if in_band:  # a rim crosses the lid's skin: the moving band starts under it
            top = np.maximum(top, max(in_band) + 2.0)
        tops.append(np.minimum(top, upper[:, 1] - 0.5).astype(np.float32))
        rims.append(bool(above) and bool(below))
        # Skin colour: the brighter half of the skin just above the crease (brows and lashes are darker).
        mask = np.zeros(region.shape[:2], np.uint8)
        band = np.concatenate([crease, crease[::-1] - [0, 0.2 * eye_width]])
        cv2.fillPoly(mask, [np.round(band).astype(np.int32)], 1)
        pixels = region[mask.astype(bool)].astype(np.float32)
        if len(pixels):
            light = pixels[_luminance(pixels) >= np.median(_luminance(pixels))]
            colors.append(np.median(light, axis=0).astype(np.float32))
        else:
            colors.append(np.array([200, 160, 140], np.float32))
    return tuple(tops), tuple(colors), all(rims)


def _weighted_sum(weights: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """sum_k weights[k] * basis[k] over a (K, ...) basis, skipping zero weights. A plain loop of
    in-place multiply-adds: BLAS's gemv for so small a product waits on waking its thread pool
    (about 1 ms a frame between OpenCV calls on a busy machine)."""
    total = np.zeros(basis.shape[1:], basis.dtype)
    for weight, part in zip(weights.tolist(), basis):
        if weight != 0.0:
            total += np.float32(weight) * part if basis.dtype == np.float32 else weight * part
    return total


def _invert(forward: np.ndarray, nodes: np.ndarray, cell: float) -> np.ndarray:
    """Backward field b with x + b(x) + forward(x + b(x)) = x, by fixed-point steps on the grid.
    forward, nodes: (gh, gw, 2); returns (gh, gw, 2) pixels."""
    backward = -forward
    for _ in range(_INVERSION_STEPS):
        at = nodes + backward * (1.0 / cell)
        backward = cv2.remap(forward, at, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        np.negative(backward, out=backward)
    return backward


def _enlarge_small_face(
    image: np.ndarray, box: tuple[int, int, int, int], workable_side: int, max_side: int
) -> tuple[np.ndarray, tuple[int, int, int, int], float]:
    """The portrait enlarged so the face's box reaches workable_side (and the image MIN_OUTPUT_SIDE a
    side), cropped around the face first when the whole image would grow past max_side."""
    face_side = min(box[2] - box[0], box[3] - box[1])
    if face_side >= workable_side:
        return image, box, 1.0
    scale = max(workable_side / face_side, MIN_OUTPUT_SIDE / min(image.shape[:2]))
    if max(image.shape[:2]) * scale > max_side:
        crop = square_around(box, image.shape, scale=max_side / scale / max(box[2] - box[0], box[3] - box[1]))
        x0, y0, x1, y1 = crop
        image = image[y0:y1, x0:x1]
        box = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    width, height = round(image.shape[1] * scale) // 2 * 2, round(image.shape[0] * scale) // 2 * 2
    enlarged = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    scaled_box = tuple(int(round(v * scale)) for v in box)
    return enlarged, scaled_box, scale


class MeshWarpAnimator:
    """Prepares portraits and renders frames. Stateless per request; safe to share between threads.

    locator: finds faces down to its min_face_side (smaller ones are refused); faces smaller than
    workable_face_side are enlarged to it first."""

    def __init__(self, locator: FaceLocator, workable_face_side: int = 48, max_output_side: int = 1024):
        self.locator = locator
        self.workable_face_side = workable_face_side
        self.max_output_side = max_output_side

    def prepare(self, image: np.ndarray, face: Optional[FaceSelector] = None) -> PreparedPortrait:
        """Landmarks and motion fields of a portrait (H, W, 3) RGB uint8. Raises NoFaceError."""
        box = self.locator.detect_box(image, face)
        image, box, scale = _enlarge_small_face(image, box, self.workable_face_side, self.max_output_side)
        found = self.locator.landmarks_in_box(image, box)
        x0, y0, x1, y1 = _region_of_interest(found, image.shape)
        width, height = x1 - x0, y1 - y0
        region = image[y0:y1, x0:x1]
        local = FaceLandmarks(points=found.points - np.array([x0, y0], np.float32), depth=found.depth, box=found.box)
        landmark_basis = motion_basis.all_bases(local)
        mouth = _mouth_interior(region, local)
        # Upper and lower inner-lip points of a closed mouth sit on top of each other yet move apart:
        # both would fold the field, so it follows the lower ones (the mouth composite covers the gap).
        excluded = sorted(_IRIS | (set() if mouth.shows_inside else set(lm.INNER_LIP_UPPER[1:-1])))
        field_input = landmark_basis.copy()
        field_input[_BLINK] = 0.0  # blinks are warped locally, lid skin only
        cell = float(max(width, height)) / GRID_CELLS
        fields = _forward_fields(local.points, field_input, excluded, width, height, cell)
        grid_h, grid_w = fields.shape[1:3]
        matte = _head_matte(self.locator, region, local)
        coarse_matte = cv2.resize(matte, (grid_w, grid_h), interpolation=cv2.INTER_AREA)
        fields *= coarse_matte[None, :, :, None]
        gy, gx = np.mgrid[0:grid_h, 0:grid_w].astype(np.float32)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        lid_tops, lid_colors, glasses = _eyelids(region, local)
        source_gap = local.lip_gap()
        return PreparedPortrait(
            image=image,
            scale=scale,
            face=local,
            roi=(x0, y0, x1, y1),
            landmark_basis=landmark_basis,
            field_basis=np.ascontiguousarray(fields),
            grid_nodes=np.stack([gx, gy], axis=-1),
            cell=cell,
            base_map=np.stack([xs, ys], axis=-1),
            motion_matte=cv2.resize(coarse_matte, (width, height), interpolation=cv2.INTER_LINEAR),
            source_lip_gap=source_gap,
            # A smile keeps its teeth in pauses; lips parted on darkness (or an open jaw) close.
            rest_lip_gap=source_gap if mouth.shows_teeth and not mouth.jaw_open else 0.0,
            mouth=mouth,
            lid_band_tops=lid_tops,
            lid_colors=lid_colors,
            glasses=glasses,
        )

    @staticmethod
    def jaw_weight(prepared: PreparedPortrait, lip_gap: "float | np.ndarray") -> "float | np.ndarray":
        """The jaw coefficient that opens the inner lips to lip_gap (face heights) between their midpoints."""
        jaw = prepared.landmark_basis[motion_basis.BASES.index("jaw")]
        per_unit = float(jaw[lm.LOWER_LIP_MID, 1] - jaw[lm.UPPER_LIP_MID, 1]) / prepared.face.face_height
        return (lip_gap - prepared.source_lip_gap) / per_unit

    @classmethod
    def coefficients(
        cls, prepared: PreparedPortrait, motion: FaceMotion, *, still: bool = False, expression_scale: float = 1.0
    ) -> np.ndarray:
        """(n_frames, K) weights of motion_basis.BASES for each frame. While speaking the lips move
        between closed and wide open; in pauses they go to the rest opening: the portrait's own
        (a smile keeps its teeth), or closed when its jaw was open."""
        mouth = motion.mouth
        lip_round = np.clip(mouth.lip_round * expression_scale, 0, 1)
        opening_range = max(MAX_LIP_GAP, prepared.rest_lip_gap + 0.5 * MAX_LIP_GAP)
        speech_gap = np.clip(mouth.lip_open * expression_scale, 0, 1.2) * opening_range * (1 - 0.35 * lip_round)
        speaking = motion.speaking
        target_gap = speaking * speech_gap + (1 - speaking) * prepared.rest_lip_gap
        jaw = cls.jaw_weight(prepared, target_gap)
        head = np.zeros((3, motion.n_frames), np.float32) if still else np.stack(
            [motion.head_pitch, motion.head_yaw, motion.head_roll]
        )
        return np.stack([jaw, MAX_LIP_ROUND * lip_round, motion.blink, *head], axis=1).astype(np.float32)

    def render(self, prepared: PreparedPortrait, weights: np.ndarray) -> np.ndarray:
        """One frame (H, W, 3) RGB uint8 for weights (K,)."""
        x0, y0, x1, y1 = prepared.roi
        width, height = x1 - x0, y1 - y0
        region = prepared.image[y0:y1, x0:x1]
        source = region
        blink = float(weights[_BLINK])
        if blink > 0.02:
            source = region.copy()
            _close_eyelids(source, region, prepared, blink)
        backward = _invert(_weighted_sum(weights, prepared.field_basis), prepared.grid_nodes, prepared.cell)
        field = cv2.resize(backward, (width, height), interpolation=cv2.INTER_LINEAR)
        sampling = prepared.base_map + field
        warped = cv2.remap(source, sampling, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        moved = prepared.face.points + _weighted_sum(weights, prepared.landmark_basis)
        _composite_mouth(warped, region, moved, prepared)
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


def _curve_at(columns: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """y of a curve (n, 2) at each x of columns, holding its end values beyond its corners."""
    if curve[0, 0] > curve[-1, 0]:  # listed right to left (a face seen upside down)
        curve = curve[::-1]
    return np.interp(columns, curve[:, 0], curve[:, 1])


def _composite_mouth(warped: np.ndarray, region: np.ndarray, moved: np.ndarray, prepared: PreparedPortrait) -> None:
    """Redraw the lips and what lies between them, in place, column by column: each lip is its own
    band of the portrait stretched between its moved outer and inner edges (so lips meet when
    they close, whatever lay between them), the inside is the portrait's own where it has one (what
    hung from the upper lip moves with it, what rode on the lower lip with that), and painted cavity,
    tongue and (for a portrait with closed lips) teeth where it has none."""
    face_height = prepared.face.face_height
    mouth = prepared.mouth
    lips = _LIP_POINTS
    if float(np.abs(moved[lips] - prepared.face.points[lips]).max()) < 0.25:
        return  # the mouth is where the portrait has it: the warp already shows it as it is
    outer_upper, outer_lower = moved[lm.OUTER_LIP_UPPER], moved[lm.OUTER_LIP_LOWER]
    upper, lower = moved[lm.INNER_LIP_UPPER], moved[lm.INNER_LIP_LOWER]
    outline = np.concatenate([outer_upper, outer_lower[-2:0:-1]])
    patch = _Patch(warped, outline, margin=2)
    if patch.empty:
        return
    mouth_width = float(np.linalg.norm(upper[-1] - upper[0]))
    sigma = 0.5 + 0.012 * mouth_width
    columns, rows = patch.columns(), patch.rows()[:, None]
    lip_top, top, bottom, lip_bottom = (_curve_at(columns, curve) for curve in (outer_upper, upper, lower, outer_lower))
    # Where each column came from: the same share of the way between the outer corners.
    share = (columns - outer_upper[0, 0]) / max(outer_upper[-1, 0] - outer_upper[0, 0], 1.0)
    source_outer_upper, source_outer_lower = prepared.face.points[lm.OUTER_LIP_UPPER], prepared.face.points[lm.OUTER_LIP_LOWER]
    source_x = (source_outer_upper[0, 0] + share * (source_outer_upper[-1, 0] - source_outer_upper[0, 0])).astype(np.float32)
    source_lip_top, source_top, source_bottom, source_lip_bottom = (
        _curve_at(source_x, curve) for curve in (source_outer_upper, mouth.upper, mouth.lower, source_outer_lower)
    )
    from_upper_lip = source_lip_top + (rows - lip_top) * (source_top - source_lip_top) / np.maximum(top - lip_top, 0.5)
    from_lower_lip = source_bottom + (rows - bottom) * (source_lip_bottom - source_bottom) / np.maximum(lip_bottom - bottom, 0.5)
    if mouth.shows_inside:
        split = source_top + mouth.split * (source_bottom - source_top)
        hanging, riding = split - source_top, source_bottom - split
        upper_depth = top + hanging - rows  # > 0 inside what hangs from the upper lip
        lower_depth = rows - (bottom - riding)
        inside_source = np.where(upper_depth > 0, source_top + (rows - top), source_bottom - (bottom - rows))
        own_alpha = np.clip(np.maximum(upper_depth, lower_depth) + 1.0, 0.0, 1.0)
    else:
        inside_source = np.broadcast_to(source_top, (len(rows), len(columns)))
        own_alpha = np.zeros((len(rows), len(columns)), np.float32)
    map_y = np.where(rows < top, from_upper_lip, np.where(rows > bottom, from_lower_lip, inside_source)).astype(np.float32)
    map_x = np.broadcast_to(source_x[None, :], map_y.shape).astype(np.float32)
    color = cv2.remap(np.ascontiguousarray(region), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    color = color.astype(np.float32)
    gap = float(np.max(lower[:, 1] - upper[:, 1]))
    if gap >= 0.004 * face_height:
        inner_share = np.clip((columns - upper[0, 0]) / max(upper[-1, 0] - upper[0, 0], 1.0), 0.0, 1.0)
        cavity = _painted_cavity(patch, rows, top, bottom, inner_share, gap, mouth_width, face_height, mouth)
        opening = patch.fill(moved[_INNER_LIP_POLYGON])  # anti-aliased; the outline's blur softens the rest
        painted = opening * (1.0 - own_alpha)
        color += (cavity - color) * painted[..., None]
    patch.composite(color, patch.fill(outline, sigma))


def _painted_cavity(patch: "_Patch", rows: np.ndarray, top: np.ndarray, bottom: np.ndarray, across: np.ndarray,
                    gap: float, mouth_width: float, face_height: float, mouth: MouthInterior) -> np.ndarray:
    """(h, w, 3) float32 inside of a mouth: dark towards the back, a tongue low in the middle once open
    (grey in a black-and-white portrait), and, for a portrait that showed no teeth, lit upper teeth (lower ones barely) with the gaps
    between them. rows: (h, 1) region y; top, bottom, across: (w,) per column."""
    depth = np.clip((rows - top) / np.maximum(bottom - top, 1.0), 0.0, 1.0)  # 0 upper lip .. 1 lower lip
    sideways = np.abs(across - 0.5)[None, :] * 2  # 0 centre .. 1 corners
    # Light falls in past the lips: brightest near them, darkest at the back, in the middle.
    back = np.exp(-(((depth - 0.55) / 0.35) ** 2)) * (1 - 0.5 * sideways)
    shade = 0.26 - 0.17 * back
    interior = mouth.lip_color * _CAVITY_TINT * shade[..., None]
    openness = np.clip((gap / face_height - 0.025) / 0.04, 0.0, 1.0)
    if openness > 0:
        # A hint of tongue low in the mouth, dim and in shadow, parted from the lower lip by the dark
        # line the lower teeth cast (a lip-bright tongue would read as a higher lower lip).
        tongue = np.clip(1 - ((depth - 0.8) / 0.3) ** 2 - (sideways / 0.7) ** 2, 0.0, 1.0) * openness
        tongue *= np.clip((0.97 - depth) / 0.08, 0.0, 1.0)
        tongue_color = mouth.lip_color * _TONGUE_TINT * (0.22 + 0.12 * depth[..., None])
        interior += (tongue_color - interior) * (0.7 * tongue)[..., None]
    if not mouth.shows_teeth:
        teeth_height = min(0.4 * gap, 0.03 * face_height)
        tooth_width = max(mouth_width / 9.0, 1.0)
        boundary = np.abs(((patch.columns() - patch.columns().mean()) / tooth_width + 0.5) % 1.0 - 0.5)
        separation = 1.0 - 0.3 * np.exp(-((boundary / 0.12) ** 2))  # darker seams between teeth
        side_shade = np.clip(1.0 - 0.6 * sideways**2, 0.3, 1.0)
        lit = np.clip((rows - top) / max(teeth_height, 1.0), 0.0, 1.0)
        teeth_shade = ((1.0 - 0.3 * lit**2) * side_shade * separation[None, :])[..., None]
        upper_teeth = np.clip((top + teeth_height - rows) + 0.5, 0.0, 1.0) * np.clip(1.0 - sideways * 1.1, 0, 1) ** 0.3
        interior += (_TEETH_COLOR * teeth_shade - interior) * (0.92 * upper_teeth)[..., None]
        if gap > 0.035 * face_height:  # the lower teeth mostly hide behind the lower lip
            lower_height = 0.25 * teeth_height
            lower_teeth = np.clip((rows - (bottom - lower_height)) + 0.5, 0.0, 1.0) * np.clip(1.0 - sideways * 1.4, 0, 1)
            interior += (_TEETH_COLOR * 0.6 * teeth_shade - interior) * (0.55 * lower_teeth)[..., None]
    if mouth.greyscale:
        interior = np.repeat(_luminance(interior)[..., None], 3, axis=-1)
    return interior


def _close_eyelids(out: np.ndarray, region: np.ndarray, prepared: PreparedPortrait, blink: float) -> None:
    """Bring each upper lid down over its eye by `blink` (0..1), in place, in the portrait's own
    coordinates: the lid's skin between its band top (crease) and edge stretches to the new edge, a
    lash line follows it; the eye stays where it is and is covered. Nothing above the band (brows,
    rims) or below the lower lid moves."""
    face = prepared.face
    face_height = face.face_height
    for (upper_ids, lower_ids), band_top, skin, (outer, inner) in zip(
        lm.EYELID_PAIRS, prepared.lid_band_tops, prepared.lid_colors, lm.EYE_CORNERS
    ):
        corners = face.points[[outer, inner]]
        upper = np.concatenate([corners[:1], face.points[upper_ids], corners[1:]])
        lower = np.concatenate([corners[:1], face.points[lower_ids], corners[1:]])
        top_curve = np.concatenate([corners[:1], np.stack([face.points[upper_ids][:, 0], band_top], 1), corners[1:]])
        patch = _Patch(out, np.concatenate([top_curve, lower]), margin=2)
        if patch.empty:
            continue
        columns, rows = patch.columns(), patch.rows()[:, None]
        top, lid, bottom = _curve_at(columns, top_curve), _curve_at(columns, upper), _curve_at(columns, lower)
        inside = (columns >= corners[:, 0].min()) & (columns <= corners[:, 0].max())
        edge = lid + blink * (bottom - lid)
        stretch = (lid - top) / np.maximum(edge - top, 1e-3)
        in_band = (rows >= top) & (rows <= edge) & inside[None, :]
        map_y = np.where(in_band, top + (rows - top) * stretch, rows).astype(np.float32)
        map_x = np.broadcast_to(columns[None, :], map_y.shape).astype(np.float32)
        lid_skin = cv2.remap(np.ascontiguousarray(region), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        color = lid_skin.astype(np.float32)
        # Where the lid now covers the eye it is skin: its own colour, shading towards the edge (the
        # stretched texture would streak).
        # The lid's own crease shadow and lashes, stretched down, would read as a still-open eye.
        lid_start = top + 0.5
        covering = np.clip(np.minimum(rows - lid_start, edge - rows) + 1.0, 0.0, 1.0) * inside[None, :] * min(1.0, 3 * blink)
        towards_edge = np.clip((rows - lid_start) / np.maximum(edge - lid_start, 1.0), 0.0, 1.0)
        painted = skin * (1.0 - 0.15 * towards_edge**2)[..., None]
        covering = cv2.GaussianBlur(covering.astype(np.float32), (0, 0), 0.6)  # no seam with the skin around
        color += (painted - color) * (0.92 * covering)[..., None]
        # Lashes: a dark line along the lowered edge, growing with the closure.
        lash_width = max(1.0, 0.01 * face_height)
        lashes = np.clip(1.0 - np.abs(rows - edge) / lash_width, 0.0, 1.0) * inside[None, :] * min(1.0, 2 * blink)
        color += (_LASH_COLOR - color) * (0.85 * lashes)[..., None]
        out[patch.y0 : patch.y1, patch.x0 : patch.x1] = np.clip(color, 0, 255).astype(np.uint8)


