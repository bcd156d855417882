"""Where the face is in each frame of a stream, for the lip refiner, without a detection per frame.

A talking head moves little and smoothly, so the face box is detected (MediaPipe, through our
FaceLocator) only on every `detect_every`-th frame, and interpolated linearly between (a batch's
last frames, past its last detection, keep that box until the next batch's first). The first
detection of a stream looks at the whole frame; later ones at a small, downscaled square around
the last box, where the face fills half the image and MediaPipe's short-range detector (a third of
the full-range one's cost) finds it, and at the whole frame again when the face is not there.
Where two neighbouring detections disagree by more than `max_drift` of the face's size, the face
moved too fast to interpolate: every frame between them is detected on its own. A detection that
fails keeps its neighbours' boxes.
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

    def __init__(self, locator: FaceLocator, *, detect_every: int = 8, search_side: int = 128,
                 max_drift: float = 0.25, stats: Optional[TrackingStats] = None):
        self.locator = locator
        self.detect_every = max(1, detect_every)
        self.search_side = search_side  # px: the detector's image around the last box (its model sees 128 px)
        self.max_drift = max_drift  # of the face's side, between two detections detect_every frames apart
        self.stats = stats if stats is not None else TrackingStats()
        self._next_frame = 0  # the stream's index of the next batch's first frame
        self._anchor: Optional[tuple[int, np.ndarray]] = None  # the latest detection: (frame index, box)

    def track(self, frames: list[np.ndarray]) -> list[Optional[Box]]:
        """A box per frame (H, W, 3) RGB uint8 of the stream's next batch, None where no face was found
        in or near it. Detects every `detect_every`-th frame after the last detection, and the batch's
        last frame when it lies more than half that past them (so a box lags the face by at most that
        much), and every frame between two detections that drift apart."""
        if not frames:
            return []
        first, count = self._next_frame, len(frames)
        self._next_frame += count
        known: dict[int, np.ndarray] = {}  # stream frame index -> detected box
        near = None if self._anchor is None else self._anchor[1]
        for index in self._probes(first, count):
            box = self.detect(frames[index - first], near)
            if box is not None:
                known[index] = near = box
        anchors = ([self._anchor] if self._anchor is not None else []) + sorted(known.items())
        for (before, box_before), (after, box_after) in zip(anchors, anchors[1:]):
            if after - before > 1 and self.drifted(box_before, box_after, after - before):
                self._detect_each(frames, first, range(max(before + 1, first), after), box_before, known)
                if after == anchors[-1][0]:  # the frames after it are likely moving too
                    self._detect_each(frames, first, range(after + 1, first + count), box_after, known)
        anchors = ([self._anchor] if self._anchor is not None else []) + sorted(known.items())
        if not anchors:
            return [None] * count
        self._anchor = anchors[-1]
        boxes = _interpolate(anchors, range(first, first + count))
        return [tuple(int(round(v)) for v in box) for box in boxes]

    def _probes(self, first: int, count: int) -> list[int]:
        """Stream indices of the batch's frames to detect on."""
        last = first + count - 1
        if self._anchor is None:  # the stream's start, or the face not seen yet: look now
            probes, position = [first], first + self.detect_every
        else:
            probes, position = [], max(first, self._anchor[0] + self.detect_every)
        probes += list(range(position, last + 1, self.detect_every))
        latest = probes[-1] if probes else self._anchor[0]
        if last - latest > self.detect_every // 2:
            probes.append(last)
        return probes

    def _detect_each(self, frames, first: int, indices: range, near: np.ndarray, known: dict) -> None:
        """Detect frames `indices` (stream indices) one by one, each near the previous one's box."""
        for index in indices:
            if index in known:
                near = known[index]
                continue
            self.stats.drift_frames += 1
            box = self.detect(frames[index - first], near)
            if box is not None:
                known[index] = near = box

    def drifted(self, before: np.ndarray, after: np.ndarray, frames_apart: int) -> bool:
        """Whether two boxes `frames_apart` frames apart moved or resized by more than linear
        interpolation can follow (max_drift of the face's side per detect_every frames)."""
        side = max(before[2] - before[0], before[3] - before[1], 1.0)
        allowed = self.max_drift * side * max(1.0, frames_apart / self.detect_every)
        return bool(np.abs(after - before).max() > allowed)

    def detect(self, frame: np.ndarray, near: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The face box (float x0, y0, x1, y1) in frame: looked for around `near` first, then in the
        whole frame (and then around what that found); None if there is none."""
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
        # Looked at again as the next frames will be, so that a stream's boxes come from one detector.
        closer = self._detect_near(frame, box)
        return box if closer is None else closer

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
        found = self.locator.detect_close_faces(crop)
        if not found:
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


def _interpolate(anchors: list[tuple[int, np.ndarray]], indices: range) -> list[np.ndarray]:
    """A box for each stream frame index from (index, box) anchors sorted by index: linear between
    anchors, the nearest anchor's box before the first and after the last."""
    at = np.array([index for index, _ in anchors], float)
    values = np.stack([box for _, box in anchors])
    frames = np.array(indices, float)
    columns = [np.interp(frames, at, values[:, k]) for k in range(4)]  # np.interp holds the ends
    return list(np.stack(columns, axis=1))
