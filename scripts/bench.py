#!/usr/bin/env python3
"""End-to-end benchmark: about 10 s of speech through HTTP on the configured backend.

Starts the service (as ./scripts/serve.sh would, with the current environment: AVATAR_BACKEND,
MODELS_DIR...), or uses --url. Prints one JSON line: median seconds for TTS, animation, encoding
and total over --runs requests (after one warm-up), the real-time factor, and the TTS engine's own
real-time factor measured in the same process.

    .venv/bin/python scripts/bench.py
    AVATAR_BACKEND=liveportrait MODELS_DIR=... .venv/bin/python scripts/bench.py --runs 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench_tts import measure_tts  # noqa: E402  (scripts/ is on the path when run as a script)
from local_service import local_service  # noqa: E402

TEN_SECONDS_OF_SPEECH = (
    "Good morning, and welcome to the show. Today we are going to talk about the mountains of the north, "
    "the rivers that run down from them, and the small towns along their banks, where people still bake bread "
    "the way their grandparents did."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--text", default=TEN_SECONDS_OF_SPEECH)
    args = parser.parse_args()

    server = nullcontext(args.url) if args.url else local_service()
    with server as url:
        with httpx.Client(base_url=url, timeout=600) as client:
            backend = client.get("/health").json()["avatar_backend"]
            client.post("/generate", json={"text": "Warm up the caches."}).raise_for_status()
            runs = []
            for _ in range(args.runs):
                started = time.perf_counter()
                response = client.post("/generate", json={"text": args.text})
                response.raise_for_status()
                wall = time.perf_counter() - started
                runs.append({
                    "http_seconds": wall,
                    "speech_seconds": float(response.headers["x-video-duration"]),
                    **{stage: float(response.headers[f"x-{stage}-seconds"]) for stage in ("tts", "animation", "encoding", "total")},
                })
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    result = {
        "backend": backend,
        "runs": args.runs,
        "speech_seconds": round(median["speech_seconds"], 2),
        "tts_seconds": round(median["tts"], 3),
        "animation_seconds": round(median["animation"], 3),
        "encoding_seconds": round(median["encoding"], 3),
        "total_seconds": round(median["total"], 3),
        "http_seconds": round(median["http_seconds"], 3),
        "rtf": round(median["http_seconds"] / median["speech_seconds"], 3),
    }
    tts = measure_tts(args.text)
    result.update(tts_engine=tts["engine"], tts_only_seconds=tts["seconds"], tts_rtf=tts["rtf"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
