"""Face landmarks with MediaPipe (its wheel ships the models: nothing is downloaded).

The face-mesh's own detector is short-range and misses faces that fill a small part of a wide or
tall image, so the face is found first with the full-range detector and the mesh runs on a crop
around it. Points come back in pixel coordinates of the full image.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import NoFaceError

# MediaPipe face-mesh indices (canonical 468-point topology; 468-477 are the irises).
INNER_LIP_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LIP_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
OUTER_LIP_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
OUTER_LIP_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# Eyelids as (upper, lower) pairs along each eye, inner corner excluded; image-left eye first.
EYELID_PAIRS = [
    ([246, 161, 160, 159, 158, 157, 173], [7, 163, 144, 145, 153, 154, 155]),
    ([466, 388, 387, 386, 385, 384, 398], [249, 390, 373, 374, 380, 381, 382]),
]
# Skin fold above each upper lid, matching EYELID_PAIRS point by point.
EYELID_CREASES = [[247, 30, 29, 27, 28, 56, 190], [467, 260, 259, 257, 258, 286, 414]]
EYE_CORNERS = [(33, 133), (263, 362)]
UPPER_LIP_MID, LOWER_LIP_MID = 13, 14  # inner-lip midpoints
MOUTH_CORNERS = (61, 291)
FOREHEAD_TOP, CHIN_BOTTOM = 10, 152
NOSE_TIP = 1


@dataclass(frozen=True)
class FaceLandmarks:
    """points: (478, 2) float32, x/y pixels in the full image; depth: (478,) float32, pixels, smaller is
    nearer the camera (MediaPipe's z, relative to the face centre); box: (x0, y0, x1, y1) of the detected face."""

    points: np.ndarray
    depth: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def face_height(self) -> float:
        """Forehead-top to chin distance in pixels."""
        return float(np.linalg.norm(self.points[FOREHEAD_TOP] - self.points[CHIN_BOTTOM]))

    def lip_gap(self) -> float:
        """Inner-lip opening divided by face height (0 for a closed mouth)."""
        return float(np.linalg.norm(self.points[UPPER_LIP_MID] - self.points[LOWER_LIP_MID])) / self.face_height


@dataclass(frozen=True)
class FaceSelector:
    """Which face of a group photo talks: the `index`-th largest (0 = the largest), or the one at
    `point` (x, y pixels of the portrait as sent)."""

    index: int = 0
    point: Optional[tuple[float, float]] = None

    @classmethod
    def parse(cls, value: "str | int | None") -> "FaceSelector":
        """"2" -> the third largest face; "120,80" -> the face at x=120, y=80. ValueError otherwise."""
        if value is None or value == "":
            return cls()
        text = str(value).strip()
        if re.fullmatch(r"\d+", text):
            return cls(index=int(text))
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)", text)
        if match:
            return cls(point=(float(match.group(1)), float(match.group(2))))
        raise ValueError(f"face must be an index (0 = the largest face) or a point 'x,y' in pixels, not {text!r}")

    def scaled(self, factor: float) -> "FaceSelector":
        """The same choice in an image resized by `factor`."""
        return self if self.point is None else FaceSelector(point=(self.point[0] * factor, self.point[1] * factor))

    def pick(self, boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
        """One of `boxes` (largest first); NoFaceError naming what was found when none matches."""
        if self.point is None:
            if self.index >= len(boxes):
                raise NoFaceError(f"face {self.index} was asked for, but the portrait has {len(boxes)} face(s) (0 = the largest)")
            return boxes[self.index]
        x, y = self.point
        holding = [b for b in boxes if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
        if not holding:
            found = "; ".join(f"{b[0]},{b[1]}-{b[2]},{b[3]}" for b in boxes)
            raise NoFaceError(f"no face at the point {x:g},{y:g}; faces were found in the boxes {found}")
        return min(holding, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))  # the innermost of nested boxes


def _without_duplicates(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Each face once: a box overlapping an earlier one (found on the whole image first, then on
    tiles) by more than a third of their union is a second sighting of the same face."""
    kept: list[tuple[int, int, int, int]] = []
    for box in boxes:
        if all(_overlap(box, other) <= 0.33 for other in kept):
            kept.append(box)
    return kept


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _solutions():
    import mediapipe as mp

    return mp.solutions


class FaceLocator:
    """Finds faces and the 478 mesh points of one; safe to share between threads."""

    def __init__(self, min_face_side: int = 48, min_confidence: float = 0.5):
        solutions = _solutions()
        self._lock = threading.Lock()  # MediaPipe graphs are not re-entrant
        self._detector = solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)
        self._mesh = solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=3, refine_landmarks=True, min_detection_confidence=min_confidence
        )
        self._segmenter = None  # built on first use: only meshwarp needs it
        self._close_detector = None  # built on first use: only the lip refiner's tracker needs it
        self.min_confidence = min_confidence
        self.min_face_side = min_face_side

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()
        if self._segmenter is not None:
            self._segmenter.close()
        if self._close_detector is not None:
            self._close_detector.close()

    def person_matte(self, image: np.ndarray) -> np.ndarray:
        """(H, W) float32 in [0, 1]: how surely each pixel of an RGB uint8 image belongs to a person
        (MediaPipe selfie segmentation, model shipped in the wheel)."""
        with self._lock:
            if self._segmenter is None:
                self._segmenter = _solutions().selfie_segmentation.SelfieSegmentation(model_selection=0)
            result = self._segmenter.process(np.ascontiguousarray(image))
        return np.clip(result.segmentation_mask, 0.0, 1.0).astype(np.float32)

    def detect_boxes(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Boxes (x0, y0, x1, y1) of every face in an RGB uint8 image, largest first; NoFaceError if none."""
        boxes = self._detect_boxes(image, 0, 0)
        # The detector sees a 192 px thumbnail of the whole image: in a long image (a group photo) a
        # face may shrink below what it finds, so look again in overlapping square tiles along the long side.
        for x0, y0, tile in _square_tiles(image):
            boxes += self._detect_boxes(tile, x0, y0)
        boxes = _without_duplicates(boxes)
        if not boxes:
            raise NoFaceError("no human face was found in the portrait")
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def detect_close_faces(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Boxes (x0, y0, x1, y1) of faces that fill much of an RGB uint8 image (a small crop around a
        face seen before), largest first; [] if none. MediaPipe's short-range detector: it sees a
        128 px image and costs about a third of the full-range one's call."""
        with self._lock:
            if self._close_detector is None:
                self._close_detector = _solutions().face_detection.FaceDetection(
                    model_selection=0, min_detection_confidence=self.min_confidence)
        boxes = self._detect_boxes(image, 0, 0, self._close_detector)
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def detect_box(self, image: np.ndarray, face: Optional["FaceSelector"] = None) -> tuple[int, int, int, int]:
        """Box of the face `face` picks (default: the largest); NoFaceError if there is none, or if it
        is smaller than min_face_side."""
        box = (face or FaceSelector()).pick(self.detect_boxes(image))
        if min(box[2] - box[0], box[3] - box[1]) < self.min_face_side:
            raise NoFaceError(
                f"the face is too small to animate ({box[2] - box[0]}x{box[3] - box[1]} px; "
                f"at least {self.min_face_side} px is needed)"
            )
        return box

    def _detect_boxes(self, image: np.ndarray, offset_x: int, offset_y: int,
                      detector=None) -> list[tuple[int, int, int, int]]:
        height, width = image.shape[:2]
        with self._lock:
            result = (detector or self._detector).process(np.ascontiguousarray(image))
        boxes = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            x0, y0 = max(0, int(rel.xmin * width)), max(0, int(rel.ymin * height))
            x1, y1 = min(width, int((rel.xmin + rel.width) * width)), min(height, int((rel.ymin + rel.height) * height))
            if x1 > x0 and y1 > y0:
                boxes.append((x0 + offset_x, y0 + offset_y, x1 + offset_x, y1 + offset_y))
        return boxes

    def locate(self, image: np.ndarray, face: Optional["FaceSelector"] = None) -> FaceLandmarks:
        """478 landmarks of the face `face` picks (default: the largest) in an RGB uint8 image;
        NoFaceError if there is none."""
        return self.landmarks_in_box(image, self.detect_box(image, face))

    def landmarks_in_box(self, image: np.ndarray, box: tuple[int, int, int, int]) -> FaceLandmarks:
        """478 landmarks of the face in a detected box (x0, y0, x1, y1) of an RGB uint8 image."""
        crop_box = square_around(box, image.shape, scale=2.0)
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        with self._lock:
            result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            raise NoFaceError("a face-like region was found but no face mesh fits it")
        # In a group photo the crop may hold a neighbour's face too: keep the mesh centred on the box.
        meshes = [np.array([(p.x, p.y, p.z) for p in found.landmark], dtype=np.float32) for found in result.multi_face_landmarks]
        centre = np.array([(box[0] + box[2]) / 2 - x0, (box[1] + box[3]) / 2 - y0]) / np.array([x1 - x0, y1 - y0])
        normalized = min(meshes, key=lambda mesh: float(np.linalg.norm(mesh[:, :2].mean(axis=0) - centre)))
        points = normalized[:, :2] * np.array([x1 - x0, y1 - y0], dtype=np.float32) + np.array([x0, y0], dtype=np.float32)
        depth = normalized[:, 2] * (x1 - x0)  # MediaPipe scales z like x
        return FaceLandmarks(points=points, depth=depth, box=box)


def _square_tiles(image: np.ndarray):
    """Overlapping square tiles (side = the short side) along the long side: (x0, y0, tile)."""
    height, width = image.shape[:2]
    side = min(height, width)
    if max(height, width) < 1.5 * side:
        return
    length = max(height, width)
    for start in range(0, length - side // 2, side // 2):
        start = min(start, length - side)
        yield (start, 0, image[:, start:start + side]) if width > height else (0, start, image[start:start + side])


def square_around(box: tuple[int, int, int, int], shape: tuple[int, ...], scale: float) -> tuple[int, int, int, int]:
    """A square `scale` times the box's longer side around its centre, clipped to the image."""
    height, width = shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * scale / 2
    return (max(0, int(cx - half)), max(0, int(cy - half)), min(width, int(cx + half)), min(height, int(cy + half)))
