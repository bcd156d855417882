"""Source crop from MediaPipe face-mesh points, the eye / lip open ratios, and the paste-back mask.

The crop follows upstream LivePortrait's (`crop_image` with scale 2.3, vx 0, vy -0.125, 512 px):
a square aligned with the face's eyes-to-mouth axis, its side 2.3 times the larger side of the
rotated box around the face's landmarks, shifted up by 0.125 of that side. Upstream draws the
box around InsightFace's 106 points (jaw contour, brows, eyes, nose, mouth); we use the
MediaPipe points of the same parts, so the crops frame the face the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CROP_SCALE = 2.3
CROP_VX_RATIO = 0.0
CROP_VY_RATIO = -0.125  # negative: move the box up, to keep the forehead
CROP_SIZE = 512  # the render size; the networks read a 256 px version
NETWORK_INPUT_SIZE = 256

# MediaPipe face-mesh indices. The jaw contour from ear to ear over the chin (the face oval
# without its forehead arc, which InsightFace's 106 points do not reach), both brows, eyes,
# nose and outer lips.
_JAW_CONTOUR = [127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397,
                288, 361, 323, 454, 356]
_BROWS = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 336, 296, 334, 293, 300, 276, 283, 282, 295, 285]
_EYES = [33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380]
_NOSE = [168, 6, 197, 195, 5, 4, 1, 98, 327, 2]
_LIPS = [61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91]
CROP_POINTS = _JAW_CONTOUR + _BROWS + _EYES + _NOSE + _LIPS

# Upstream's ratios on its 203-point model: eye = lid gap / eye width (upper-lid middle to
# lower-lid middle over corner to corner); lip = inner-lip gap / mouth width. Image-left eye first.
LEFT_EYE = (159, 145, 33, 133)  # upper lid, lower lid, outer corner, inner corner
RIGHT_EYE = (386, 374, 263, 362)
INNER_LIPS = (13, 14)
MOUTH_CORNERS = (61, 291)
_EYE_CENTRES = ([33, 133, 159, 145], [263, 362, 386, 374])


@dataclass(frozen=True)
class CropTransform:
    """Similarity transforms between the full image and the 512 px crop (3x3, pixel coords)."""

    original_to_crop: np.ndarray
    crop_to_original: np.ndarray
    size: int = CROP_SIZE


def crop_transform(points: np.ndarray, size: int = CROP_SIZE, scale: float = CROP_SCALE,
                   vx_ratio: float = CROP_VX_RATIO, vy_ratio: float = CROP_VY_RATIO) -> CropTransform:
    """The rotation-aligned square crop of a face; points (478, 2) pixels of the full image."""
    points = points.astype(np.float64)
    eye_centre = (points[_EYE_CENTRES[0]].mean(0) + points[_EYE_CENTRES[1]].mean(0)) / 2
    mouth_centre = points[list(MOUTH_CORNERS)].mean(0)
    # Axes of the face: uy from the eyes down to the mouth, ux perpendicular to it (to the right).
    uy = mouth_centre - eye_centre
    length = np.linalg.norm(uy)
    uy = uy / length if length > 1e-3 else np.array([0.0, 1.0])
    ux = np.array([uy[1], -uy[0]])
    rotation = np.stack([ux, uy])  # rows: face axes in image coordinates

    face = points[CROP_POINTS]
    anchor = face.mean(0)
    rotated = (face - anchor) @ rotation.T
    low, high = rotated.min(0), rotated.max(0)
    side = float((high - low).max()) * scale
    centre = anchor + rotation.T @ ((low + high) / 2)
    centre = centre + ux * (vx_ratio * side) + uy * (vy_ratio * side)

    # original -> crop: rotate the face axes onto the crop axes, scale side -> size, centre -> middle.
    s = size / side
    angle = math.atan2(ux[1], ux[0])
    cos, sin = math.cos(angle), math.sin(angle)
    linear = s * np.array([[cos, sin], [-sin, cos]])
    offset = np.array([size / 2, size / 2]) - linear @ centre
    original_to_crop = np.eye(3)
    original_to_crop[:2, :2], original_to_crop[:2, 2] = linear, offset
    return CropTransform(original_to_crop=original_to_crop, crop_to_original=np.linalg.inv(original_to_crop), size=size)


def warp_to_crop(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 crop; outside the image is black (as upstream)."""
    import cv2

    return cv2.warpAffine(image, transform.original_to_crop[:2], (transform.size, transform.size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def network_input(crop: np.ndarray) -> np.ndarray:
    """512 crop -> 256x256 uint8 (area interpolation, as upstream)."""
    import cv2

    return cv2.resize(crop, (NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE), interpolation=cv2.INTER_AREA)


def _distance(points: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(points[a] - points[b]))


def eye_open_ratios(points: np.ndarray) -> np.ndarray:
    """(2,) lid gap over eye width for the image-left and image-right eye (open eyes ~0.3)."""
    return np.array([_distance(points, top, bottom) / (_distance(points, outer, inner) + 1e-6)
                     for top, bottom, outer, inner in (LEFT_EYE, RIGHT_EYE)], dtype=np.float32)


def lip_open_ratio(points: np.ndarray) -> float:
    """Inner-lip gap over mouth width (closed ~0, wide open ~0.5+)."""
    return _distance(points, *INNER_LIPS) / (_distance(points, *MOUTH_CORNERS) + 1e-6)


def feather_mask(size: int = CROP_SIZE, margin: float = 0.12) -> np.ndarray:
    """(size, size) float32 in [0, 1]: 1 inside, a smooth fall to 0 over `margin` of the side at the
    borders, corners rounded. The render blends into the portrait through it."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    edge = np.minimum(coords, 1 - coords) / margin  # distance to the nearest border, in margins
    ramp = np.clip(edge, 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible seam at either end
    return np.outer(ramp, ramp).astype(np.float32)
