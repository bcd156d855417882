"""Admission by frames per second: a stream is let in only while every admitted stream stays real time.

Every stream (a live session or a whole-file request) declares the frames per second it needs. The
admission holds the sum of the admitted demands within `headroom` of the capacity (frames per second
the device or CPU delivers, measured by whoever renders, starting from an estimate); a stream that
does not fit is refused at once with `SchedulerBusyError` (503 + Retry-After), or waits up to
`wait_s` for capacity (whole-file requests). An idle device takes any one stream: refusing the
only one would serve nobody, and it gets all the device has.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Optional

from ..cancellation import CancelToken, wait_cancellably
from ..errors import ServiceBusyError


class SchedulerBusyError(ServiceBusyError):
    """Admitting one more stream would make an admitted stream fall behind real time."""

    def __init__(self, detail: str, retry_after_s: float):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Admission:
    """Admitted demands against a capacity in frames per second. Thread-safe."""

    def __init__(self, initial_capacity_fps: float, *, headroom: float = 0.9, retry_after_s: float = 5.0):
        if initial_capacity_fps <= 0:
            raise ValueError(f"initial_capacity_fps must be > 0, got {initial_capacity_fps}")
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        self.headroom = headroom
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._demands: dict[int, float] = {}  # ticket -> frames per second
        self._tickets = itertools.count(1)
        self._capacity_fps = float(initial_capacity_fps)
        self._measurements = 0
        self.refused = 0

    def admit(self, frames_per_second: float, *, wait_s: float = 0.0,
              cancel_token: Optional[CancelToken] = None) -> int:
        """A ticket for a stream needing `frames_per_second`, or SchedulerBusyError. `wait_s` > 0
        waits up to that many real seconds for capacity (Cancelled if the token is cancelled)."""
        if frames_per_second <= 0:
            raise ValueError(f"frames_per_second must be > 0, got {frames_per_second}")
        give_up_at = time.monotonic() + wait_s
        with self._lock:
            def admitted_or_given_up(poll_s: float) -> bool:
                if self._fits(frames_per_second):
                    return True
                remaining = give_up_at - time.monotonic()
                if remaining <= 0:
                    self.refused += 1
                    raise SchedulerBusyError(
                        f"rendering is at capacity ({self._admitted():.0f} of "
                        f"{self._capacity_fps * self.headroom:.0f} frames/s admitted); try again shortly",
                        retry_after_s=self.retry_after_s)
                self._freed.wait(min(poll_s, remaining))
                return False

            wait_cancellably(admitted_or_given_up, *([cancel_token] if cancel_token is not None else []))
            ticket = next(self._tickets)
            self._demands[ticket] = frames_per_second
            return ticket

    def release(self, ticket: int) -> None:
        """Give a stream's share back (again is harmless)."""
        with self._lock:
            if self._demands.pop(ticket, None) is not None:
                self._freed.notify_all()

    def measured(self, frames_per_second: float) -> None:
        """A measurement of the capacity: the first replaces the estimate, later ones move it by a fifth."""
        if frames_per_second <= 0:
            return
        with self._lock:
            self._measurements += 1
            weight = 1.0 if self._measurements == 1 else 0.2
            self._capacity_fps += weight * (frames_per_second - self._capacity_fps)
            self._freed.notify_all()

    def _fits(self, frames_per_second: float) -> bool:
        return not self._demands or self._admitted() + frames_per_second <= self._capacity_fps * self.headroom

    def _admitted(self) -> float:
        return sum(self._demands.values())

    @property
    def capacity_fps(self) -> float:
        with self._lock:
            return self._capacity_fps

    @property
    def admitted_fps(self) -> float:
        with self._lock:
            return self._admitted()

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._demands)

    def describe(self) -> dict:
        """The admission's part of /health."""
        with self._lock:
            return {"capacity_frames_per_second": round(self._capacity_fps, 2),
                    "admitted_frames_per_second": round(self._admitted(), 2), "headroom": self.headroom,
                    "streams": len(self._demands), "refused": self.refused,
                    "capacity_measured": self._measurements > 0}
