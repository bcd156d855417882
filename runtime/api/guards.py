"""The edge of the HTTP service: request ids, request metrics, content types, body size and read time.

Pure ASGI middleware (no buffering wrapper), so a body is counted and timed while it is read and a
disconnect reaches the endpoint. Refusals are JSON `{"error", "detail", "request_id"}` like every error.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, Awaitable, Callable, Optional

import numpy as np

from ..config import Settings
from ..errors import UserInputError
from ..generation import new_request_id
from ..observability import Metrics, request_id_var

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALLOWED_BODY_TYPES = ("application/json", "multipart/form-data")
_METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}


def max_body_bytes(settings: Settings, path: str = "/generate") -> int:
    """The largest request body the endpoint at `path` accepts, its files as base64 (4/3, rounded up
    to 2x) with room for multipart framing: /evaluate's video and portrait; elsewhere /generate's
    image, two audio files and text (the most any other endpoint takes)."""
    if path == "/evaluate":
        return 2 * (settings.max_video_bytes + settings.max_image_bytes) + 65536
    return 2 * (settings.max_image_bytes + 2 * settings.max_audio_bytes) + 4 * settings.max_text_chars + 65536


class BodyTooLargeError(UserInputError):
    error = "body_too_large"
    status_code = 413


class BodyTimeoutError(UserInputError):
    error = "body_timeout"
    status_code = 408


class UnsupportedMediaTypeError(UserInputError):
    error = "unsupported_media_type"
    status_code = 415


def request_id_of(scope: Scope) -> Optional[str]:
    return scope.get("state", {}).get("request_id")


async def send_json_error(send: Send, scope: Scope, status: int, error: str, detail: str,
                          headers: Optional[dict[str, str]] = None) -> None:
    """A complete JSON error response, sent from middleware (before any route runs)."""
    body = json.dumps({"error": error, "detail": detail, "request_id": request_id_of(scope)}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContext:
    """Outermost: gives each request (and WebSocket) an id for logs, errors and X-Request-ID, and
    counts answered requests by endpoint (route template), status and backend."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # An outer layer may have named the request already (Ray Serve's proxy, via runtime/serve_app.py).
        request_id = scope.get("state", {}).get("request_id") or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        counted = False

        def count(status: int, backend: str) -> None:
            """Counted when the response starts, so a client that reads /metrics next sees it."""
            nonlocal counted
            counted = True
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint=endpoint, status=str(status), backend=backend).inc()
            self.metrics.request_seconds.labels(endpoint=endpoint).observe(time.perf_counter() - started)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                count(message["status"], next(
                    (value.decode() for name, value in headers if name.lower() == b"x-avatar-backend"), ""))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if scope["type"] != "http" or counted:  # the answer had started: only the log can tell
                raise
            # Answered here, not re-raised: uvicorn closes the connection of an app that raised, and
            # a client could then read a reset instead of this 500. The log has the traceback.
            log.exception("request %s failed", request_id)
            await send_json_error(send_with_id, scope, 500, "internal_error",
                                  f"internal error; the server log has the details under request {request_id}")
        finally:
            request_id_var.reset(token)
            if scope["type"] == "http" and not counted:  # ended without any answer
                count(500, "")


class BodyBudget:
    """Bytes of request bodies held at once across requests. A request reserves its declared length
    (the whole limit when chunked) before its body is read, and returns it when its response is done;
    a reservation over what is left waits, unless nothing else is held (so any one body can pass)."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.held = 0
        self._changed = asyncio.Condition()

    async def reserve(self, size: int, timeout_s: float) -> bool:
        """True once `size` bytes are reserved; False if that did not happen within timeout_s."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: self.held == 0 or self.held + size <= self.budget), timeout=timeout_s)
            except asyncio.TimeoutError:
                return False
            self.held += size
            return True

    async def release(self, size: int) -> None:
        async with self._changed:
            self.held -= size
            self._changed.notify_all()


class BodyGuard:
    """Content type, size and read time of request bodies, enforced as the body arrives.

    - POST/PUT/PATCH with a body must be JSON or multipart: a page on another site can send
      text/plain or a urlencoded form without a CORS preflight; those are refused with 415.
    - A declared Content-Length over the limit is a 413 before anything is read; a chunked body is
      counted as it arrives and refused at the byte that crosses the limit.
    - The whole body must arrive within body_timeout_s of the request head (408): a client trickling
      one byte every few seconds cannot hold a connection and a worker.
    - Bodies held at once stay within a byte budget (BodyBudget): more large uploads wait their turn
      (503 with Retry-After if it does not come within body_timeout_s) instead of all being held.
    """

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.settings = settings
        self.body_timeout_s = settings.body_timeout_s
        self.budget = BodyBudget(settings.max_buffered_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        max_body = max_body_bytes(self.settings, scope["path"])
        content_type = (header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        declared = header(scope, b"content-length")
        chunked = "chunked" in (header(scope, b"transfer-encoding") or "").lower()
        has_body = chunked or (declared is not None and declared.strip() not in ("", "0"))
        if has_body and content_type not in ALLOWED_BODY_TYPES:
            await send_json_error(send, scope, 415, UnsupportedMediaTypeError.error,
                                  f"content type {content_type or '(none)'!r} is not accepted; "
                                  "send application/json or multipart/form-data")
            return
        if declared is not None and declared.strip().isdigit() and int(declared) > max_body:
            await send_json_error(send, scope, 413, BodyTooLargeError.error,
                                  f"request body is {int(declared)} bytes; the limit is {max_body}",
                                  headers={"connection": "close"})
            return
        size = int(declared) if declared is not None and declared.strip().isdigit() else (
            max_body if chunked else 0)
        if size and not await self.budget.reserve(size, self.body_timeout_s):
            await send_json_error(send, scope, 503, "busy", "too many large requests are being received; retry shortly",
                                  headers={"retry-after": "5", "connection": "close"})
            return
        try:
            await self._guarded(scope, receive, send, max_body)
        finally:
            if size:
                await self.budget.release(size)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, max_body: int) -> None:
        refused = []  # set when the body was cut off: the connection must close, not drain the rest

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and refused:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, self._bounded(receive, refused, max_body), send_closing)

    def _bounded(self, receive: Receive, refused: list, max_body: int) -> Receive:
        deadline = time.monotonic() + self.body_timeout_s
        received = 0
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come: no deadline on waiting for it
                return await receive()
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.001))
            except asyncio.TimeoutError:
                refused.append("timeout")
                raise BodyTimeoutError(
                    f"the request body did not arrive within {self.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    refused.append("size")
                    raise BodyTooLargeError(f"request body is over the limit of {max_body} bytes")
                if not message.get("more_body", False):
                    body_done = True
            return message

        return bounded_receive


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def json_nesting_depth(body: bytes) -> int:
    """How deep JSON bytes nest objects/arrays, without parsing (no recursion: a body nested 100,000
    deep costs one linear pass, not a RecursionError). Strings are removed first, then the running
    sum of openings minus closings is taken in numpy."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b"", body), dtype=np.uint8)
    if skeleton.size == 0:
        return 0
    steps = np.isin(skeleton, _OPENINGS).astype(np.int32) - np.isin(skeleton, _CLOSINGS).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


_OPENINGS = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSINGS = np.frombuffer(b"]}", dtype=np.uint8)


def parse_json_object(body: bytes | bytearray, max_depth: int) -> dict:
    """A request body -> its JSON object; 400 for invalid JSON (UTF-8 only), a non-object, or nesting
    over max_depth."""
    if json_nesting_depth(body) > max_depth:
        raise UserInputError(f"the JSON body nests deeper than {max_depth} levels", error="invalid_json", status_code=400)
    try:
        value = json.loads(body)
    except UnicodeDecodeError as exc:
        raise UserInputError(f"the body is not UTF-8 at byte {exc.start}", error="invalid_json", status_code=400) from None
    except ValueError as exc:
        raise UserInputError(f"the body is not valid JSON: {exc}", error="invalid_json", status_code=400) from None
    if not isinstance(value, dict):
        raise UserInputError("the JSON body must be an object", error="invalid_json", status_code=400)
    return value
