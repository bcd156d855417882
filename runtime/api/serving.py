"""Running the app under uvicorn: readiness, draining on SIGTERM, and a deadline for request heads."""
from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..cancellation import CancelToken
from ..config import Settings

log = logging.getLogger(__name__)


class Lifecycle:
    """Whether the service takes work: `ready` once the models are loaded and warm, `draining` from
    SIGTERM on. Tracks the cancel tokens of work in flight so that a drain can cancel what is still
    running when the grace period ends."""

    def __init__(self, shutdown_grace_s: float):
        self.shutdown_grace_s = shutdown_grace_s
        self.ready = False
        self.draining = False
        self.load_error: Optional[str] = None
        self._in_flight: set[CancelToken] = set()
        self._grace_over = False
        self._lock = threading.Lock()

    @property
    def accepting(self) -> bool:
        return self.ready and not self.draining

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @contextmanager
    def track(self, token: CancelToken) -> Iterator[CancelToken]:
        """Work under `token` counts as in flight until the block ends; a drain past its grace cancels it."""
        with self._lock:
            self._in_flight.add(token)
            if self.draining and self._grace_over:
                token.cancel("shutdown")
        try:
            yield token
        finally:
            with self._lock:
                self._in_flight.discard(token)

    def begin_drain(self) -> None:
        """Stop being ready now; cancel whatever still runs shutdown_grace_s from now."""
        if self.draining:
            return
        self.draining = True
        log.info("Draining: %d request(s) in flight get %.0f s to finish", self.in_flight, self.shutdown_grace_s)
        timer = threading.Timer(self.shutdown_grace_s, self._cancel_in_flight)
        timer.daemon = True
        timer.start()

    def _cancel_in_flight(self) -> None:
        with self._lock:
            self._grace_over = True
            tokens = list(self._in_flight)
        if tokens:
            log.warning("Grace period over: cancelling %d request(s) still in flight", len(tokens))
        for token in tokens:
            token.cancel("shutdown")


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the app when SIGTERM/SIGINT arrives so it drains, not just stops."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle):
        super().__init__(config)
        self.lifecycle = lifecycle

    def handle_exit(self, sig: int, frame) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT) and not self.should_exit:
            self.lifecycle.begin_drain()
        super().handle_exit(sig, frame)


def head_deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head has not fully arrived within
    header_timeout_s of the connection (or of the previous response). uvicorn itself waits forever
    for a head sent one byte at a time."""

    class HeadDeadlineH11Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_deadline()

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, event) -> None:
            # The head is complete and the connection is a WebSocket's from now on: no deadline.
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().handle_websocket_upgrade(event)

        def _arm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_overdue, self.cycle)

        def _head_overdue(self, cycle_when_armed) -> None:
            if self.cycle is cycle_when_armed and not self.transport.is_closing():  # no new request head
                log.info("Closing a connection from %s: no complete request head within %g s",
                         self.client[0] if self.client else "?", header_timeout_s)
                self.transport.close()

    return HeadDeadlineH11Protocol


def serve(app, settings: Settings) -> None:
    """Serve `app` (whose state holds its Lifecycle) on HOST:PORT until SIGTERM, then drain."""
    lifecycle: Lifecycle = app.state.lifecycle
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # runtime.process configured logging (and keeps uvicorn's at WARNING)
        access_log=False,  # one line a request comes from the pipeline
        http=head_deadline_protocol(settings.header_timeout_s),
        # A backstop behind the app's own drain: the app answers cancelled work with a 503 at
        # SHUTDOWN_GRACE_S; uvicorn cancels whatever is left a few seconds later.
        timeout_graceful_shutdown=settings.shutdown_grace_s + 5,
    )
    started = time.monotonic()
    _DrainingServer(config, lifecycle).run()
    log.info("Stopped after %.0f s", time.monotonic() - started)
