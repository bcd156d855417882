"""Streams that render in their own threads (meshwarp on the CPU: its render is tiny and each
stream's encoder is the bound): admission against a measured capacity, and the same figures the
render scheduler gives /metrics, so one collector serves both."""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Deque

from .admission import Admission
from .scheduler import SchedulerStats


class ParallelRendering:
    """Admission for parallel streams plus their recent frames and deadline misses. Thread-safe."""

    def __init__(self, admission: Admission, *, rate_window_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.admission = admission
        self.rate_window_s = rate_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: Deque[tuple[float, int]] = collections.deque()  # (finished at, frames)
        self._frames_rendered = 0
        self._deadline_misses = 0

    def frames_done(self, frames: int, late: int) -> None:
        """A stream rendered `frames` frames, `late` of them after their playback deadline."""
        with self._lock:
            now = self._clock()
            self._recent.append((now, frames))
            while self._recent and self._recent[0][0] < now - self.rate_window_s:
                self._recent.popleft()
            self._frames_rendered += frames
            self._deadline_misses += late

    def stats(self) -> SchedulerStats:
        with self._lock:
            now = self._clock()
            recent = sum(frames for finished, frames in self._recent if finished >= now - self.rate_window_s)
            rendered, misses = self._frames_rendered, self._deadline_misses
        return SchedulerStats(
            active_streams=self.admission.active,
            admitted_frames_per_second=self.admission.admitted_fps,
            capacity_frames_per_second=self.admission.capacity_fps,
            frames_per_second=recent / self.rate_window_s,
            batch_fill=0.0,  # no shared batches: each stream renders alone
            frames_rendered=rendered,
            batches_run=0,
            deadline_misses=misses,
            refused_streams=self.admission.refused,
        )
