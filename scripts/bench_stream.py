#!/usr/bin/env python3
"""Streaming benchmark: how soon /generate/stream shows a frame, and whether it stays ahead of playback.

Starts the service with the current environment (AVATAR_BACKEND, MODELS_DIR...) as scripts/bench.py
does, or uses --url. For a one-sentence text and a ~60 s text, each with a portrait the server has
not seen (its preparation is part of the figure), it reads the stream as a player would and prints
one JSON line: time to first byte, time to first decodable frame, and the minimum margin by which
each fragment arrived before a player that started at the first frame needed it (negative: a stall),
with the machine's 1-minute load average before and after (figures on a shared CPU depend on it).

    .venv/bin/python scripts/bench_stream.py
    AVATAR_BACKEND=liveportrait MODELS_DIR=... .venv/bin/python scripts/bench_stream.py --runs 3
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from runtime.config import PACKAGE_DIR  # noqa: E402
from runtime.media.fmp4 import FragmentReader  # noqa: E402
from testkit.mp4 import first_video_frame  # noqa: E402
from testkit.service import local_service  # noqa: E402

ONE_SENTENCE = "Hello there, it is good to see you again today."
PARAGRAPH = (
    "Good morning, and welcome to the show. Today we are going to talk about the mountains of the north, "
    "the rivers that run down from them, and the small towns along their banks, where people still bake bread "
    "the way their grandparents did. "
)
SIXTY_SECONDS = PARAGRAPH * 5  # about 60 s of speech with the bundled Piper voice


def new_portrait(seed: int) -> str:
    """The bundled portrait with faint noise: a new image hash, so the server prepares it afresh."""
    image = np.asarray(Image.open(PACKAGE_DIR / "assets" / "default_avatar.png").convert("RGB")).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-2, 3, size=image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image + noise, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def measure(client: httpx.Client, text: str, image: str) -> dict:
    """One streamed request, read chunk by chunk with arrival times."""
    reader = FragmentReader()
    body = bytearray()
    started = time.perf_counter()
    first_byte = first_frame = None
    arrivals = []  # (seconds since the request, fragment start in media seconds)
    end_media = 0.0
    with client.stream("POST", "/generate/stream", json={"text": text, "image": image}) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            now = time.perf_counter() - started
            if first_byte is None:
                first_byte = now
            body.extend(chunk)
            for fragment in reader.feed(chunk):
                arrivals.append((now, fragment.start_seconds("video")))
                end_media = fragment.end_seconds("video")
            if first_frame is None and arrivals and first_video_frame(bytes(body)) is not None:
                first_frame = time.perf_counter() - started
    total = time.perf_counter() - started
    # A player starts at the first frame; fragment k is needed at first_frame + its media start.
    margins = [first_frame + media_start - arrived for arrived, media_start in arrivals]
    return {"ttfb": first_byte, "first_frame": first_frame, "min_margin": min(margins), "seconds": total,
            "speech_seconds": end_media, "fragments": len(arrivals),
            "backend": response.headers.get("x-avatar-backend")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--runs", type=int, default=3, help="requests per text (each with a new portrait)")
    args = parser.parse_args()

    server = nullcontext(args.url) if args.url else local_service()
    results = {"load_before": round(os.getloadavg()[0], 2)}
    with server as url, httpx.Client(base_url=url, timeout=600) as client:
        client.post("/generate", json={"text": "Warm up the caches."}).raise_for_status()
        seed = int(time.time())
        for name, text in (("one_sentence", ONE_SENTENCE), ("sixty_seconds", SIXTY_SECONDS)):
            runs = []
            for _ in range(args.runs):
                seed += 1
                runs.append(measure(client, text, new_portrait(seed)))
            results[name] = {
                "ttfb_ms": round(1000 * statistics.median(r["ttfb"] for r in runs)),
                "first_frame_ms": round(1000 * statistics.median(r["first_frame"] for r in runs)),
                "first_frame_worst_ms": round(1000 * max(r["first_frame"] for r in runs)),
                "min_margin_s": round(min(r["min_margin"] for r in runs), 3),
                "speech_seconds": round(runs[0]["speech_seconds"], 2),
                "stream_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
                "fragments": runs[0]["fragments"],
            }
            backend = runs[0]["backend"]
    results["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"backend": backend, "runs": args.runs, **results}))


if __name__ == "__main__":
    main()
