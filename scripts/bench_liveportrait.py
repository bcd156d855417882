#!/usr/bin/env python3
"""Benchmark the per-output-frame LivePortrait work on a GPU and print JSON.

Per output frame: lip retargeting + eye retargeting + stitching (the MLPs), warping module W,
SPADE decoder G (512x512 out), paste into a 512x512 portrait, frames copied to host as uint8.

  ours:      our engine, all frames' keypoints at once, W + G batched in half precision.
  upstream:  upstream's networks (PyPI `mimic-head`, `pip install --no-deps mimic-head`) driven
             the way upstream's pipeline drives them: one frame at a time under fp16 autocast.

Random weights unless --models-dir points at real checkpoints (speed does not depend on them).
Needs no MediaPipe: the source is synthetic. Example:
    python scripts/bench_liveportrait.py --frames 512 --batch-sizes 16 32 64
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.engines.liveportrait import crop as crop_ops
from runtime.engines.liveportrait.appearance_feature_extractor import AppearanceFeatureExtractor
from runtime.engines.liveportrait.checkpoints import LivePortraitNetworks, load_networks
from runtime.engines.liveportrait.driving import DrivingTargets
from runtime.engines.liveportrait.engine import LivePortraitEngine, PreparedSource
from runtime.engines.liveportrait.keypoints import SourceMotion
from runtime.engines.liveportrait.motion_extractor import MotionExtractor
from runtime.engines.liveportrait.spade_generator import SPADEDecoder
from runtime.engines.liveportrait.stitching_retargeting import StitchingRetargetingModule
from runtime.engines.liveportrait.warping_module import WarpingNetwork

PORTRAIT_SIZE = 512


def random_networks() -> LivePortraitNetworks:
    torch.manual_seed(0)
    return LivePortraitNetworks(AppearanceFeatureExtractor(), MotionExtractor(), WarpingNetwork(), SPADEDecoder(),
                                StitchingRetargetingModule())


def synthetic_source(engine: LivePortraitEngine) -> PreparedSource:
    """A 512x512 portrait whose face crop is the whole image, run through F and M."""
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 255, (PORTRAIT_SIZE, PORTRAIT_SIZE, 3), dtype=np.uint8)
    transform = crop_ops.CropTransform(original_to_crop=np.eye(3), crop_to_original=np.eye(3))
    image = torch.from_numpy(crop_ops.network_input(portrait)).to(engine.device).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        feature = engine.networks.appearance(image).float()
        motion = SourceMotion.from_network(engine.networks.motion(image))
    return PreparedSource(portrait=portrait, crop=transform, feature_3d=feature, motion=motion,
                          kp_source=motion.keypoints(), lip_ratio=0.05, eye_ratios=np.array([0.3, 0.3], np.float32),
                          paste=engine._paste_back(portrait, transform))


def speech_like_targets(frames: int) -> DrivingTargets:
    t = np.arange(frames, dtype=np.float32) / 25
    return DrivingTargets(lip_ratio=(0.2 + 0.2 * np.sin(2 * np.pi * 3 * t)).astype(np.float32),
                          eye_ratio=np.full(frames, 0.3, np.float32), pitch=2 * np.sin(t), yaw=3 * np.sin(0.5 * t),
                          roll=np.sin(0.3 * t))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_ours(networks: LivePortraitNetworks, precision: str, batch_size: int, frames: int,
               device: torch.device, stacked_mask_conv: bool = False) -> dict:
    engine = LivePortraitEngine(networks, device, precision=precision, batch_size=batch_size,
                                stacked_mask_conv=stacked_mask_conv)
    source = synthetic_source(engine)
    targets = speech_like_targets(frames)

    def run() -> int:
        kp_driving = engine.driving_keypoints(source, targets)
        return sum(1 for _ in engine.render(source, kp_driving))

    warm_started = time.perf_counter()
    run()  # cuDNN autotuning for this batch shape happens here
    warm_seconds = time.perf_counter() - warm_started
    _sync(device)
    started = time.perf_counter()
    produced = run()
    seconds = time.perf_counter() - started
    assert produced == frames
    split = _split_seconds(engine, source, batch_size) if device.type == "cuda" else {}
    return {**split, "engine": "ours", "precision": precision, "batch_size": batch_size, "frames": frames,
            "stacked_mask_conv": stacked_mask_conv,
            "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1),
            "first_run_seconds": round(warm_seconds, 2),
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def _split_seconds(engine: LivePortraitEngine, source: PreparedSource, batch_size: int, repeats: int = 10) -> dict:
    """Milliseconds per frame spent in W and in G alone (CUDA events over `repeats` batches)."""
    kp = source.kp_source.expand(batch_size, -1, -1) + 0.01
    feature = source.feature_3d.expand(batch_size, -1, -1, -1, -1)
    kp_source = source.kp_source.expand(batch_size, -1, -1)
    timings = {}
    with torch.no_grad():
        warped = engine.networks.warping(feature, kp, kp_source)
        for name, step in (("warping", lambda: engine.networks.warping(feature, kp, kp_source)),
                           ("generator", lambda: engine.networks.generator(warped))):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                step()
            end.record()
            end.synchronize()
            timings[f"{name}_ms_per_frame"] = round(start.elapsed_time(end) / (repeats * batch_size), 3)
    return timings


def profile_kernels(precision: str, batch_size: int, rows: int = 18) -> None:
    """Top CUDA kernels of one W + G batch (to stderr), to see where the time goes."""
    engine = LivePortraitEngine(random_networks(), torch.device("cuda"), precision=precision, batch_size=batch_size)
    source = synthetic_source(engine)
    kp = source.kp_source.expand(batch_size, -1, -1) + 0.01
    for _ in range(2):
        engine.render_crops(source, kp)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        engine.render_crops(source, kp)
        torch.cuda.synchronize()
    print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70),
          file=sys.stderr)


def bench_upstream(frames: int) -> dict:
    """Upstream's loop: per frame, lip retarget + stitching in fp32, then warp_decode under fp16
    autocast and parse_output (to host, uint8) — as LivePortraitWrapper does it."""
    import mimic_head
    import yaml
    from mimic_head.modules.spade_generator import SPADEDecoder as UpstreamG
    from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork
    from mimic_head.modules.warping_network import WarpingNetwork as UpstreamW

    with open(Path(mimic_head.__file__).parent / "config" / "models.yaml") as handle:
        params = yaml.safe_load(handle)["model_params"]
    device = torch.device("cuda")
    warping = UpstreamW(**params["warping_module_params"]).to(device).eval()
    generator = UpstreamG(**params["spade_generator_params"]).to(device).eval()
    mlps = params["stitching_retargeting_module_params"]
    stitching = StitchingRetargetingNetwork(**mlps["stitching"]).to(device).eval()
    lip = StitchingRetargetingNetwork(**mlps["lip"]).to(device).eval()
    feature = torch.randn(1, 32, 16, 64, 64, device=device)
    kp_source = 0.1 * torch.randn(1, 21, 3, device=device)

    def one_frame(i: int) -> np.ndarray:
        with torch.no_grad():
            ratio = torch.tensor([[0.05, 0.2 + 0.2 * np.sin(i / 4)]], device=device, dtype=torch.float32)
            kp_driving = kp_source + lip(torch.cat([kp_source.view(1, -1), ratio], 1)).view(1, 21, 3)
            delta = stitching(torch.cat([kp_source.view(1, -1), kp_driving.view(1, -1)], 1))
            kp_driving = kp_driving + delta[:, :63].view(1, 21, 3)
            kp_driving[..., :2] += delta[:, 63:65].view(1, 1, 2)
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                out = generator(feature=warping(feature, kp_source=kp_source, kp_driving=kp_driving)["out"]).float()
            image = np.transpose(out.cpu().numpy(), [0, 2, 3, 1])
            return (np.clip(image, 0, 1) * 255).astype(np.uint8)

    for i in range(5):
        one_frame(i)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(frames):
        one_frame(i)
    seconds = time.perf_counter() - started
    return {"engine": "upstream (mimic-head), per-frame fp16 autocast", "frames": frames,
            "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1)}


def cold_start(models_dir: Path) -> dict:
    """Fresh process: import torch, load the checkpoints onto the GPU, warm up; seconds to ready."""
    code = (
        f"import time; t = time.perf_counter(); import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from runtime.engines.liveportrait.engine import LivePortraitEngine, warm_up\n"
        f"engine = LivePortraitEngine.load({str(models_dir / 'liveportrait')!r}, 'cuda'); warm_up(engine)\n"
        "print(time.perf_counter() - t)"
    )
    seconds = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                   text=True).stdout.strip().splitlines()[-1])
    return {"cold_start_to_ready_s": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--upstream-frames", type=int, default=100)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp16", "bf16"])
    parser.add_argument("--models-dir", type=Path, help="MODELS_DIR with real checkpoints (default: random)")
    parser.add_argument("--skip-upstream", action="store_true")
    parser.add_argument("--cold-start", action="store_true", help="also time load + warm-up in a fresh process")
    parser.add_argument("--stacked-mask-conv", action="store_true",
                        help="also run each configuration with W's mask conv as one wide 2-D conv")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one batch")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark), or cpu/mps for a smoke run")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("needs a CUDA device")

    name = torch.cuda.get_device_name(0) if device.type == "cuda" else args.device
    results: dict = {"device": name, "torch": torch.__version__, "runs": []}
    if args.profile:
        profile_kernels(args.precisions[0], args.batch_sizes[0])
    for precision in args.precisions:
        for batch_size in args.batch_sizes:
            for stacked in ([False, True] if args.stacked_mask_conv else [False]):
                networks = load_networks(args.models_dir / "liveportrait") if args.models_dir else random_networks()
                results["runs"].append(bench_ours(networks, precision, batch_size, args.frames, device, stacked))
                print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)
                del networks
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if not args.skip_upstream:
        results["runs"].append(bench_upstream(args.upstream_frames))
    if args.cold_start:
        if args.models_dir:
            results.update(cold_start(args.models_dir))
        else:
            from tests.liveportrait_checkpoints import write_random_checkpoints

            with tempfile.TemporaryDirectory() as directory:
                results.update(cold_start(write_random_checkpoints(Path(directory))))
    best = max((run for run in results["runs"] if run["engine"] == "ours"), key=lambda run: run["frames_per_s"])
    results["best_ours"] = {k: best[k] for k in ("precision", "batch_size", "frames_per_s")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
