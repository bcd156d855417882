"""Running a request's blocking work so that it stops when nobody waits for it any more: the client
hung up, REQUEST_TIMEOUT_S passed (504), or the server is shutting down past its grace (503)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..cancellation import Cancelled, CancelToken
from ..errors import UserInputError
from ..observability import Metrics
from .serving import Lifecycle

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a cancelled request waits for its worker thread to notice (it checks between chunks and
# frames, so well under a second), to clean up before answering.
_STOP_WAIT_S = 5.0


class ClientGone(Exception):
    """The client disconnected; there is nobody to answer."""


class RequestTimeoutError(UserInputError):
    error = "timeout"
    status_code = 504


class ShuttingDownError(UserInputError):
    error = "shutting_down"
    status_code = 503


async def _client_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_cancellable(request: Request, work: Callable[[CancelToken], T], *, timeout_s: float,
                          lifecycle: Lifecycle, metrics: Metrics) -> T:
    """work(token) in a worker thread. The token is cancelled when the client disconnects, at
    timeout_s, or when a drain's grace period ends; the matching error is raised once the work has
    stopped (or _STOP_WAIT_S passed)."""
    token = CancelToken()
    started = time.monotonic()
    with lifecycle.track(token):
        job = asyncio.ensure_future(run_in_threadpool(work, token))
        # Once cancelled, the job may end after this request has answered: its outcome is read then.
        job.add_done_callback(lambda done: done.cancelled() or done.exception())
        watcher = asyncio.ensure_future(_client_disconnected(request))
        try:
            done, _ = await asyncio.wait({job, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if job in done:
                try:
                    return job.result()
                except Cancelled:  # the drain's grace ended while it ran
                    pass
            elif watcher in done:
                token.cancel("client disconnected")
            else:
                token.cancel("timeout")
            await asyncio.wait({job}, timeout=_STOP_WAIT_S)
            reason = token.reason or "cancelled"
            stopped_after = time.monotonic() - (token.cancelled_at or time.monotonic())
            metrics.cancelled.labels(reason=_reason_label(reason)).inc()
            log.info("request %s cancelled (%s) after %.1f s; its work %s %.3f s after the cancel",
                     request.state.request_id, reason, time.monotonic() - started,
                     "stopped" if job.done() else "had not stopped", stopped_after)
            if job.done() and not job.cancelled() and job.exception() is not None and not isinstance(
                    job.exception(), Cancelled):
                raise job.exception()  # it failed on its own before noticing the cancel
            if reason == "timeout":
                raise RequestTimeoutError(f"the request took longer than REQUEST_TIMEOUT_S={timeout_s:g} s; "
                                          "its work was stopped")
            if reason == "shutdown":
                raise ShuttingDownError("the server is shutting down; the work was stopped; retry elsewhere")
            raise ClientGone()
        finally:
            watcher.cancel()


def _reason_label(reason: str) -> str:
    return {"client disconnected": "disconnect"}.get(reason, reason)
