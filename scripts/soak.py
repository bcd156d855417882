#!/usr/bin/env python
"""Soak test: mixed traffic against a local server for --minutes, then ONE JSON line.

    python scripts/soak.py --minutes 10 [--clients 3] [--seed 0]

Starts the service on 127.0.0.1 (the embedded default, or whatever the environment configures),
runs `--clients` concurrent clients that each pick, request after request: a short or a long text, an
uploaded portrait (PNG or JPEG), a registered avatar, a bad input (control character, bad base64,
text/plain, deep JSON, fps over the limit, an oversized text), a client that hangs up mid-render,
or a probe. Reports requests, answers by class, latency p50/p95 of completed requests, and the
server's RSS (from /proc) at start (idle, warm), peak and end.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testkit.service import PeakRss, rss_bytes, running_service  # noqa: E402

SHORT_TEXTS = ["Hello there.", "Good morning, how are you today?", "This is a short sentence to speak.",
               "The weather is lovely and the sky is clear."]
LONG_TEXT = ("This is a longer passage that the avatar reads aloud, sentence after sentence, so that the "
             "pipeline has real work to do. It keeps going with clauses, commas and a few numbers like 42 "
             "and 1999, and then it ends. ") * 2


def _portraits() -> list[str]:
    """Base64 portraits: the bundled avatar as PNG, as a JPEG, and shifted (a portrait not seen yet)."""
    image = Image.open(REPO / "runtime" / "assets" / "default_avatar.png").convert("RGB")
    encoded = []
    for variant, fmt in ((image, "PNG"), (image, "JPEG"), (image.transform(image.size, Image.AFFINE, (1, 0, 8, 0, 1, 4)), "PNG")):
        buffer = io.BytesIO()
        variant.save(buffer, format=fmt)
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    return encoded


class Soak:
    def __init__(self, url: str, seed: int):
        self.url = url
        self.random = random.Random(seed)
        self.portraits = _portraits()
        self.avatar_id: str | None = None
        self.lock = threading.Lock()
        self.requests = 0
        self.classes: Counter[str] = Counter()
        self.latencies: list[float] = []

    def _record(self, kind: str, outcome: str, seconds: float | None) -> None:
        with self.lock:
            self.requests += 1
            self.classes[outcome] += 1
            if seconds is not None:
                self.latencies.append(seconds)

    def _classify(self, response: httpx.Response, expect_error: bool) -> str:
        status = response.status_code
        if status < 300:
            return "2xx_unexpected" if expect_error else "2xx"
        if status < 500:
            try:
                return f"4xx:{response.json()['error']}"
            except ValueError:
                return f"4xx:{status}_not_json"
        return f"5xx:{status}"

    def one(self, client: httpx.Client) -> None:
        choice = self.random.choices(
            ["short", "long", "portrait", "avatar", "bad", "disconnect", "probe"],
            weights=[30, 8, 15, 10, 22, 7, 8])[0]
        started = time.monotonic()
        expect_error = False
        try:
            if choice == "short":
                response = client.post("/generate", json={"text": self.random.choice(SHORT_TEXTS)})
            elif choice == "long":
                response = client.post("/generate", json={"text": LONG_TEXT})
            elif choice == "portrait":
                response = client.post("/generate", json={"text": self.random.choice(SHORT_TEXTS),
                                                          "image": self.random.choice(self.portraits)})
            elif choice == "avatar":
                if self.avatar_id is None:
                    registered = client.post("/avatars", json={"image": self.portraits[0]})
                    if registered.status_code >= 300:
                        self._record("register", self._classify(registered, False), time.monotonic() - started)
                        return
                    self.avatar_id = registered.json()["avatar_id"]
                response = client.post("/generate", json={"text": self.random.choice(SHORT_TEXTS),
                                                          "avatar_id": self.avatar_id})
            elif choice == "bad":
                expect_error = True
                response = self._bad(client)
            elif choice == "disconnect":
                try:
                    with httpx.Client(base_url=self.url, timeout=httpx.Timeout(1.0)) as impatient:
                        impatient.post("/generate", json={"text": LONG_TEXT})
                    self._record(choice, "2xx_before_hangup", time.monotonic() - started)
                except httpx.TimeoutException:
                    self._record(choice, "hung_up", None)
                return
            else:
                response = client.get(self.random.choice(["/health", "/health/ready", "/health/live", "/metrics"]))
        except httpx.HTTPError as exc:
            self._record(choice, f"transport:{type(exc).__name__}", None)
            return
        self._record(choice, self._classify(response, expect_error), time.monotonic() - started)

    def _bad(self, client: httpx.Client) -> httpx.Response:
        kind = self.random.choice(["nul", "surrogate", "base64", "plain", "deep", "fps", "long", "digits"])
        if kind == "nul":
            return client.post("/generate", json={"text": "a\u0000b"})
        if kind == "surrogate":
            return client.post("/generate", content=b'{"text": "x\\udc00y"}', headers={"content-type": "application/json"})
        if kind == "base64":
            return client.post("/generate", json={"text": "Hello.", "image": "%%% not base64"})
        if kind == "plain":
            return client.post("/generate", content=b"text=hello", headers={"content-type": "text/plain"})
        if kind == "deep":
            return client.post("/generate", content=b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                               headers={"content-type": "application/json"})
        if kind == "fps":
            return client.post("/generate", json={"text": "Hello.", "fps": 500})
        if kind == "long":
            return client.post("/generate", json={"text": "a" * 5000})
        return client.post("/generate", json={"text": "1234567890" * 200})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="how long to send traffic")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="soak-data-")  # registered avatars of this run only
    with running_service({"DATA_DIR": data_dir}, startup_timeout_s=900, output=sys.stderr) as service:
        url, process = service.url, service.process
        pid = process.pid
        soak = Soak(url, args.seed)
        with httpx.Client(base_url=url, timeout=300) as client:  # warm: one ordinary request before the idle reading
            client.post("/generate", json={"text": "Warming up."})
        time.sleep(0.5)
        rss_start = rss_bytes(pid)
        deadline = time.monotonic() + args.minutes * 60

        def client_loop(index: int) -> None:
            with httpx.Client(base_url=url, timeout=300) as client:
                while time.monotonic() < deadline:
                    soak.one(client)

        with PeakRss(pid, interval_s=0.2) as memory:
            clients = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(timeout=args.minutes * 60 + 600)
            time.sleep(2.0)  # let cancelled work wind down before the end reading
        alive = process.poll() is None
        rss_end = rss_bytes(pid) if alive else 0
    shutil.rmtree(data_dir, ignore_errors=True)

    latencies = sorted(soak.latencies)
    report = {
        "minutes": args.minutes,
        "clients": args.clients,
        "requests": soak.requests,
        "answers": dict(sorted(soak.classes.items())),
        "server_errors": sum(count for name, count in soak.classes.items() if name.startswith(("5xx", "transport"))),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "rss_start_mb": round(rss_start / 2**20),
        "rss_peak_mb": round(memory.peak_bytes / 2**20),
        "rss_end_mb": round(rss_end / 2**20),
        "server_alive_at_end": alive,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
