#!/usr/bin/env python3
"""Encoder benchmark: the same frames and speech through today's Mp4Encoder and the encoder that
/generate used before the streaming pipeline (commit 21a3434), in one process, on this CPU.

Frames are the bundled portrait moved a little from frame to frame (a talking head's kind of
motion, so x264 does real work), at each --sizes side; the speech is 12 s of a voiced signal at
Piper's 22,050 Hz. Each variant runs --runs times, alternating; the line gives each one's median
seconds and the size of what it wrote:

  before        frames, then the whole soundtrack at the end (the pre-stream encode_mp4)
  file          Mp4Encoder(path=...): a regular mp4, audio interleaved as frames arrive (/generate)
  file_handoff  the same fed from a producer thread through the pipeline's Handoff (as Clip does)
  stream        Mp4Encoder(fragment_frames=...): the fMP4 stream of /generate/stream

What runs beside the encoder in the service can be added: --busy-ms (frames come from a thread
that spends that many ms of pure Python on each, as a render thread's paste and motion code holds
the GIL) and --beside-tts (Piper synthesizes in a thread throughout, as the pipeline's TTS does).

    .venv/bin/python scripts/bench_encode.py --sizes 512 1024 --frames 300
    .venv/bin/python scripts/bench_encode.py --sizes 512 --busy-ms 2 --beside-tts
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from runtime.cancellation import CancelToken  # noqa: E402
from runtime.config import PACKAGE_DIR  # noqa: E402
from runtime.media.audio import Speech, resample  # noqa: E402
from runtime.media.encode import AUDIO_SAMPLE_RATE, Mp4Encoder  # noqa: E402
from runtime.pipeline import Handoff, Worker  # noqa: E402

FPS = 25
SPEECH_RATE = 22050
DISTINCT_FRAMES = 50  # frames cycle through this many poses: bounded memory at 1024 px


def moving_portrait(side: int, count: int) -> list[np.ndarray]:
    """count frames (side, side, 3) RGB uint8: the portrait swaying and nodding by a few pixels."""
    portrait = np.asarray(Image.open(PACKAGE_DIR / "assets" / "default_avatar.png").convert("RGB").resize((side, side)))
    frames = []
    for index in range(count):
        phase = 2 * np.pi * index / count
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), 2.0 * np.sin(phase), 1.0 + 0.01 * np.cos(2 * phase))
        matrix[:, 2] += (side / 100 * np.sin(3 * phase), side / 150 * np.cos(phase))
        frames.append(cv2.warpAffine(portrait, matrix, (side, side), borderMode=cv2.BORDER_REFLECT))
    return frames


def voiced_speech(seconds: float) -> Speech:
    """A 120-200 Hz voiced tone with syllable-rate loudness and a little noise, float32 mono."""
    t = np.arange(int(seconds * SPEECH_RATE)) / SPEECH_RATE
    pitch = 160 + 40 * np.sin(2 * np.pi * 0.7 * t)
    voice = np.sin(2 * np.pi * np.cumsum(pitch) / SPEECH_RATE) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    noise = np.random.default_rng(0).normal(0, 0.02, len(t))
    return Speech((0.4 * voice + noise).astype(np.float32), SPEECH_RATE)


def busy_frames(frames: list[np.ndarray], busy_seconds: float):
    """frames handed over from a producer thread that holds the GIL busy_seconds before each one."""
    token, end = CancelToken(), object()
    out = Handoff(33, token)

    def produce() -> None:
        for frame in frames:
            until = time.perf_counter() + busy_seconds
            while time.perf_counter() < until:
                pass
            out.put(frame)
        out.put(end)

    producer = Worker(produce, "busy-producer")
    while (item := out.get()) is not end:
        yield item
    producer.join()


class BesideTTS:
    """Piper speaking a long text over and over in a thread until stopped."""

    def __init__(self):
        from runtime.config import Settings
        from runtime.device import DeviceChoice
        from runtime.tts.piper_engine import PiperEngine

        self.engine = PiperEngine.load(Settings(), DeviceChoice("cpu", "bench", False))
        self.stop = threading.Event()
        self.spoken = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        text = "Good morning, and welcome to the show. Today we talk about the mountains of the north."
        while not self.stop.is_set():
            self.spoken += self.engine.synthesize(text).duration

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def encode_before(frames, speech: Speech, path: Path, preset: str, crf: int) -> None:
    """The pre-stream encode_mp4 (21a3434), kept here as the reference."""
    audio = resample(speech, AUDIO_SAMPLE_RATE).samples
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = None
        audio_stream = container.add_stream("aac", rate=AUDIO_SAMPLE_RATE, layout="mono")
        audio_stream.bit_rate = 96_000
        for count, frame in enumerate(frames):
            if video is None:
                height, width = frame.shape[:2]
                video = container.add_stream("libx264", rate=FPS)
                video.width, video.height = width - width % 2, height - height % 2
                video.pix_fmt = "yuv420p"
                video.options = {"preset": preset, "crf": str(crf)}
                video.codec_context.time_base = Fraction(1, FPS)
            picture = av.VideoFrame.from_ndarray(frame[: video.height, : video.width], format="rgb24")
            picture.pts = count
            container.mux(video.encode(picture))
        container.mux(video.encode())
        for start in range(0, len(audio), 8192):
            piece = audio[start:start + 8192].astype(np.float32)[None, :]
            block = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            block.sample_rate = AUDIO_SAMPLE_RATE
            block.pts = start
            container.mux(audio_stream.encode(block))
        container.mux(audio_stream.encode())


def encode_file(frames, speech: Speech, path: Path, preset: str, crf: int) -> None:
    encoder = Mp4Encoder(FPS, path=path, preset=preset, crf=crf)
    encoder.add_speech(speech)
    for frame in frames:
        encoder.add_frame(frame)
    encoder.close()


def encode_file_handoff(frames, speech: Speech, path: Path, preset: str, crf: int) -> None:
    """As Clip._run: a producer thread hands speech and frames over a bounded Handoff (33 items)."""
    token, end = CancelToken(), object()
    out = Handoff(33, token)

    def produce() -> None:
        out.put(speech)
        for frame in frames:
            out.put(frame)
        out.put(end)

    producer = Worker(produce, "producer")
    encoder = Mp4Encoder(FPS, path=path, preset=preset, crf=crf)
    while (item := out.get()) is not end:
        if isinstance(item, Speech):
            encoder.add_speech(item)
        else:
            encoder.add_frame(item)
    encoder.close()
    producer.join()


def encode_stream(frames, speech: Speech, path: Path, preset: str, crf: int) -> None:
    encoder = Mp4Encoder(FPS, fragment_frames=FPS, preset=preset, crf=crf)
    encoder.add_speech(speech)
    with open(path, "wb") as out:
        for frame in frames:
            encoder.add_frame(frame)
            out.write(encoder.take())
        encoder.close()
        out.write(encoder.take())


VARIANTS = {"before": encode_before, "file": encode_file, "file_handoff": encode_file_handoff, "stream": encode_stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=20)
    parser.add_argument("--busy-ms", type=float, default=0.0, help="Python work in the producer thread per frame")
    parser.add_argument("--beside-tts", action="store_true", help="Piper synthesizing in a thread meanwhile")
    args = parser.parse_args()

    speech = voiced_speech(args.frames / FPS)
    result = {"frames": args.frames, "preset": args.preset, "crf": args.crf, "cpus": os.cpu_count(),
              "busy_ms": args.busy_ms, "beside_tts": args.beside_tts, "av": av.__version__,
              "load_before": round(os.getloadavg()[0], 2), "seconds": {}, "kilobytes": {}}
    beside = BesideTTS() if args.beside_tts else nullcontext()
    with tempfile.TemporaryDirectory() as workdir, beside:
        for side in args.sizes:
            poses = moving_portrait(side, DISTINCT_FRAMES)
            frames = [poses[index % DISTINCT_FRAMES] for index in range(args.frames)]
            timings: dict[str, list[float]] = {name: [] for name in args.variants}
            for _ in range(args.runs):
                for name in args.variants:
                    source = busy_frames(frames, args.busy_ms / 1000) if args.busy_ms else frames
                    started = time.perf_counter()
                    VARIANTS[name](source, speech, Path(workdir) / f"{name}.mp4", args.preset, args.crf)
                    timings[name].append(time.perf_counter() - started)
            result["seconds"][str(side)] = {name: round(statistics.median(values), 3)
                                            for name, values in timings.items()}
            result["kilobytes"][str(side)] = {name: round((Path(workdir) / f"{name}.mp4").stat().st_size / 1024)
                                              for name in args.variants}
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
