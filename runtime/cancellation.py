"""Cancellation of one request's work: a token the pipeline checks between chunks and frames.

Whoever learns that the work is no longer wanted (a client that hung up, a deadline, shutdown)
calls `token.cancel(reason)`; every stage stops at its next check and the request ends with
`Cancelled`. One token per request, shared by all its threads.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

POLL_SECONDS = 0.05  # how often a wait looks at its cancel tokens


class Cancelled(Exception):
    """The request's work was stopped on purpose (its token was cancelled)."""


class CancelToken:
    """A threading.Event with a reason and the moment it was set. Thread-safe."""

    def __init__(self):
        self._event = threading.Event()
        self.reason: Optional[str] = None
        self.cancelled_at: Optional[float] = None  # time.monotonic() of the first cancel

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self.cancelled_at = time.monotonic()
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled if the work should stop."""
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once on cancel; True if cancelled."""
        return self._event.wait(seconds)


def wait_cancellably(step: Callable[[float], bool], *tokens: CancelToken, poll_s: float = POLL_SECONDS) -> None:
    """The one way to block on a queue or condition while a request may be cancelled: call
    `step(poll_s)` (which waits at most poll_s seconds and says whether it is done) until it is,
    raising Cancelled as soon as any token is cancelled."""
    while True:
        for token in tokens:
            token.check()
        if step(poll_s):
            return
