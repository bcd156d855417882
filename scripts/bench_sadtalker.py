#!/usr/bin/env python3
"""Benchmark the SadTalker face renderer: our engine against upstream, same weights, same run.

Measured: frames/s of the face renderer (mapping net + keypoint transform + generator, frames
copied to the host as uint8) at 256 px, for
  - upstream's `make_animation` (PyPI sadtalker-z) as its pipeline runs it (batch_size 2, fp32)
    and in its best configuration (batch 64, fp16 on GPUs), the honest baseline;
  - our renderer over batch sizes, eager (fp16 on GPUs), and the engine's compiled, graphed batch;
and the engine end to end for a speech clip (coefficients -> keypoints -> render -> paste into
a 512 px portrait -> host), which is the animation part of `/generate`.

Random weights in the official layout unless --models-dir points at real ones. Prints one
JSON object per measurement and writes them all to --json-out.

    python scripts/bench_sadtalker.py                      # cuda if present
    python scripts/bench_sadtalker.py --device cpu --frames 2 --batch-sizes 2 --upstream-frames 2 \
        --speech-seconds 0.4 --skip breakdown
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.engines.sadtalker.coefficients import MotionRequest  # noqa: E402
from runtime.engines.sadtalker.engine import SadTalkerEngine, warm_up  # noqa: E402
from runtime.engines.sadtalker.networks import load_networks  # noqa: E402
from runtime.engines.sadtalker.renderer import FaceRenderer, cpu_has_fast_bf16  # noqa: E402

RESULTS: list[dict] = []


def report(**entry) -> None:
    RESULTS.append(entry)
    print(json.dumps(entry), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def windows(count: int, channels: int, seed: int) -> torch.Tensor:
    """Plausible coefficient windows (count, channels, 27): a source plus smooth jitter."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, channels, 1, generator=g) * 0.3
    return base + torch.randn(count, channels, 27, generator=g) * 0.1


# ---- upstream ------------------------------------------------------------------------------

def render_to_host(renderer, prepared, drive: torch.Tensor, batch: int, count: int) -> None:
    """Render the first `count` driving rows in batches and copy each batch to the host as uint8 frames."""
    for start in range(0, count, batch):
        with torch.inference_mode():
            out = renderer.render_batch(prepared, drive[start:start + batch])
            (out * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def bench_upstream(models_dir: Path, device: torch.device, frames: int, size: int, batch: int = 2,
                   half: bool = False) -> None:
    """Upstream's `make_animation`: as its pipeline runs it (batch_size 2, fp32), or in its best
    configuration measured (FACTS: batch 32-64 with networks and inputs in fp16, ~144 frames/s on
    an H200), the honest baseline for the speed-up."""
    sys.path.insert(0, str(REPO / "tests"))
    from testkit.sadtalker_checkpoints import import_upstream, upstream_face_renderer

    name = f"upstream_make_animation_batched_{'fp16' if half else 'fp32'}" if batch > 2 else "upstream_make_animation"
    upstream = import_upstream()
    if upstream is None:
        report(name=name, skipped="sadtalker-z is not installed")
        return
    kp, generator, mapping = upstream_face_renderer(upstream, models_dir, device)
    dtype = torch.float16 if half else torch.float32
    for network in (kp, generator, mapping):
        network.to(dtype)
    source = torch.rand(batch, 3, size, size, device=device, dtype=dtype)
    source_window = windows(1, 73, 0).expand(batch, -1, -1).to(device, dtype)
    per_item = math.ceil(frames / batch)
    target = windows(batch * per_item, 73, 1).view(batch, per_item, 73, 27).to(device, dtype)

    def run(count: int) -> None:
        out = upstream.animation.make_animation(source, source_window, target[:, :count], generator, kp,
                                                None, mapping)
        # upstream then converts every frame to numpy (AnimateFromCoeff.generate)
        video = out.reshape((-1,) + out.shape[2:])
        [np.transpose(v.float().cpu().numpy(), (1, 2, 0)) for v in video]

    with torch.no_grad():
        run(2)
        sync(device)
        started = time.perf_counter()
        run(per_item)
        sync(device)
    seconds = time.perf_counter() - started
    report(name=name, batch=batch, dtype=str(dtype).removeprefix("torch."), frames=batch * per_item,
           seconds=round(seconds, 3), frames_per_s=round(batch * per_item / seconds, 2))


# ---- ours ----------------------------------------------------------------------------------

def bench_renderer(nets, device: torch.device, dtype: torch.dtype, frames: int, batch_sizes: list[int],
                   size: int, conv_dtype: torch.dtype | None = None) -> None:
    source = torch.rand(1, 3, size, size, device=device)
    renderer = FaceRenderer(copy.deepcopy(nets), device, dtype, conv_dtype=conv_dtype)
    prepared = renderer.prepare_source(source, windows(1, 73, 0))
    for batch in batch_sizes:
        drive = windows(frames, 73, 2)

        def run(count: int) -> None:
            render_to_host(renderer, prepared, drive, batch, count)

        try:
            run(batch)  # warm-up: cuDNN autotuning for this shape
            sync(device)
            started = time.perf_counter()
            run(frames)
            sync(device)
        except torch.OutOfMemoryError:
            report(name="ours_face_renderer", batch=batch, error="out of memory")
            torch.cuda.empty_cache()
            continue
        seconds = time.perf_counter() - started
        report(name="ours_face_renderer", batch=batch, precision=renderer.precision,
               size=size, frames=frames, seconds=round(seconds, 3), frames_per_s=round(frames / seconds, 2))


def bench_breakdown(nets, device: torch.device, dtype: torch.dtype, batch: int, size: int) -> None:
    """Seconds per frame of the renderer's parts (synchronised hooks: indicative only)."""
    renderer = FaceRenderer(copy.deepcopy(nets), device, dtype)
    prepared = renderer.prepare_source(torch.rand(1, 3, size, size, device=device), windows(1, 73, 0))
    generator = renderer.generator
    parts = {"dense_motion": generator.dense_motion_network,
             "hourglass3d": generator.dense_motion_network.hourglass,
             "mask_conv3d_7": generator.dense_motion_network.rewritten_mask or generator.dense_motion_network.mask,
             "third_fourth": generator.third, "decoder": generator.decoder,
             "decoder.G_middle": generator.decoder.G_middle_0, "decoder.up_0": generator.decoder.up_0,
             "decoder.up_1": generator.decoder.up_1}
    totals: dict[str, float] = {k: 0.0 for k in parts}
    marks: dict[str, float] = {}
    handles = []
    for key, module in parts.items():
        def pre(_m, _i, key=key):
            sync(device)
            marks[key] = time.perf_counter()

        def post(_m, _i, _o, key=key):
            sync(device)
            totals[key] += time.perf_counter() - marks[key]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    drive = windows(batch, 73, 3)
    with torch.inference_mode():
        renderer.render_batch(prepared, drive)
        for k in totals:
            totals[k] = 0.0
        sync(device)
        started = time.perf_counter()
        renderer.render_batch(prepared, drive)
        sync(device)
    whole = time.perf_counter() - started
    for handle in handles:
        handle.remove()
    report(name="ours_breakdown_ms_per_frame", batch=batch,
           total=round(whole / batch * 1e3, 3), **{k: round(v / batch * 1e3, 3) for k, v in totals.items()})


def bench_engine(models_dir: Path, device: torch.device, speech_seconds: float, batch: int,
                 compile_renderer: bool | None) -> None:
    """Speech -> full 512 px portrait frames on the host: the animation part of /generate."""
    started = time.perf_counter()
    engine = SadTalkerEngine.load(models_dir / "sadtalker", device, sizes=(256,), batch_size=batch,
                                  compile_renderer=compile_renderer)
    warm_up(engine)
    load_seconds = time.perf_counter() - started
    portrait = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    try:
        from runtime.media.landmarks import FaceLocator
        from runtime.media.portrait import load_portrait_file
        from runtime.config import PACKAGE_DIR

        portrait = load_portrait_file(PACKAGE_DIR / "assets" / "default_avatar.png")
        landmarks, source = FaceLocator().locate(portrait).points, "mediapipe"
    except Exception:  # mediapipe absent (the GPU box): a synthetic frontal layout
        from testkit.sadtalker_checkpoints import synthetic_landmarks

        landmarks, source = synthetic_landmarks(512, 512), "synthetic"
    started = time.perf_counter()
    prepared = engine.prepare_portrait(portrait, landmarks, 256)
    sync(device)
    prepare_seconds = time.perf_counter() - started

    t = np.arange(int(16000 * speech_seconds)) / 16000
    samples = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2.5 * t) > 0)).astype(np.float32)
    fps = 25
    total = math.ceil(speech_seconds * fps)
    for attempt in ("first", "second"):
        started = time.perf_counter()
        frames = engine.animate(prepared, samples, fps, total, MotionRequest())
        motion_seconds = time.perf_counter() - started
        count = sum(1 for _ in frames)
        seconds = time.perf_counter() - started
        report(name="ours_engine_speech_to_frames", run=attempt, compiled=engine.compiled,
               precision=engine.precision, speech_seconds=speech_seconds, frames=count,
               cuda_graphs=engine.cuda_graphs, portrait="512x512", landmarks=source, batch=batch,
               load_seconds=round(load_seconds, 2),
               prepare_portrait_seconds=round(prepare_seconds, 3), motion_seconds=round(motion_seconds, 3),
               seconds=round(seconds, 3), frames_per_s=round(count / seconds, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models-dir", type=Path, help="MODELS_DIR with sadtalker/ (default: random weights)")
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--upstream-frames", type=int, default=64)
    parser.add_argument("--batch-sizes", default="16,32,64")
    parser.add_argument("--dtype", default=None, help="float16 | bfloat16 | float32 (default: fp16 on GPUs)")
    parser.add_argument("--speech-seconds", type=float, default=10.0)
    parser.add_argument("--skip", default="", help="comma list of: upstream, renderer, breakdown, engine")
    parser.add_argument("--eager-engine", action="store_true", help="engine without torch.compile")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if device.type == "cpu" else torch.float16)
    skip = set(filter(None, args.skip.split(",")))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        report(name="environment", gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
               cudnn=torch.backends.cudnn.version())
    else:
        report(name="environment", device=str(device), torch=torch.__version__, threads=torch.get_num_threads())

    models_dir = args.models_dir
    scratch = None
    if models_dir is None:
        from testkit.sadtalker_checkpoints import write_random_checkpoints

        started = time.perf_counter()
        scratch = tempfile.TemporaryDirectory(prefix="sadtalker-bench-")  # 725 MB: removed at the end
        models_dir = write_random_checkpoints(Path(scratch.name))
        report(name="random_checkpoints", seconds=round(time.perf_counter() - started, 1))

    size = 256
    try:
        if "upstream" not in skip:
            bench_upstream(models_dir, device, args.upstream_frames, size)
            if device.type == "cuda":
                bench_upstream(models_dir, device, args.frames, size, batch=64, half=True)
        nets = load_networks(models_dir / "sadtalker", size, "full")
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if "renderer" not in skip:
            bench_renderer(nets, device, dtype, args.frames, batch_sizes, size)
            if device.type == "cpu" and cpu_has_fast_bf16():  # the CPU engine's default precision
                bench_renderer(nets, device, dtype, args.frames, batch_sizes, size, torch.bfloat16)
        best = max((r for r in RESULTS if r.get("name") == "ours_face_renderer" and "frames_per_s" in r),
                   key=lambda r: r["frames_per_s"], default={"batch": batch_sizes[-1]})
        if "breakdown" not in skip:
            bench_breakdown(nets, device, dtype, best["batch"], size)
        if "engine" not in skip:
            bench_engine(models_dir, device, args.speech_seconds, max(batch_sizes),
                         False if args.eager_engine else None)
        ours = [r for r in RESULTS if r.get("name", "").startswith("ours_") and "frames_per_s" in r]
        upstream = [r for r in RESULTS if r.get("name", "").startswith("upstream_") and "frames_per_s" in r]
        if ours and upstream:  # the honest ratio: against upstream's best configuration in this run
            best_ours = max(ours, key=lambda r: r["frames_per_s"])
            best_upstream = max(upstream, key=lambda r: r["frames_per_s"])
            report(name="summary", best_ours=best_ours["name"], best_ours_frames_per_s=best_ours["frames_per_s"],
                   best_upstream=best_upstream["name"], best_upstream_frames_per_s=best_upstream["frames_per_s"],
                   ratio_vs_upstream_best=round(best_ours["frames_per_s"] / best_upstream["frames_per_s"], 2))
    finally:
        if args.json_out:
            args.json_out.write_text(json.dumps(RESULTS, indent=1))
        if scratch is not None:
            scratch.cleanup()


if __name__ == "__main__":
    main()
