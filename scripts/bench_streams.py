#!/usr/bin/env python3
"""Many streams at once: how many concurrent /generate/stream clients a server keeps real time.

Starts the service with the current environment (AVATAR_BACKEND, MODELS_DIR...) as
scripts/bench_stream.py does, or uses --url (any server: this service, or one behind Ray Serve).
For each level N of --streams, N clients post the same ~12 s text (or --audio) at once, each with
its own portrait (warmed beforehand, so preparation is not in the figures), and read their streams
as players would. One JSON line per level:

  aggregate_fps          video frames the N clients received per second of the level's wall time
  batch_fill             frames per batch over the batch size, from /metrics (null where absent)
  first_frame_p50/p95_ms request -> first decodable frame, over the admitted streams
  real_time_fraction     admitted streams never behind a player that started at their first frame
  deadline_misses        frames the server's scheduler handed back late, from /metrics (null where absent)
  refused                streams answered 503 (admission control), with Retry-After

--whole-file N,...: N concurrent POST /generate of the same text instead; one JSON line per level
with the total wall time and the per-request p50/p95.

    .venv/bin/python scripts/bench_streams.py --streams 1,4,8
    .venv/bin/python scripts/bench_streams.py --url http://127.0.0.1:8001 --streams 1,4,8,16,24 --whole-file 8
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from runtime.media.fmp4 import FragmentReader  # noqa: E402
from testkit.mp4 import first_video_frame  # noqa: E402
from testkit.service import local_service  # noqa: E402

from bench_stream import new_portrait  # noqa: E402  (scripts/ is on the path when run as a script)

TEXT = ("Good morning, and welcome to the show. Today we are going to talk about the mountains of the north, "
        "the rivers that run down from them, and the small towns along their banks, where people still bake "
        "bread the way their grandparents did.")  # about 12 s with the bundled Piper voice

SCHEDULER_COUNTERS = ("avatar_render_frames_total", "avatar_render_batches_total",
                      "avatar_render_deadline_misses_total", "avatar_render_streams_refused_total")


def percentile(values: list[float], share: float) -> Optional[float]:
    return float(np.percentile(values, share)) if values else None


def scrape(client: httpx.Client) -> dict[str, float]:
    """The scheduler's counters summed over devices; empty where the server has no /metrics."""
    try:
        response = client.get("/metrics", timeout=10)
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    totals: dict[str, float] = {}
    for line in response.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in SCHEDULER_COUNTERS:
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def batch_size(client: httpx.Client) -> Optional[int]:
    try:
        return client.get("/health", timeout=10).json()["detail"]["rendering"].get("batch_size")
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None


def one_stream(url: str, body: dict, start: threading.Barrier, results: list, index: int) -> None:
    """One player: request -> first decodable frame, and each fragment's arrival against playback."""
    reader = FragmentReader()
    data = bytearray()
    arrivals: list[tuple[float, float]] = []  # (seconds since the request, fragment's media start)
    first_frame = None
    frames = 0
    with httpx.Client(base_url=url, timeout=600) as client:
        start.wait()
        started = time.perf_counter()
        try:
            with client.stream("POST", "/generate/stream", json=body) as response:
                if response.status_code != 200:
                    results[index] = {"status": response.status_code,
                                      "retry_after": response.headers.get("retry-after")}
                    response.read()
                    return
                for chunk in response.iter_raw():
                    now = time.perf_counter() - started
                    data.extend(chunk)
                    for fragment in reader.feed(chunk):
                        arrivals.append((now, fragment.start_seconds("video")))
                        frames += fragment.runs["video"].samples
                    if first_frame is None and arrivals and first_video_frame(bytes(data)) is not None:
                        first_frame = time.perf_counter() - started
        except httpx.HTTPError as error:
            results[index] = {"status": f"{type(error).__name__}: {error}"}
            return
    finished = time.perf_counter() - started
    margins = [first_frame + media_start - arrived for arrived, media_start in arrivals] if first_frame else [-1.0]
    results[index] = {"status": 200, "first_frame": first_frame, "min_margin": min(margins), "frames": frames,
                      "started": started, "finished": started + finished}


def backend_name(client: httpx.Client) -> Optional[str]:
    """The server's avatar backend from /health; None where it has no such endpoint."""
    try:
        return client.get("/health", timeout=10).json().get("avatar_backend")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def run_streams(url: str, bodies: list[dict]) -> dict:
    count = len(bodies)
    results: list = [None] * count
    start = threading.Barrier(count + 1)
    threads = [threading.Thread(target=one_stream, args=(url, body, start, results, index))
               for index, body in enumerate(bodies)]
    with httpx.Client(base_url=url) as client:
        before = scrape(client)
        for thread in threads:
            thread.start()
        start.wait()
        level_started = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - level_started
        after = scrape(client)
        size = batch_size(client)
    served = [r for r in results if r and r["status"] == 200]
    refused = [r for r in results if r and r["status"] == 503]
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    fill = None
    if size and delta.get("avatar_render_batches_total"):
        fill = delta["avatar_render_frames_total"] / (delta["avatar_render_batches_total"] * size)
    first_frames = [r["first_frame"] for r in served if r["first_frame"] is not None]
    return {
        "streams": count,
        "admitted": len(served),
        "refused": len(refused),
        "retry_after": refused[0]["retry_after"] if refused else None,
        "failed": [r["status"] for r in results if r and r["status"] not in (200, 503)],
        "aggregate_fps": round(sum(r["frames"] for r in served) / wall, 1),
        "batch_fill": None if fill is None else round(fill, 3),
        "first_frame_p50_ms": None if not first_frames else round(1000 * percentile(first_frames, 50)),
        "first_frame_p95_ms": None if not first_frames else round(1000 * percentile(first_frames, 95)),
        "real_time_fraction": round(sum(r["min_margin"] >= 0 for r in served) / len(served), 3) if served else None,
        "worst_margin_s": round(min(r["min_margin"] for r in served), 3) if served else None,
        "deadline_misses": None if "avatar_render_deadline_misses_total" not in delta
        else int(delta["avatar_render_deadline_misses_total"]),
        "wall_s": round(wall, 2),
    }


def run_whole_files(url: str, bodies: list[dict]) -> dict:
    seconds: list[Optional[float]] = [None] * len(bodies)
    statuses: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies) + 1)

    def generate(index: int, body: dict) -> None:
        with httpx.Client(base_url=url, timeout=900) as client:
            start.wait()
            started = time.perf_counter()
            try:
                response = client.post("/generate", json=body)
                statuses[index] = response.status_code
            except httpx.HTTPError as error:
                statuses[index] = f"{type(error).__name__}: {error}"
            seconds[index] = time.perf_counter() - started

    threads = [threading.Thread(target=generate, args=(index, body)) for index, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    start.wait()
    level_started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - level_started
    done = [s for s, status in zip(seconds, statuses) if status == 200]
    return {"mode": "whole_file", "requests": len(bodies), "ok": len(done),
            "statuses": sorted({str(status) for status in statuses}), "wall_s": round(wall, 2),
            "p50_s": round(percentile(done, 50), 2) if done else None,
            "p95_s": round(percentile(done, 95), 2) if done else None}


def levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--streams", type=levels, default=[1, 4, 8, 16, 24],
                        help="comma-separated concurrent stream counts (default 1,4,8,16,24)")
    parser.add_argument("--whole-file", type=levels, default=[],
                        help="comma-separated concurrent whole-file /generate counts (e.g. 8)")
    parser.add_argument("--audio", type=Path, help="a speech file sent as `audio` instead of the text (no TTS)")
    parser.add_argument("--fps", type=int, help="frames per second asked for (default: the server's)")
    parser.add_argument("--same-portrait", action="store_true",
                        help="every client sends the default portrait (default: one portrait each)")
    args = parser.parse_args()

    base: dict = {"text": TEXT}
    if args.audio is not None:
        base = {"text": "", "audio": base64.b64encode(args.audio.read_bytes()).decode()}
    if args.fps:
        base["fps"] = args.fps
    most = max(args.streams + args.whole_file + [1])
    images = [None] * most if args.same_portrait else [new_portrait(seed) for seed in range(most)]

    def bodies(count: int) -> list[dict]:
        return [{**base, **({"image": images[index]} if images[index] else {})} for index in range(count)]

    server = nullcontext(args.url) if args.url else local_service()
    with server as url:
        with httpx.Client(base_url=url, timeout=600) as client:
            for image in dict.fromkeys(images):  # each portrait prepared once, outside the figures
                warm = {"text": "Warm up.", **({"image": image} if image else {})}
                client.post("/generate", json=warm).raise_for_status()
            backend = backend_name(client)
        for count in args.streams:
            print(json.dumps({"backend": backend, "mode": "streams", **run_streams(url, bodies(count))}), flush=True)
        for count in args.whole_file:
            print(json.dumps({"backend": backend, **run_whole_files(url, bodies(count))}), flush=True)


if __name__ == "__main__":
    main()
