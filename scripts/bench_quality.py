#!/usr/bin/env python3
"""Benchmark scoring: QualityScorer.score on a 10 s clip the embedded default renders (Piper +
meshwarp, 512 px, 25 fps), without SyncNet weights, on this machine's CPU. Target: <= 5 s.
Prints ONE JSON line (the median of --runs, and each run).

    python scripts/bench_quality.py [--runs 3] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.config import load_settings  # noqa: E402
from runtime.device import DeviceChoice  # noqa: E402
from runtime.media.audio import Speech, frame_count, pad_to_frames  # noqa: E402
from runtime.media.encode import encode_mp4  # noqa: E402
from runtime.media.portrait import load_portrait_file  # noqa: E402
from runtime.models.meshwarp_model import MeshWarpBackend  # noqa: E402
from runtime.quality import QualityScorer  # noqa: E402
from runtime.tts.piper_engine import PiperEngine  # noqa: E402

TEXT = ("Good morning and welcome. Today we look at how a talking portrait is made from text: "
        "the words become speech, the speech moves the face, and the frames become a video.")


def render_clip(seconds: float, path: Path) -> tuple[Path, np.ndarray]:
    settings, cpu = load_settings(), DeviceChoice("cpu", "bench", False)
    speech = PiperEngine.load(settings, cpu).synthesize(TEXT)
    while speech.duration < seconds:  # repeat the sentence until it is long enough
        speech = Speech(np.concatenate([speech.samples, speech.samples]), speech.sample_rate)
    speech = pad_to_frames(Speech(speech.samples[: int(seconds * speech.sample_rate)], speech.sample_rate), 25)
    portrait = load_portrait_file(settings.default_avatar)
    frames = MeshWarpBackend.load(settings, cpu).animate(portrait, speech, 25, frame_count(speech.duration, 25))
    encode_mp4(frames, speech, 25, path)
    return path, portrait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    clip, portrait = render_clip(args.seconds, workdir / "clip.mp4")
    started = time.perf_counter()
    scorer = QualityScorer.load(workdir / "no-weights")
    load_seconds = time.perf_counter() - started
    runs, report = [], None
    for _ in range(args.runs):
        started = time.perf_counter()
        report = scorer.score(clip, portrait)
        runs.append(round(time.perf_counter() - started, 3))
    print(json.dumps({
        "bench": "quality_score", "clip_seconds": report["clip"]["video_duration_s"], "frames": report["clip"]["frames"],
        "size": f"{report['clip']['width']}x{report['clip']['height']}", "syncnet": report["syncnet"]["available"],
        "with_portrait": True, "load_seconds": round(load_seconds, 3), "score_seconds_median": statistics.median(runs),
        "score_seconds_runs": runs, "target_seconds": 5.0, "lip_sync_score": report["lip_sync"]["score"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
