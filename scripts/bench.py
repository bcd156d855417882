#!/usr/bin/env python3
"""End-to-end benchmark: about 10 s of speech through HTTP on the configured backend.

Starts the service (as ./scripts/serve.sh would, with the current environment: AVATAR_BACKEND,
MODELS_DIR...), or uses --url. Prints one JSON line: median seconds for TTS, animation, encoding
and total over --runs requests (after one warm-up), the real-time factor, the TTS engine's own
real-time factor measured in the same process, and `stages`: the median of each stage of the
backend's animate path as /health reports it after each request (portrait lookup, motion,
render-loop launch, device wait, host paste), and `lip_refiner`: whether LIP_REFINER ran and, over
all requests, the share of frames it re-drew and its face detector's hit rate. --short TEXT
measures a second, short text the same way (`short_*` keys), where a fixed cost per request shows.

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
from testkit.service import local_service  # noqa: E402

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
    parser.add_argument("--short", metavar="TEXT", help='also measure this text, e.g. "Hello there, my friend."')
    args = parser.parse_args()

    server = nullcontext(args.url) if args.url else local_service()
    with server as url:
        with httpx.Client(base_url=url, timeout=600) as client:
            health = client.get("/health").json()
            backend = health["avatar_backend"]
            load_seconds = health.get("detail", {}).get("avatar", {}).get("load_seconds")
            client.post("/generate", json={"text": "Warm up the caches."}).raise_for_status()
            result = {"backend": backend, "backend_load_seconds": load_seconds, "runs": args.runs,
                      **measure(client, args.text, args.runs)}
            if args.short:
                result.update({f"short_{key}": value for key, value in measure(client, args.short, args.runs).items()})
            result["lip_refiner"] = refiner_summary(client.get("/health").json())
    tts = measure_tts(args.text)
    result.update(tts_engine=tts["engine"], tts_only_seconds=tts["seconds"], tts_rtf=tts["rtf"])
    print(json.dumps(result))


def refiner_summary(health: dict) -> dict:
    """The lip refiner's part: whether it ran, and over every request so far (warm-up included) how many
    frames it re-drew and how often its face detector found the face (random backend weights may
    render faces it cannot find: then it re-draws little, and its cost here says little)."""
    refiner = health.get("detail", {}).get("lip_refiner", {})
    summary = {"active": refiner.get("active", False), "reason": refiner.get("reason")}
    totals = refiner.get("since_start")
    if totals:
        share = round(totals["refined"] / totals["frames"], 4) if totals["frames"] else None
        summary.update(totals, refined_share=share)
    return summary


def measure(client: httpx.Client, text: str, runs: int) -> dict:
    """Medians over `runs` requests of `text`: seconds by stage from the response headers, and the
    backend's own stages from /health (detail.avatar.last_request, where the backend reports it)."""
    measured, stages = [], []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.post("/generate", json={"text": text})
        response.raise_for_status()
        wall = time.perf_counter() - started
        measured.append({
            "http_seconds": wall,
            "speech_seconds": float(response.headers["x-video-duration"]),
            **{stage: float(response.headers[f"x-{stage}-seconds"]) for stage in ("tts", "animation", "encoding", "total")},
        })
        avatar = client.get("/health").json().get("detail", {}).get("avatar", {})
        stages.append(avatar.get("last_request", {}))
    median = {key: statistics.median(run[key] for run in measured) for key in measured[0]}
    stage_names = [key for key in stages[0] if all(isinstance(s.get(key), (int, float)) for s in stages)]
    return {
        "speech_seconds": round(median["speech_seconds"], 2),
        "tts_seconds": round(median["tts"], 3),
        "animation_seconds": round(median["animation"], 3),
        "encoding_seconds": round(median["encoding"], 3),
        "total_seconds": round(median["total"], 3),
        "http_seconds": round(median["http_seconds"], 3),
        "rtf": round(median["http_seconds"] / median["speech_seconds"], 3),
        "stages": {key: round(statistics.median(s[key] for s in stages), 4) for key in stage_names},
    }


if __name__ == "__main__":
    main()
