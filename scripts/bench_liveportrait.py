#!/usr/bin/env python3
"""Benchmark the per-output-frame LivePortrait work on a GPU and print JSON.

Per output frame: lip retargeting + eye retargeting + stitching (the MLPs), warping module W,
SPADE decoder G (512x512 out), paste into a 512x512 portrait, frames copied to host as uint8.

  ours:      our engine, all frames' keypoints at once, W + G batched in half precision.
  upstream:  upstream's networks (PyPI `mimic-head`, `pip install --no-deps mimic-head`) driven
             the way upstream's pipeline drives them (one frame at a time under fp16 autocast), and
             in their best configuration (W + G batched, 32 frames, half-precision weights).
The JSON's best_ours, best_upstream and ratio_vs_upstream_best compare the best of each in one run.

Random weights unless --models-dir points at real checkpoints (speed does not depend on them).
Needs no MediaPipe: the source is synthetic. Examples:
    python scripts/bench_liveportrait.py --frames 512 --batch-sizes 16 32 64
    # plain eager, the exact rewrites one by one and together, compiled; accuracy against fp32;
    # per-conv timings of W; restart cost with a filled compile cache; kernel profile of the best
    # compiled variant; cold starts of a fresh process (the engine's defaults):
    python scripts/bench_liveportrait.py --precisions fp16 --batch-sizes 32 --frames 256 \
        --variants eager eager+aligned+stacked eager+aligned+stacked+lowres+stacked3d+taps defaults \
        --accuracy --conv-micro --compile-restart --profile-compiled --cold-start --skip-upstream
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.engines.liveportrait import crop as crop_ops
from runtime.engines.liveportrait.appearance_feature_extractor import AppearanceFeatureExtractor
from runtime.engines.liveportrait.checkpoints import LivePortraitNetworks, load_networks
from runtime.engines.conv_rewrites import RewrittenConv
from runtime.engines.liveportrait.driving import DrivingTargets
from runtime.engines.liveportrait.engine import (CUDA_DEFAULTS, LivePortraitEngine, PreparedSource, _to_memory_format,
                                                 warm_up)
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


ENGINE_OPTION_NAMES = {"align_channels": "aligned", "spectral_mask_conv": "spectral", "split_decoder_conv": "split",
                       "low_res_upsample_convs": "lowres", "occlusion_taps": "taps"}
# Exact depth-sliced forms of W's 3-D convs that the engine does not carry: on the H200 the
# spectral mask conv beat the stacked one and cuDNN's 3-D kernels beat the sliced 3x3x3 convs.
# Kept here, applied to a built engine (stack_depth_slices), so that can be measured again.
BENCH_ONLY_OPTION_NAMES = {"stacked_mask_conv": "stacked", "stacked_3d_convs": "stacked3d"}
OPTION_NAMES = {**ENGINE_OPTION_NAMES, **BENCH_ONLY_OPTION_NAMES}


def explicit(options: dict) -> dict:
    """Every engine speed flag spelled out (False unless given), so the engine's CUDA defaults
    never leak into a variant; the bench-only options are left out (see stack_depth_slices)."""
    engine_options = {key: value for key, value in options.items() if key not in BENCH_ONLY_OPTION_NAMES}
    return {**{key: False for key in ENGINE_OPTION_NAMES}, "compile": False, **engine_options}


def stack_depth_slices(engine: LivePortraitEngine, options: dict) -> None:
    """The bench-only rewrites options asks for, on an engine built with the rest (before warm_up,
    which compiles): stacked_mask_conv runs W's 7x7x7 mask conv as one 2-D conv over depth slices
    (a GEMM 154 outputs wide instead of 22) unless the spectral one is on; stacked_3d_convs runs
    the hourglass's other 3-D convs that way too. Exact up to rounding (conv_rewrites.py)."""
    motion = engine.networks.warping.dense_motion_network
    hourglass = motion.hourglass
    dtype = engine.render_dtype

    def sliced(conv: torch.nn.Module, upsample: int = 1) -> torch.nn.Module:
        rewritten = RewrittenConv(conv, upsample=upsample, depth_slices=True,
                                  align_outputs=16 if conv is motion.mask else 1).to(engine.device, dtype)
        if engine.device.type == "cuda":
            _to_memory_format(rewritten)  # the layout the engine gives its own rewrites
        return rewritten

    if options.get("stacked_mask_conv") and not options.get("spectral_mask_conv"):
        motion.rewritten_mask = sliced(motion.mask)
    if options.get("stacked_3d_convs"):
        for block in hourglass.encoder.down_blocks:
            block.conv = sliced(block.conv)
        for block in hourglass.decoder.up_blocks:
            if block.rewritten is not None:  # low_res_upsample: keep computing at the input's resolution
                block.rewritten = sliced(block.conv, upsample=block.rewritten.upsample)
            else:
                block.conv = sliced(block.conv)
        if hourglass.decoder.rewritten is None:  # a split decoder conv already slices its tail
            hourglass.decoder.conv = sliced(hourglass.decoder.conv)


def variant_name(options: dict) -> str:
    """{"compile": True, "stacked_mask_conv": True} -> "compile+stacked"."""
    return "+".join(["compile" if options.get("compile") else "eager"]
                    + [short for key, short in OPTION_NAMES.items() if options.get(key)])


def parse_variant(name: str) -> dict:
    """"compile+aligned+stacked" -> engine options; "defaults" -> the engine's CUDA_DEFAULTS."""
    if name == "defaults":
        return dict(CUDA_DEFAULTS)
    first, *rest = name.split("+")
    if first not in ("eager", "compile"):
        raise SystemExit(f"a variant starts with eager or compile, not {first!r}")
    keys = {short: key for key, short in OPTION_NAMES.items()}
    unknown = [token for token in rest if token not in keys]
    if unknown:
        raise SystemExit(f"unknown variant parts {unknown}; known: {sorted(keys)}")
    return {**({"compile": True} if first == "compile" else {}), **{keys[token]: True for token in rest}}


def accuracy_batch(engine: LivePortraitEngine, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed random inputs for comparing variants: feature (1, 32, 16, 64, 64), kp_driving (B, 21, 3), kp_source."""
    generator = torch.Generator().manual_seed(1)
    feature = torch.randn(1, 32, 16, 64, 64, generator=generator).to(engine.device)
    kp_source = 0.1 * torch.randn(1, 21, 3, generator=generator).to(engine.device)
    kp_driving = kp_source + 0.03 * torch.randn(batch_size, 21, 3, generator=generator).to(engine.device)
    return feature, kp_driving, kp_source


def render_accuracy_batch(engine: LivePortraitEngine, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return engine._render_batch(*accuracy_batch(engine, batch_size)).float()


def errors(out: torch.Tensor, reference: torch.Tensor) -> dict:
    difference = (out - reference).abs()
    return {"mean_abs": float(f"{difference.mean().item():.2e}"), "max_abs": float(f"{difference.max().item():.2e}"),
            "finite": bool(torch.isfinite(out).all())}


def bench_ours(networks: LivePortraitNetworks, precision: str, batch_size: int, frames: int,
               device: torch.device, options: dict | None = None, cache_dir: Path | None = None,
               references: dict | None = None, keep_as_reference: str | None = None) -> dict:
    """One engine configuration; options: engine keyword flags (align_channels, compile, ...) and
    the bench-only stacked ones (stack_depth_slices). references: {name: (B, 3, 512, 512) render} of the accuracy batch
    (None: no accuracy check); this variant's render of that batch is compared with each, and
    stored in it under keep_as_reference when given."""
    options = dict(options or {})
    compile_ = bool(options.get("compile"))
    engine = LivePortraitEngine(networks, device, precision=precision, batch_size=batch_size, **explicit(options),
                                compile_cache_dir=cache_dir if compile_ else None)
    stack_depth_slices(engine, options)
    source = synthetic_source(engine)
    targets = speech_like_targets(frames)

    def run() -> int:
        kp_driving = engine.driving_keypoints(source, targets)
        return sum(1 for _ in engine.render(source, kp_driving))

    warm_seconds = warm_up(engine)  # compilation (compile=True) and cuDNN autotuning happen here
    first_started = time.perf_counter()
    run()
    first_seconds = time.perf_counter() - first_started
    _sync(device)
    started = time.perf_counter()
    produced = run()
    seconds = time.perf_counter() - started
    assert produced == frames
    result = {"engine": "ours", "variant": variant_name(options), "precision": precision,
              "batch_size": batch_size, "frames": frames, "options": options,
              "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1),
              "warm_up_seconds": round(warm_seconds, 2), "first_run_seconds": round(first_seconds, 2)}
    if device.type == "cuda":
        result.update(_render_ms(engine, source, batch_size))
        if not compile_:
            result.update(_split_seconds(engine, source, batch_size))
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if references is not None:
        out = render_accuracy_batch(engine, batch_size)
        result["error_vs"] = {name: errors(out, reference) for name, reference in references.items()}
        if keep_as_reference:
            references[keep_as_reference] = out
    return result


def _render_ms(engine: LivePortraitEngine, source: PreparedSource, batch_size: int, repeats: int = 10) -> dict:
    """Milliseconds per frame of W + G alone (render_crops, the path requests take), CUDA events."""
    kp = (source.kp_source.expand(batch_size, -1, -1) + 0.01).contiguous()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    engine.render_crops(source, kp)
    start.record()
    for _ in range(repeats):
        engine.render_crops(source, kp)
    end.record()
    end.synchronize()
    return {"render_ms_per_frame": round(start.elapsed_time(end) / (repeats * batch_size), 3)}


def _split_seconds(engine: LivePortraitEngine, source: PreparedSource, batch_size: int, repeats: int = 10) -> dict:
    """Milliseconds per frame spent in W and in G alone, eager (CUDA events over `repeats` batches)."""
    kp = source.kp_source.expand(batch_size, -1, -1) + 0.01
    feature = source.feature_3d  # batch 1, shared by the batch, as the engine passes it
    kp_source = source.kp_source.expand(batch_size, -1, -1)
    timings = {}
    with torch.no_grad():
        warped = engine.networks.warping(feature, kp, kp_source)
        for name, step in (("warping", lambda: engine.networks.warping(feature, kp, kp_source)),
                           ("generator", lambda: engine.networks.generator(warped))):
            timings[f"{name}_ms_per_frame"] = round(_event_ms(step, repeats) / batch_size, 3)
    return timings


def profile_kernels(precision: str, batch_size: int, rows: int = 18) -> None:
    """Top CUDA kernels of one W + G batch (to stderr), to see where the time goes."""
    engine = LivePortraitEngine(random_networks(), torch.device("cuda"), precision=precision, batch_size=batch_size,
                                **explicit({}))
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


def _event_ms(fn, repeats: int) -> float:
    """Mean milliseconds of fn() after one warm-up call: CUDA events, or the host clock on a cpu."""
    fn()
    if not torch.cuda.is_available():
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) * 1000 / repeats
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def conv_micro(precision: str, batch_size: int, align_channels: bool, repeats: int = 5,
               device: str = "cuda") -> list[dict]:
    """Each conv of W at its real input shape, ms per frame: 3-D ones both as cuDNN's conv3d and
    as one wide 2-D conv over depth slices plus a depth shift-sum (the stacked form). Tells which
    convs cost what, and which other 3-D convs the stacked form would speed up."""
    engine = LivePortraitEngine(random_networks(), torch.device(device), precision=precision, batch_size=batch_size,
                                **explicit({"align_channels": align_channels}))
    source = synthetic_source(engine)
    inputs: dict[str, tuple] = {}

    def keep_input(name: str):
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:  # None: output unchanged
            inputs.setdefault(name, (module, args[0]))
        return hook

    hooks = [module.register_forward_hook(keep_input(name)) for name, module in engine.networks.warping.named_modules()
             if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d))]
    kp = (source.kp_source.expand(batch_size, -1, -1) + 0.01).contiguous()
    engine.render_crops(source, kp)
    for hook in hooks:
        hook.remove()
    rows = []
    with torch.no_grad():
        for name, (conv, x) in inputs.items():
            batch = x.shape[0]
            kernel_volume = int(np.prod(conv.kernel_size))
            row = {"conv": name, "in": list(x.shape), "out_channels": conv.out_channels,
                   "kernel": list(conv.kernel_size),
                   "gflop_per_frame": round(2 * x[0].numel() * conv.out_channels * kernel_volume / 1e9, 2),
                   "as_is_ms_per_frame": round(_event_ms(lambda: conv(x), repeats) / batch, 4)}  # noqa: B023
            if isinstance(conv, torch.nn.Conv3d):
                sliced = RewrittenConv(conv, depth_slices=True).to(dtype=conv.weight.dtype)
                _to_memory_format(sliced)  # the layout the engine gives it
                row["stacked_2d_ms_per_frame"] = round(_event_ms(lambda: sliced(x), repeats) / batch, 4)  # noqa: B023
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def profile_compiled(precision: str, batch_size: int, options: dict, cache_dir: Path, rows: int = 40,
                     device: str = "cuda") -> None:
    """Top kernels of one compiled W + G batch (to stderr): what is left after fusion. Without the
    CUDA graph: a graph replay hides which aten call (and input shapes) launched each kernel."""
    engine = LivePortraitEngine(random_networks(), torch.device(device), precision=precision, batch_size=batch_size,
                                **explicit({**options, "cuda_graph": False}), compile_cache_dir=cache_dir)
    stack_depth_slices(engine, options)
    warm_up(engine)
    source = synthetic_source(engine)
    kp = (source.kp_source.expand(batch_size, -1, -1) + 0.01).contiguous()
    engine.render_crops(source, kp)
    _sync(engine.device)
    cuda = engine.device.type == "cuda"
    # CPU activity too: the aten::convolution calls (with their input shapes) are CPU-side events.
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities, record_shapes=True) as profiler:
        engine.render_crops(source, kp)
        _sync(engine.device)
    sort_by = "cuda_time_total" if cuda else "cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=rows, max_name_column_width=90), file=sys.stderr)
    # Which convs those kernels belong to: aten::convolution calls by input shapes, slowest first.
    print(profiler.key_averages(group_by_input_shape=True).table(
        sort_by=sort_by, row_limit=rows, max_name_column_width=30, max_shapes_column_width=120), file=sys.stderr)


def compile_restart(precision: str, batch_size: int, options: dict, cache_dir: Path, device: str = "cuda") -> dict:
    """A fresh process with inductor's cache already filled (a service restart): seconds from
    process start to a compiled, warmed-up engine (random weights, built in memory)."""
    code = (
        "import time; t = time.perf_counter(); import sys, json; "
        f"sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "import torch\n"
        "from bench_liveportrait import random_networks, stack_depth_slices\n"
        "from runtime.engines.liveportrait.engine import LivePortraitEngine, warm_up\n"
        "networks = random_networks(); t_built = time.perf_counter()\n"
        f"engine = LivePortraitEngine(networks, {device!r}, precision={precision!r}, batch_size={batch_size}, "
        f"**{explicit(options)!r}, compile_cache_dir={str(cache_dir)!r})\n"
        f"stack_depth_slices(engine, {options!r})\n"
        "warm = warm_up(engine)\n"
        "print(json.dumps({'restart_to_ready_s': round(time.perf_counter() - t, 2), "
        "'restart_warm_up_s': round(warm, 2), 'restart_network_build_s': round(t_built - t, 2)}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return {"restart_error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def bench_upstream_batched(frames: int, batch_size: int, precision: str) -> dict:
    """Upstream's networks in their best configuration measured (FACTS: ~141 frames/s on an H200):
    the MLPs batched in fp32, W + G batched under half-precision autocast (eager; upstream's dense
    motion makes fp32 grids that half weights refuse), frames to the host as uint8. The honest
    baseline for the speed-up."""
    import mimic_head
    import yaml
    from mimic_head.modules.spade_generator import SPADEDecoder as UpstreamG
    from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork
    from mimic_head.modules.warping_network import WarpingNetwork as UpstreamW

    with open(Path(mimic_head.__file__).parent / "config" / "models.yaml") as handle:
        params = yaml.safe_load(handle)["model_params"]
    device, dtype = torch.device("cuda"), {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    warping = UpstreamW(**params["warping_module_params"]).to(device).eval()
    generator = UpstreamG(**params["spade_generator_params"]).to(device).eval()
    mlps = params["stitching_retargeting_module_params"]
    stitching = StitchingRetargetingNetwork(**mlps["stitching"]).to(device).eval()
    lip = StitchingRetargetingNetwork(**mlps["lip"]).to(device).eval()
    feature = torch.randn(1, 32, 16, 64, 64, device=device).expand(batch_size, -1, -1, -1, -1)
    kp_source = (0.1 * torch.randn(1, 21, 3, device=device)).expand(batch_size, -1, -1)

    def one_batch(step: int) -> np.ndarray:
        with torch.no_grad():
            phase = torch.arange(batch_size, device=device, dtype=torch.float32) + step * batch_size
            ratio = torch.stack([torch.full_like(phase, 0.05), 0.2 + 0.2 * torch.sin(phase / 4)], 1)
            flat_source = kp_source.reshape(batch_size, -1)
            kp_driving = kp_source + lip(torch.cat([flat_source, ratio], 1)).view(batch_size, 21, 3)
            delta = stitching(torch.cat([flat_source, kp_driving.reshape(batch_size, -1)], 1))
            kp_driving = kp_driving + delta[:, :63].view(batch_size, 21, 3)
            kp_driving[..., :2] += delta[:, 63:65].view(batch_size, 1, 2)
            with torch.autocast(device_type="cuda", dtype=dtype):
                out = generator(feature=warping(feature, kp_source=kp_source, kp_driving=kp_driving)["out"]).float()
            return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    one_batch(0)
    torch.cuda.synchronize()
    steps = max(1, frames // batch_size)
    started = time.perf_counter()
    for step in range(steps):
        one_batch(step)
    seconds = time.perf_counter() - started
    return {"engine": f"upstream (mimic-head), batched {precision}", "batch_size": batch_size,
            "frames": steps * batch_size, "seconds": round(seconds, 3),
            "frames_per_s": round(steps * batch_size / seconds, 1)}


def cold_start(models_dir: Path, compile_cache_dir: Path | None = None) -> float:
    """Fresh process: import torch, load the checkpoints onto the GPU, warm up; seconds to ready.
    The engine's CUDA defaults; with compile_cache_dir it compiles there (an empty directory: a
    first start; a filled one: a restart), without it it renders eagerly."""
    options = f"compile_cache_dir={str(compile_cache_dir)!r}" if compile_cache_dir else "compile=False"
    code = (
        f"import time; t = time.perf_counter(); import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from runtime.engines.liveportrait.engine import LivePortraitEngine, warm_up\n"
        f"engine = LivePortraitEngine.load({str(models_dir / 'liveportrait')!r}, 'cuda', {options}); warm_up(engine)\n"
        "print(time.perf_counter() - t)"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return round(float(output.strip().splitlines()[-1]), 2)


def cold_starts(models_dir: Path) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="lp-cold-inductor-"))
    return {"cold_start_eager_s": cold_start(models_dir),
            "cold_start_compile_first_s": cold_start(models_dir, cache),
            "cold_start_compile_restart_s": cold_start(models_dir, cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--upstream-frames", type=int, default=100)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp16", "bf16"])
    parser.add_argument("--models-dir", type=Path, help="MODELS_DIR with real checkpoints (default: random)")
    parser.add_argument("--skip-upstream", action="store_true")
    parser.add_argument("--cold-start", action="store_true", help="also time load + warm-up in a fresh process")
    parser.add_argument("--variants", nargs="+", default=["eager", "defaults"],
                        help="engine configurations: eager|compile, then +" + " +".join(OPTION_NAMES.values())
                        + ", or defaults (the engine's CUDA defaults)")
    parser.add_argument("--compile-cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "lp-bench-inductor",
                        help="inductor's cache for --compile (the restart test reuses it)")
    parser.add_argument("--accuracy", action="store_true",
                        help="compare every variant's render of one batch with eager fp32 and eager at its precision")
    parser.add_argument("--conv-micro", action="store_true",
                        help="time each of W's convs (3-D ones also as a stacked 2-D conv), channels aligned")
    parser.add_argument("--compile-restart", action="store_true",
                        help="time a fresh process compiling with the cache already filled (best compiled variant)")
    parser.add_argument("--profile-compiled", action="store_true",
                        help="print the top CUDA kernels of the best compiled variant")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="skip the remaining steps once this many seconds have passed")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one batch")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark), or cpu/mps for a smoke run")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("needs a CUDA device")

    name = torch.cuda.get_device_name(0) if device.type == "cuda" else args.device
    results: dict = {"device": name, "torch": torch.__version__, "runs": [], "skipped": []}
    started = time.perf_counter()

    def time_left() -> bool:
        return args.time_budget_s is None or time.perf_counter() - started < args.time_budget_s

    def note(step: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {step}", file=sys.stderr, flush=True)

    def fresh_networks() -> LivePortraitNetworks:
        return load_networks(args.models_dir / "liveportrait") if args.models_dir else random_networks()

    if args.profile:
        profile_kernels(args.precisions[0], args.batch_sizes[0])
    variants = [parse_variant(name) for name in args.variants]
    def guarded(label: str, step):
        """Run one step unless the time budget is spent; an exception is recorded, not fatal, so
        one failing variant (a compile error, say) does not cost the rest of the run."""
        if not time_left():
            results["skipped"].append(label)
            return None
        note(label)
        try:
            return step()
        except Exception as error:  # noqa: BLE001 (reported in the JSON, with its traceback)
            results.setdefault("errors", []).append({"step": label, "error": repr(error),
                                                     "traceback": traceback.format_exc()[-3000:]})
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            return None
        finally:
            torch._dynamo.reset()  # drop any compiled graph (and the engine it holds)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    for precision, batch_size in itertools.product(args.precisions, args.batch_sizes):
        references: dict = {}
        if args.accuracy:
            reference_engine = LivePortraitEngine(fresh_networks(), device, precision="fp32", batch_size=batch_size,
                                                  **explicit({}))
            torch.backends.cudnn.benchmark = False  # one fp32 batch: autotuning it cost ~15 s on an H200
            references["fp32"] = render_accuracy_batch(reference_engine, batch_size)
            torch.backends.cudnn.benchmark = True
            del reference_engine

        def run_variant(options: dict, precision=precision, batch_size=batch_size, references=references) -> dict:
            run = bench_ours(fresh_networks(), precision, batch_size, args.frames, device, options,
                             args.compile_cache_dir, references if args.accuracy else None,
                             keep_as_reference=f"eager_{precision}" if not options else None)
            results["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
            return run

        if args.conv_micro and device.type == "cuda" and "conv_micro" not in results:  # eager, cheap: first
            results["conv_micro"] = guarded("conv micro-benchmark", lambda precision=precision, batch_size=batch_size:
                                            conv_micro(precision, batch_size, align_channels=True))
        for options in variants:
            guarded(f"{precision} bs{batch_size} {variant_name(options)}", lambda options=options: run_variant(options))
    compiled_runs = [run for run in results["runs"] if run.get("options", {}).get("compile")]
    best_compiled = max(compiled_runs, key=lambda run: run["frames_per_s"]) if compiled_runs else None
    if args.compile_restart and best_compiled is not None:
        results["compile_restart"] = guarded("restart with a filled compile cache", lambda: compile_restart(
            best_compiled["precision"], best_compiled["batch_size"], best_compiled["options"], args.compile_cache_dir,
            device.type))
        print(json.dumps(results["compile_restart"]), file=sys.stderr, flush=True)
    if args.profile_compiled and best_compiled is not None and device.type == "cuda":
        guarded("profile of the best compiled variant", lambda: profile_compiled(
            best_compiled["precision"], best_compiled["batch_size"], best_compiled["options"], args.compile_cache_dir))
    if not args.skip_upstream:
        results["runs"].append(bench_upstream(args.upstream_frames))
        for precision in args.precisions:
            guarded(f"upstream batched {precision}", lambda precision=precision: results["runs"].append(
                bench_upstream_batched(args.frames, 32, precision)))
    if args.cold_start:  # the engine's defaults, as the service starts it
        if args.models_dir:
            results.update(cold_starts(args.models_dir))
        else:
            from testkit.liveportrait_checkpoints import write_random_checkpoints

            with tempfile.TemporaryDirectory() as directory:
                results.update(cold_starts(write_random_checkpoints(Path(directory))))
    ours = [run for run in results["runs"] if run["engine"] == "ours"]
    if ours:
        best = max(ours, key=lambda run: run["frames_per_s"])
        results["best_ours"] = {k: best[k] for k in ("variant", "precision", "batch_size", "frames_per_s")}
        upstream = [run for run in results["runs"] if run["engine"].startswith("upstream")]
        if upstream:  # the honest ratio: against upstream's best configuration in this run, not its loop
            best_upstream = max(upstream, key=lambda run: run["frames_per_s"])
            results["best_upstream"] = {k: best_upstream[k] for k in ("engine", "frames_per_s")}
            results["ratio_vs_upstream_best"] = round(best["frames_per_s"] / best_upstream["frames_per_s"], 2)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    note("done")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
