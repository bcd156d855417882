"""Where the face is in each frame of a stream, for the lip refiner, without a detection per frame.

A talking head moves little and smoothly, so the face box is detected (MediaPipe, through our
FaceLocator) only on every `detect_every`-th frame, and interpolated linearly between. The first
detection of a stream looks at the whole frame; later ones at a small, downscaled square around
the last box (the detector's cost is per call, and a small image is the cheapest call), and at the
whole frame again when the face is not there. Where two neighbouring detections disagree by more
than `max_drift` of the face's size, the face moved too fast to interpolate: every frame between
them is detected on its own. A detection that fails keeps its neighbours' boxes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import cv2
import numpy as np

from ...errors import NoFaceError
from ...media.landmarks import FaceLocator, square_around

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


@dataclass
class TrackingStats:
    """Detector calls of one stream (or of a refiner's life): how often it ran and found the face."""

    detections: int = 0  # detector calls
    found: int = 0  # calls that found the face
    whole_frame: int = 0  # calls on the whole frame (the first one, and after the face was lost nearby)
    drift_frames: int = 0  # frames detected one by one because neighbouring detections disagreed

    @property
    def hit_rate(self) -> Optional[float]:
        return round(self.found / self.detections, 4) if self.detections else None

    def add(self, other: "TrackingStats") -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def since(self, earlier: "TrackingStats") -> "TrackingStats":
        """The calls made after `earlier` (a copy of these stats taken before)."""
        return TrackingStats(*[getattr(self, name) - getattr(earlier, name) for name in _COUNTS])


_COUNTS = [item.name for item in fields(TrackingStats)]


class FaceTracker:
    """Face boxes (the detector's, unpadded) for consecutive batches of one stream's frames."""

    def __init__(self, locator: FaceLocator, *, detect_every: int = 8, search_side: int = 160,
                 max_drift: float = 0.25, stats: Optional[TrackingStats] = None):
        self.locator = locator
        self.detect_every = max(1, detect_every)
        self.search_side = search_side  # px: the detector's image around the last box (its model sees 192 px)
        self.max_drift = max_drift  # of the face's side, between two detections detect_every frames apart
        self.stats = stats if stats is not None else TrackingStats()
        self._last: Optional[np.ndarray] = None  # the previous batch's last box, float (4,)

    def track(self, frames: list[np.ndarray]) -> list[Optional[Box]]:
        """A box per frame (H, W, 3) RGB uint8, None where no face was found in or near it. Detects
        the last frame and every `detect_every`-th before it, and every frame where those drift."""
        if not frames:
            return []
        known: dict[int, np.ndarray] = {}
        near = self._last
        probes = range(len(frames) - 1, -1, -self.detect_every)[::-1]
        if self._last is None:  # the stream's start: nothing to interpolate from before the first probe
            probes = sorted({0, *probes})
        for index in probes:
            box = self.detect(frames[index], near)
            if box is not None:
                known[index] = near = box
        anchors = ([(-1, self._last)] if self._last is not None else []) + sorted(known.items())
        for (before, box_before), (after, box_after) in zip(anchors, anchors[1:]):
            if after - before > 1 and self.drifted(box_before, box_after, after - before):
                near = box_before
                for index in range(before + 1, after):
                    self.stats.drift_frames += 1
                    box = self.detect(frames[index], near)
                    if box is not None:
                        known[index] = near = box
        anchors = ([(-1, self._last)] if self._last is not None else []) + sorted(known.items())
        if not anchors:
            return [None] * len(frames)
        boxes = _interpolate(anchors, len(frames))
        self._last = boxes[-1]
        return [tuple(int(round(v)) for v in box) for box in boxes]

    def drifted(self, before: np.ndarray, after: np.ndarray, frames_apart: int) -> bool:
        """Whether two boxes `frames_apart` frames apart moved or resized by more than linear
        interpolation can follow (max_drift of the face's side per detect_every frames)."""
        side = max(before[2] - before[0], before[3] - before[1], 1.0)
        allowed = self.max_drift * side * max(1.0, frames_apart / self.detect_every)
        return bool(np.abs(after - before).max() > allowed)

    def detect(self, frame: np.ndarray, near: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The face box (float x0, y0, x1, y1) in frame: looked for around `near` first, then in the
        whole frame; None if there is none."""
        if near is not None:
            box = self._detect_near(frame, near)
            if box is not None:
                return box
        self.stats.detections += 1
        self.stats.whole_frame += 1
        try:
            box = np.array(self.locator.detect_box(frame), float)
        except NoFaceError:
            return None
        self.stats.found += 1
        return box

    def _detect_near(self, frame: np.ndarray, near: np.ndarray) -> Optional[np.ndarray]:
        """The detection in a square twice the face's side around `near`, shrunk to search_side px."""
        x0, y0, x1, y1 = square_around(tuple(int(round(v)) for v in near), frame.shape, scale=2.0)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        scale = min(1.0, self.search_side / max(x1 - x0, y1 - y0))
        crop = frame[y0:y1, x0:x1]
        if scale < 1.0:
            crop = cv2.resize(crop, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
                              interpolation=cv2.INTER_AREA)
        self.stats.detections += 1
        try:
            found = self.locator.detect_boxes(crop)
        except NoFaceError:
            return None
        boxes = np.array(found, float) / np.array([crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)] * 2)
        boxes += np.array([x0, y0, x0, y0], float)
        centre = (near[:2] + near[2:]) / 2
        box = min(boxes, key=lambda b: float(np.linalg.norm((b[:2] + b[2:]) / 2 - centre)))
        if min(box[2] - box[0], box[3] - box[1]) < self.locator.min_face_side:
            return None
        # A box cut by the square's edge inside the frame is a face partly out of view: look again wider.
        height, width = frame.shape[:2]
        margin = 2 / scale
        if ((x0 > 0 and box[0] <= x0 + margin) or (y0 > 0 and box[1] <= y0 + margin)
                or (x1 < width and box[2] >= x1 - margin) or (y1 < height and box[3] >= y1 - margin)):
            return None
        self.stats.found += 1
        return box


def _interpolate(anchors: list[tuple[int, np.ndarray]], count: int) -> list[np.ndarray]:
    """A box for each of `count` frames from (index, box) anchors sorted by index (index -1: the
    previous batch's last frame): linear between anchors, the nearest anchor's box outside them."""
    indices = np.array([index for index, _ in anchors], float)
    values = np.stack([box for _, box in anchors])
    frames = np.arange(count, dtype=float)
    columns = [np.interp(frames, indices, values[:, k]) for k in range(4)]  # np.interp holds the ends
    return list(np.stack(columns, axis=1))
