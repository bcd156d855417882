"""Portraits made from the astronaut for meshwarp's tests: an open mouth, glasses, a group, tiny faces."""
from __future__ import annotations

import cv2
import numpy as np

from runtime.media import landmarks as lm


def open_mouth(astronaut: np.ndarray, animator, lip_gap: float = 0.13) -> np.ndarray:
    """The astronaut with her jaw dropped (her teeth, then a dark mouth and tongue under them)."""
    from runtime.engines.meshwarp.motion_basis import BASES

    prepared = animator.prepare(astronaut)
    weights = np.zeros(len(BASES), np.float32)
    weights[BASES.index("jaw")] = animator.jaw_weight(prepared, lip_gap)
    return animator.render(prepared, weights)


def with_glasses(astronaut: np.ndarray, face: lm.FaceLandmarks) -> np.ndarray:
    """Dark rectangular rims around both eyes, joined by a bridge, drawn 2 px thick."""
    image = astronaut.copy()
    centres = []
    for (upper, lower), (outer, inner) in zip(lm.EYELID_PAIRS, lm.EYE_CORNERS):
        corners = face.points[[outer, inner]]
        width = float(np.linalg.norm(corners[1] - corners[0]))
        centre = face.points[upper + lower].mean(axis=0)
        half_w, top, bottom = 0.85 * width, 0.55 * width, 0.6 * width
        box = (int(centre[0] - half_w), int(centre[1] - top), int(centre[0] + half_w), int(centre[1] + bottom))
        cv2.rectangle(image, box[:2], box[2:], (25, 20, 20), 2, cv2.LINE_AA)
        centres.append((centre, half_w))
    (left, left_w), (right, right_w) = sorted(centres, key=lambda c: c[0][0])
    y = int((left[1] + right[1]) / 2 - 0.1 * left_w)
    cv2.line(image, (int(left[0] + left_w), y), (int(right[0] - right_w), y), (25, 20, 20), 2, cv2.LINE_AA)
    return image


def group(astronaut: np.ndarray) -> np.ndarray:
    """Three astronauts side by side on a grey wall, 240, 300 and 200 px tall (largest in the middle)."""
    canvas = np.full((340, 820, 3), (120, 125, 130), np.uint8)
    for height, x in ((240, 20), (300, 280), (200, 600)):
        canvas[20 : 20 + height, x : x + height] = cv2.resize(astronaut, (height, height), interpolation=cv2.INTER_AREA)
    return canvas


def shrunk(astronaut: np.ndarray, side: int, canvas: int = 256) -> np.ndarray:
    """The astronaut shrunk to side x side in the middle of a canvas x canvas grey square."""
    image = np.full((canvas, canvas, 3), (200, 200, 205), np.uint8)
    small = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    offset = (canvas - side) // 2
    image[offset : offset + side, offset : offset + side] = small
    return image
