#!/usr/bin/env python3
"""Real-time factor of the configured TTS engine, as the service loads it (TTS_ENGINE, PIPER_VOICE,
COQUI_MODEL / COQUI_MODEL_PATH, DEVICE...). Prints one JSON line:

  {"engine": "piper", "model": "en_US-joe-medium", "device": "cpu", "seconds": 0.31,
   "speech_seconds": 10.2, "rtf": 0.030, ...}

seconds is the median wall time of --repeat syntheses of the text (after one warm-up),
speech_seconds the length of what it said, rtf = seconds / speech_seconds (lower is faster).
Exits 2 when the requested engine could not load and another one was measured.

  .venv/bin/python scripts/bench_tts.py
  TTS_ENGINE=coqui COQUI_MODEL_PATH=... .venv-coqui/bin/python scripts/bench_tts.py --repeat 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# About ten seconds of speech: the length the design's figures are quoted for.
TEXT = (
    "Hello there! I am a talking head, made from a single photograph. "
    "Today we will talk about mountains, oceans and the moon. How does that sound to you?"
)


def measure_tts(text: str = TEXT, repeat: int = 3, voice: str | None = None) -> dict:
    """Load the configured engine as the service does and time it; the JSON fields above."""
    from runtime.config import load_settings
    from runtime.device import select_device
    from runtime.tts.factory import load_tts_engine

    settings = load_settings()
    device = select_device(settings)
    started = time.perf_counter()
    engine, selection = load_tts_engine(settings, device)
    load_seconds = time.perf_counter() - started

    engine.synthesize(text, voice=voice)  # warm-up: first-call allocations, caches
    times, speech = [], None
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        speech = engine.synthesize(text, voice=voice)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    described = engine.describe()
    return {
        "engine": engine.name,
        "model": described.get("model", described.get("voice")),
        "voice": voice or engine.default_voice,
        "device": device.name,
        "seconds": round(seconds, 4),
        "speech_seconds": round(speech.duration, 3),
        "rtf": round(seconds / speech.duration, 4),
        "load_seconds": round(load_seconds, 2),
        "repeat": len(times),
        "requested": selection.requested,
        "fallback_reason": selection.fallback_reason,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Real-time factor of the configured TTS engine")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--voice", default=None, help="a voice of the engine (default: its default voice)")
    options = parser.parse_args()
    result = measure_tts(options.text, options.repeat, options.voice)
    print(json.dumps(result))
    if result["fallback_reason"]:
        print(f"the requested engine did not load: {result['fallback_reason']}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
