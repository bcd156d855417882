#!/usr/bin/env python3
"""Whole-file throughput through Ray Serve: the same burst of /generate requests with 1 replica and
with --replicas replicas, on a local Ray cluster this script starts and stops.

Deploys serve_config.yaml with a fixed replica count (scaled in place between the two runs), warms
every replica, then sends --requests requests of about 10 s of speech, --concurrency at a time,
through Ray's proxy. Replicas read the current environment (AVATAR_BACKEND, MODELS_DIR...).
Prints one JSON line: per replica count the best of --rounds runs (alternating, so that load
drifting on a shared machine weighs on both): wall time, requests/s, seconds of video made per
second, latency, failures and requests per replica; `speedup` is the ratio of the best throughputs.

    .venv/bin/python scripts/bench_ray.py                                    2 CPU replicas vs 1
    AVATAR_BACKEND=liveportrait MODELS_DIR=... python scripts/bench_ray.py \\
        --replicas 2 --gpus-per-replica 1 --requests 32 --concurrency 32     2 GPUs vs 1 (issue 18)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from bench import TEN_SECONDS_OF_SPEECH  # noqa: E402  (scripts/ is on the path when run as a script)
from runtime.serve_app import deploy, start_local_cluster  # noqa: E402
from testkit.service import free_port  # noqa: E402


def wait_for_replicas(count: int, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get("avatar")
        running = status.deployments["AvatarService"].replica_states.get("RUNNING", 0) if status else 0
        if status is not None and status.status == "RUNNING" and running == count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} replicas not running after {timeout_s:.0f} s: {status}")
        time.sleep(0.5)


def burst(url: str, text: str, requests: int, concurrency: int) -> dict:
    def one(_: int) -> tuple[int, float, float, str]:
        started = time.perf_counter()
        response = httpx.post(f"{url}/generate", json={"text": text}, timeout=900)
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            return response.status_code, seconds, 0.0, ""
        return 200, seconds, float(response.headers["x-video-duration"]), response.headers["x-serve-replica"]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    served = [a for a in answers if a[0] == 200]
    latencies = sorted(a[1] for a in served) or [float("nan")]
    per_replica: dict[str, int] = {}
    for answer in served:
        per_replica[answer[3]] = per_replica.get(answer[3], 0) + 1
    return {
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(served) / wall, 3),
        "video_s_per_s": round(sum(a[2] for a in served) / wall, 2),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_max_s": round(latencies[-1], 2),
        "failed": len(answers) - len(served),
        "per_replica": sorted(per_replica.values(), reverse=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2, help="compared with 1 replica (1: that run alone)")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=None, help="default: --requests (all at once)")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, help="0: replicas on CPUs")
    parser.add_argument("--cpus-per-replica", type=float, default=None,
                        help="Ray's CPU accounting per replica (default: this machine's cores / --replicas)")
    parser.add_argument("--max-ongoing-requests", type=int, default=None,
                        help="requests a replica holds at once, the rest wait at the proxy (default: the config's)")
    parser.add_argument("--text", default=TEN_SECONDS_OF_SPEECH)
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each replica count, alternating; the best counts")
    args = parser.parse_args()
    concurrency = args.concurrency or args.requests
    cores = os.cpu_count() or 1
    cpus_per_replica = args.cpus_per_replica or max(cores / args.replicas, 0.01)
    load_before = os.getloadavg()[0]

    counts = sorted({1, args.replicas})
    limits = {} if args.max_ongoing_requests is None else {"max_ongoing_requests": args.max_ongoing_requests}
    runs: dict[int, list[dict]] = {count: [] for count in counts}
    # Ray's driver prints some of its own lines on stdout; this script's stdout is its JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        start_local_cluster(num_cpus=cores, log_to_driver=False)
        try:
            port = free_port()
            for _ in range(args.rounds):  # alternating, so a machine whose load drifts weighs on both
                for replicas in counts:
                    url = deploy(host="127.0.0.1", port=port, wait_s=900, replicas=replicas,
                                 gpus_per_replica=args.gpus_per_replica, cpus_per_replica=cpus_per_replica,
                                 **limits)
                    wait_for_replicas(replicas)
                    burst(url, "Warm up the caches.", 2 * replicas, 2 * replicas)  # every replica answers
                    runs[replicas].append(burst(url, args.text, args.requests, concurrency))
            health = httpx.get(f"{url}/health", timeout=60).json()
        finally:
            serve.shutdown()
            ray.shutdown()
    best = {count: max(found, key=lambda run: run["requests_per_s"]) for count, found in runs.items()}
    result = {
        "backend": health["avatar_backend"], "device": health["device"], "replicas": args.replicas,
        "requests": args.requests, "concurrency": concurrency, "gpus_per_replica": args.gpus_per_replica,
        "cpus_per_replica": cpus_per_replica, "max_ongoing_requests": args.max_ongoing_requests or "config",
        "cores": cores, "rounds": args.rounds,
        "load_avg_1min_before": round(load_before, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2),
        "best": {f"{count}_replicas": run for count, run in best.items()},
        "wall_s_each_round": {f"{count}_replicas": [run["wall_s"] for run in found] for count, found in runs.items()},
    }
    if args.replicas > 1:
        result["speedup"] = round(best[args.replicas]["requests_per_s"] / best[1]["requests_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
