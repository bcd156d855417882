"""Who may call the service: API keys (`Authorization: Bearer <key>`) and a per-key rate limit."""
from __future__ import annotations

import hmac
import math
import threading
import time
from collections import OrderedDict
from typing import Optional
from urllib.parse import parse_qs

from ..observability import Metrics
from .guards import ASGIApp, Receive, Scope, Send, header, send_json_error

# Orchestrators probe these without credentials; everything else needs a key when keys are set.
OPEN_PATHS = frozenset({"/health/live", "/health/ready"})
# Not counted against a client's rate: scraping and probing are not work.
UNMETERED_PATHS = OPEN_PATHS | {"/metrics"}


class TokenBucket:
    """Per-client token buckets: `burst` requests at once, refilled at `per_minute`. Keeps at most
    `max_clients` buckets (least recently seen dropped), so unknown clients cannot grow it without end."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str, now: Optional[float] = None) -> float:
        """0 when the request may go ahead (a token is taken), else the seconds until one is free."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


def _presented_key(scope: Scope) -> Optional[str]:
    authorization = header(scope, b"authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None
    if scope["type"] == "websocket":  # a browser cannot set headers on a WebSocket: ?api_key= there
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
        return values[0] if values else None
    return None


class AccessGuard:
    """API keys and the rate limit. Keys are compared in constant time (hmac.compare_digest) against
    every configured key, so timing tells nothing about how much of a guess was right."""

    def __init__(self, app: ASGIApp, keys: list[str], per_minute: float, burst: int, metrics: Metrics):
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.limiter = TokenBucket(per_minute, burst) if per_minute > 0 else None
        self.metrics = metrics

    def _authorized_key(self, presented: Optional[str]) -> Optional[str]:
        if presented is None:
            return None
        candidate = presented.encode()
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(candidate, key)
        return presented if matched else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS or (
            scope["type"] == "http" and scope["method"] == "OPTIONS"  # CORS preflights carry no credentials
        ):
            await self.app(scope, receive, send)
            return
        client = None
        if self.keys:
            client = self._authorized_key(_presented_key(scope))
            if client is None:
                await self._refuse(scope, receive, send, 401, "unauthorized",
                                   "send a valid API key as `Authorization: Bearer <key>`",
                                   {"www-authenticate": "Bearer"})
                return
        if self.limiter is not None and scope["path"] not in UNMETERED_PATHS:
            client_id = "key:" + client if client else "addr:" + ((scope.get("client") or ("?",))[0])
            wait = self.limiter.take(client_id)
            if wait > 0:
                self.metrics.rate_limited.inc()
                await self._refuse(scope, receive, send, 429, "rate_limited",
                                   f"too many requests; retry in {math.ceil(wait)} s",
                                   {"retry-after": str(math.ceil(wait))})
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, error: str, detail: str,
                      headers: dict[str, str]) -> None:
        if scope["type"] == "websocket":  # close the handshake with a policy-violation code
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            return
        await send_json_error(send, scope, status, error, detail, headers)
