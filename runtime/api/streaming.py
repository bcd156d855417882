"""HTTP side of the streaming pipeline: a response that relays fragments and stops the work when it ends."""
from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from typing import AsyncIterator, Callable, Iterator, Mapping, Optional

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..cancellation import CancelToken


def close_when_idle(fragments: Iterator[bytes], timeout: float = 30.0) -> None:
    """Close a blocking generator once no thread is inside it (its finally logs and releases)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fragments.close()
            return
        except ValueError:  # "generator already executing": a worker thread is still in next()
            time.sleep(0.01)


class FragmentStreamResponse(StreamingResponse):
    """Sends a blocking iterator of fMP4 fragments with chunked transfer, one chunk a fragment.

    However the response ends (done, client gone, server shutting down) the request's token is
    cancelled, so the pipeline behind the iterator stops within a frame."""

    def __init__(self, fragments: Iterator[bytes], token: CancelToken, headers: Mapping[str, str], *,
                 tracking: Callable[[CancelToken], AbstractContextManager] | None = None,
                 on_end: Optional[Callable[[], None]] = None):
        """tracking(token): a context the stream runs in (the service's in-flight work, which a
        drain cancels); on_end: called once the work has stopped (metrics)."""
        self._fragments = fragments
        self._token = token
        self._tracking = tracking
        self._on_end = on_end
        super().__init__(self._relay(), media_type="video/mp4", headers=headers)

    async def _relay(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await run_in_threadpool(next, self._fragments, None)
            if chunk is None:
                return
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = self._tracking(self._token) if self._tracking is not None else None
        try:
            if tracked is not None:
                tracked.__enter__()
            await super().__call__(scope, receive, send)
        finally:
            self._token.cancel("the client disconnected")  # no effect once the stream has ended
            threading.Thread(target=self._close, args=(tracked,), daemon=True).start()

    def _close(self, tracked: Optional[AbstractContextManager]) -> None:
        close_when_idle(self._fragments)
        if tracked is not None:
            tracked.__exit__(None, None, None)
        if self._on_end is not None:
            self._on_end()
