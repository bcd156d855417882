"""The LivePortrait engine: official networks on one device, a cached source preparation per
portrait, and batched rendering of every frame's driving keypoints into the full portrait.

    engine = LivePortraitEngine.load(models_dir / "liveportrait", torch.device("cuda"))
    source = engine.prepare_source(portrait_rgb, face_points_478)       # once per portrait
    kp_driving = engine.driving_keypoints(source, targets)              # all frames at once
    for frame in engine.render(source, kp_driving): ...                 # (H, W, 3) uint8

Speed on CUDA: W and G run in half precision (fp16 by default, bf16 on request) with
channels-last weights, BatchNorms folded into convs, the decoder's SPADE convs fused, cuDNN
autotuning, and double-buffered pinned copies so the host consumes batch i while the GPU
renders batch i+1. F, M and the MLPs run once per portrait or once per clip, in fp32.

On CUDA by default (CUDA_DEFAULTS):
- W's 7x7x7 mask conv in the frequency domain (spectral_conv.py), DFTs as fp16 GEMMs;
- exact rewrites of the convs (conv_rewrites.py): W's 110/142-channel tensors zero-padded to
  112/144; convs of nearest-upsampled inputs (W's up blocks, G's up-block SPADE hidden layers)
  computed at the low resolution; W's one-output occlusion conv as 49 taps, read straight from
  the 3-D volume; W's 144-output decoder conv split 128 + 16; odd GEMM widths zero-padded
  (154, 49, 12 outputs);
- torch.compile of W + G for one fixed-shape batch (inductor, static shapes), which fuses the
  elementwise work between the convs; it compiles in `warm_up` (start-up), never in a request, and
  keeps its caches in `compile_cache_dir` (e.g. MODELS_DIR/.cache/inductor) for restarts;
- that compiled batch captured as a CUDA graph in `warm_up`, so a batch is one replay; likewise
  the mixed batch (mixed_batch.py: each frame its own portrait's volume), a second shape of the
  same compiled function with its own graph.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..batched_render import (CapturedBatch, FaceBox, HostFrames, capture_if_cuda, measure_frames_per_second,
                              padded_batches)
from ..compile_cache import use_compile_cache, writable_cache_dir
from . import crop as crop_ops
from .checkpoints import CheckpointError, LivePortraitNetworks, load_networks
from .config import FEATURE_VOLUME
from .driving import DrivingTargets, driving_keypoints
from .keypoints import SourceMotion

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_BATCH = {"cuda": 32, "mps": 4, "cpu": 2}
# The engine's speed options, with what each does. All but compile and cuda_graph are exact
# rewrites, equal up to rounding. CUDA_DEFAULTS says which a CUDA engine gets when the caller
# leaves an option None; other devices get False.
SPEED_OPTIONS = {
    "spectral_mask_conv": "W's 7x7x7 mask conv in the frequency domain (spectral_conv.py; fp16 transforms on CUDA, "
                          "fp32 elsewhere).",
    "align_channels": "W's 110 / 142-channel hourglass tensors zero-padded to 112 / 144 (bit-exact), channel "
                      "counts cuDNN's tensor-core kernels prefer.",
    "split_decoder_conv": "W's hourglass's last conv (144 outputs, which fill cuDNN's tiles badly) as a 128-output "
                          "conv plus a depth-sliced 16-output one.",
    "low_res_upsample_convs": "convs of nearest-upsampled inputs (W's up blocks, G's up-block SPADE hidden layers) "
                              "computed at the input's resolution, with fewer FLOPs.",
    "occlusion_taps": "W's single-output 7x7 occlusion conv as a 1x1 conv to its 49 taps + a shifted sum.",
    "compile": "torch.compile of W + G (inductor, static shapes); `warm_up` compiles for the engine's batch "
               "shape before serving; compile_cache_dir keeps inductor's caches for restarts.",
    "cuda_graph": "(CUDA, with compile) `warm_up` captures the compiled batch as a CUDA graph: a batch is one "
                  "replay instead of ~200 kernel launches from Python. Each launch crosses the GIL, and the "
                  "encoder thread beside the renderer held it often enough to starve the GPU (/generate "
                  "animated 4x slower than the bare engine).",
}
# Batch 64 renders no faster than 32 on CUDA and needs twice the memory.
CUDA_DEFAULTS = {"spectral_mask_conv": True, "align_channels": True, "split_decoder_conv": True,
                 "low_res_upsample_convs": True, "occlusion_taps": True, "compile": True, "cuda_graph": True}
assert CUDA_DEFAULTS.keys() == SPEED_OPTIONS.keys()

@dataclass
class PasteBack:
    """How a 512 render goes back into the portrait: only the box the crop covers is touched.

    box: (x0, y0, x1, y1) in the portrait; grid (1, h, w, 2) crop coordinates in [-1, 1] for each
    box pixel; mask (1, 1, h, w) feathered weight of the render; background (1, 3, h, w) in [0, 1]."""

    box: tuple[int, int, int, int]
    grid: torch.Tensor
    mask: torch.Tensor
    background: torch.Tensor


@dataclass
class PreparedSource:
    """Everything that depends only on the portrait (cache it by image hash)."""

    portrait: np.ndarray  # (H, W, 3) uint8, the output frames' background
    crop: crop_ops.CropTransform
    feature_3d: torch.Tensor  # (1, 32, 16, 64, 64) fp32, F's appearance volume
    motion: SourceMotion  # M's reading of the crop
    kp_source: torch.Tensor  # (1, 21, 3) x_s
    lip_ratio: float  # inner-lip gap / mouth width of the portrait
    eye_ratios: np.ndarray  # (2,) lid gap / eye width, image-left eye first
    paste: PasteBack


def _image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) fp32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0


def _to_memory_format(module: torch.nn.Module) -> None:
    """channels-last for 4-D conv weights, channels-last-3d for 5-D ones (cuDNN's fast layouts),
    the rewritten convs' weight buffers included."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if not tensor.is_floating_point():
            continue
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
        elif tensor.dim() == 5:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)


def _rewrite_for_inference(networks: LivePortraitNetworks, options: dict[str, bool], spectral_dtype: torch.dtype) -> None:
    """Fold W's BatchNorms, fuse G's SPADE convs, then the exact rewrites `options` turns on, in
    the order they need: channel padding first, then the rewrites that copy the (padded, folded)
    weights."""
    motion = networks.warping.dense_motion_network
    networks.warping.fold_norm()
    if options["align_channels"]:
        motion.align_channels()
    motion.hourglass.rewrite_3d_convs(low_res_upsample=options["low_res_upsample_convs"],
                                      split_decoder_conv=options["split_decoder_conv"])
    if options["spectral_mask_conv"]:
        motion.use_spectral_mask_conv(FEATURE_VOLUME, spectral_dtype)
    if options["occlusion_taps"]:
        motion.use_occlusion_taps()
    networks.generator.fuse(low_res_upsample=options["low_res_upsample_convs"])


class LivePortraitEngine:
    """Official LivePortrait networks on one device. Thread-compatible, not thread-safe: the caller
    serializes `render` calls (the GPU is one resource anyway)."""

    def __init__(self, networks: LivePortraitNetworks, device: torch.device, precision: Precision | None = None,
                 batch_size: int | None = None, compile_cache_dir: Path | None = None, **options: bool | None):
        """options: any of SPEED_OPTIONS by name; one left out or None takes CUDA_DEFAULTS on CUDA
        and False elsewhere. compile_cache_dir: where inductor keeps its caches (sets
        TORCHINDUCTOR_CACHE_DIR for this process); None keeps inductor's own default."""
        unknown = sorted(set(options) - set(SPEED_OPTIONS))
        if unknown:
            raise TypeError(f"unknown LivePortrait speed options {unknown}; known: {sorted(SPEED_OPTIONS)}")
        self.device = torch.device(device)
        kind = self.device.type
        self.options = {name: (cuda_default and kind == "cuda") if options.get(name) is None else bool(options[name])
                        for name, cuda_default in CUDA_DEFAULTS.items()}
        self.options["cuda_graph"] = self.options["cuda_graph"] and self.options["compile"] and kind == "cuda"
        self.precision: Precision = precision or ("fp16" if kind == "cuda" else "fp32")
        self.render_dtype = _DTYPES[self.precision]
        self.batch_size = batch_size or DEFAULT_BATCH.get(kind, 2)
        self.networks = networks
        _rewrite_for_inference(networks, self.options, spectral_dtype=torch.float16 if kind == "cuda" else torch.float32)
        networks.to(self.device)
        networks.warping.to(self.render_dtype)
        networks.generator.to(self.render_dtype)
        if kind == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: autotune each conv once
            _to_memory_format(networks.warping)
            _to_memory_format(networks.generator)
        for network in networks.all():
            network.eval().requires_grad_(False)
        self._crop_mask = crop_ops.feather_mask()
        self.host_frames = HostFrames(self.device)
        self.mixed_host_frames = HostFrames(self.device)  # mixed batches' (their timings apart from the clip's)
        self.compiled = self.options["compile"]
        self._render_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = self._warp_decode
        if self.compiled:
            if compile_cache_dir is not None:
                use_compile_cache(Path(compile_cache_dir))
            # fullgraph: W + G trace as one graph (a graph break would silently cost the fusion);
            # dynamic=False: each batch shape (one volume, or one a frame) gets kernels specialized to it.
            self._render_batch = torch.compile(self._warp_decode, fullgraph=True, dynamic=False)
        # The same function for batches whose frames each bring their own volume (mixed_batch.py);
        # `warm_up` captures its own CUDA graph.
        self._render_gathered = self._render_batch
        self.render_rate: float | None = None  # frames/s of a full mixed batch, measured by warm_up

    @classmethod
    def load(cls, liveportrait_dir: Path, device: torch.device | str, precision: Precision | None = None,
             batch_size: int | None = None, **options) -> LivePortraitEngine:
        """Load the official files from MODELS_DIR/liveportrait (CheckpointError if any is missing);
        options: the constructor's speed options and compile_cache_dir."""
        return cls(load_networks(Path(liveportrait_dir)), torch.device(device), precision, batch_size, **options)

    # -- once per portrait ------------------------------------------------------------------

    @torch.no_grad()
    def prepare_source(self, portrait: np.ndarray, face_points: np.ndarray) -> PreparedSource:
        """portrait (H, W, 3) uint8 RGB; face_points (478, 2) MediaPipe mesh in portrait pixels."""
        transform = crop_ops.crop_transform(face_points)
        crop_512 = crop_ops.warp_to_crop(portrait, transform)
        network_in = _image_tensor(crop_ops.network_input(crop_512), self.device)
        feature_3d = self.networks.appearance(network_in).float()
        motion = SourceMotion.from_network(self.networks.motion(network_in))
        return PreparedSource(
            portrait=np.ascontiguousarray(portrait), crop=transform, feature_3d=feature_3d, motion=motion,
            kp_source=motion.keypoints(), lip_ratio=crop_ops.lip_open_ratio(face_points),
            eye_ratios=crop_ops.eye_open_ratios(face_points), paste=self._paste_back(portrait, transform),
        )

    def _paste_back(self, portrait: np.ndarray, transform: crop_ops.CropTransform) -> PasteBack:
        height, width = portrait.shape[:2]
        size = transform.size
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
        mapped = corners @ transform.crop_to_original[:2].T
        x0, y0 = np.clip(np.floor(mapped.min(0)).astype(int), 0, [width, height])
        x1, y1 = np.clip(np.ceil(mapped.max(0)).astype(int) + 1, 0, [width, height])
        if x1 <= x0 or y1 <= y0:
            raise ValueError("the face crop lies outside the portrait")
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        crop_xy = np.stack([xs, ys, np.ones_like(xs)], -1) @ transform.original_to_crop[:2].T
        grid = (2 * crop_xy + 1) / size - 1  # pixel centres, align_corners=False
        grid_t = torch.from_numpy(grid.astype(np.float32))[None].to(self.device)
        mask = F.grid_sample(torch.from_numpy(self._crop_mask)[None, None].to(self.device), grid_t,
                             mode="bilinear", padding_mode="zeros", align_corners=False)
        background = _image_tensor(portrait[y0:y1, x0:x1], self.device)
        return PasteBack(box=(int(x0), int(y0), int(x1), int(y1)), grid=grid_t, mask=mask, background=background)

    # -- once per clip ----------------------------------------------------------------------

    def driving_keypoints(self, source: PreparedSource, targets: DrivingTargets) -> torch.Tensor:
        """(N, 21, 3) fp32 driving keypoints for every frame, computed in one batch."""
        return driving_keypoints(self.networks.retargeting, source.motion, source.kp_source, source.lip_ratio,
                                 source.eye_ratios, targets)

    # -- per frame --------------------------------------------------------------------------

    @torch.no_grad()
    def render_crops(self, source: PreparedSource, kp_driving: torch.Tensor) -> torch.Tensor:
        """W then G for a batch: kp_driving (B, 21, 3) -> (B, 3, 512, 512) in [0, 1], render dtype.

        With compile=True, a batch size other than the engine's compiles once more (slow)."""
        # contiguous fp32 inputs: the compiled graph is guarded on dtype and strides.
        return self._render_batch(source.feature_3d.float().contiguous(), kp_driving.float().contiguous(),
                                  source.kp_source.float().contiguous())

    @torch.no_grad()
    def render_gathered_crops(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor,
                              kp_source: torch.Tensor) -> torch.Tensor:
        """W then G for a batch whose frames each bring their source: feature_3d (B, 32, 16, 64, 64),
        kp_driving (B, 21, 3), kp_source (B, 21, 3) -> (B, 3, 512, 512) in [0, 1], render dtype.
        B is the engine's batch size once compiled (another compiles again)."""
        return self._render_gathered(feature_3d.float().contiguous(), kp_driving.float().contiguous(),
                                     kp_source.float().contiguous())

    def _warp_decode(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """feature_3d (1 or B, 32, 16, 64, 64), kp_driving (B, 21, 3), kp_source (1 or B, 21, 3)
        -> (B, 3, 512, 512)."""
        batch = kp_driving.shape[0]
        # One volume for the whole batch: W samples it in place (motion_field.warp_volume).
        warped = self.networks.warping(feature_3d, kp_driving, kp_source.expand(batch, -1, -1))
        return self.networks.generator(warped)

    @torch.no_grad()
    def _compose_box(self, source: PreparedSource, crops: torch.Tensor) -> torch.Tensor:
        """Renders into the portrait's crop box: (B, 3, 512, 512) -> (B, h, w, 3) uint8 on device."""
        paste = source.paste
        sampled = F.grid_sample(crops.float(), paste.grid.expand(crops.shape[0], -1, -1, -1), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        blended = paste.background + paste.mask * (sampled - paste.background)
        return (blended * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def render(self, source: PreparedSource, kp_driving: torch.Tensor) -> Iterator[np.ndarray]:
        """Full-portrait frames (H, W, 3) uint8, one per row of kp_driving, lazily and in order.

        The last batch is padded to the batch size (fixed shapes keep cuDNN's tuned kernels and the
        compiled batch); while the caller consumes one batch, the device renders the next."""
        batches = ((self._compose_box(source, self.render_crops(source, chunk)), count)
                   for chunk, count in padded_batches(kp_driving, self.batch_size, pad=True))
        return self.host_frames.frames(batches, FaceBox(source.portrait, source.paste.box))


class CompileUnavailable(RuntimeError):
    """Compiling was asked for by name and cannot work here (message: why)."""


def load_for_serving(liveportrait_dir: Path, device: str, compile_requested: bool | None,
                     compile_cache_dir: Path | None) -> LivePortraitEngine:
    """The engine as the service runs it. The compile policy: on CUDA compile unless
    compile_requested is False; where Triton cannot build (compile_problems) render eagerly with
    a warning, or raise CompileUnavailable when compiling was requested by name; elsewhere eager.
    The CUDA engine is warmed up here (compiled and captured), never in a request; a compile that
    fails at warm-up falls back to eager, unless requested by name (CompileUnavailable).
    compile_cache_dir: where inductor keeps its caches across restarts (used when writable).
    Raises CheckpointError for missing or mismatched weights."""
    if compile_requested and device != "cuda":
        log.warning("compiling LivePortrait is for CUDA; rendering eagerly on %s", device)
    compile_ = device == "cuda" and (CUDA_DEFAULTS["compile"] if compile_requested is None else bool(compile_requested))
    if compile_ and (problems := compile_problems()):
        if compile_requested:
            raise CompileUnavailable("compiling cannot work here: " + "; ".join(problems))
        log.warning("LivePortrait renders eagerly (about half the speed): %s", "; ".join(problems))
        compile_ = False

    def load(compile_: bool) -> LivePortraitEngine:
        cache = writable_cache_dir(compile_cache_dir) if compile_ and compile_cache_dir is not None else None
        engine = LivePortraitEngine.load(liveportrait_dir, device, compile=compile_, compile_cache_dir=cache)
        if device == "cuda":
            seconds = warm_up(engine)
            log.info("LivePortrait warm-up (%s) took %.1f s", "compile" if engine.compiled else "eager", seconds)
        return engine

    try:
        return load(compile_)
    except CheckpointError:
        raise
    except Exception as error:
        if not compile_:
            raise
        if compile_requested:
            raise CompileUnavailable(f"torch.compile failed at start-up: {error!r}") from error
        log.error("LivePortrait torch.compile failed at start-up (%r); rendering eagerly", error)
        return load(False)


def compile_problems() -> list[str]:
    """Why compile=True would fail on this machine ([] when nothing is missing): Triton builds a
    small C launcher the first time it runs, which needs a C compiler and Python's headers."""
    problems = []
    compiler = os.environ.get("CC") or next((name for name in ("cc", "gcc", "clang") if shutil.which(name)), None)
    if compiler is None or shutil.which(compiler) is None:
        problems.append("no C compiler (cc, gcc or clang, or $CC) on PATH")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        problems.append(f"no Python headers ({headers}; install python3-dev)")
    return problems


def warm_up(engine: LivePortraitEngine) -> float:
    """Render one batch through each path requests take (one portrait; a mixed batch, each frame
    its own volume), so compilation (compile=True), cuDNN's autotuning, lazy CUDA start-up and
    the CUDA graphs' capture happen at load time, not in the first request; then time the mixed
    batch (engine.render_rate, frames/s). Returns the seconds it took."""
    started = time.perf_counter()
    device = engine.device
    batch = engine.batch_size
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 32, 16, 64, 64, generator=generator).to(device)
    kp_source = 0.1 * torch.randn(1, 21, 3, generator=generator).to(device)
    kp_driving = kp_source + 0.01 * torch.randn(batch, 21, 3, generator=generator).to(device)
    # Each frame its own volume, as mixed_batch.render_mixed_crops gathers them.
    features = feature.expand(batch, -1, -1, -1, -1).contiguous()
    kp_sources = kp_source.expand(batch, -1, -1).contiguous()
    with torch.no_grad():
        crops = engine._render_batch(feature, kp_driving, kp_source).float().cpu()
        mixed = engine._render_gathered(features, kp_driving, kp_sources).float().cpu()
        if engine.options["cuda_graph"] and not isinstance(engine._render_batch, CapturedBatch):
            engine._render_batch = capture_if_cuda(engine._render_batch, feature, kp_driving, kp_source)
        if engine.options["cuda_graph"] and not isinstance(engine._render_gathered, CapturedBatch):
            engine._render_gathered = capture_if_cuda(engine._render_gathered, features, kp_driving, kp_sources)
        engine.render_rate = measure_frames_per_second(engine._render_gathered, batch, features, kp_driving, kp_sources)
    if not (torch.isfinite(crops).all() and torch.isfinite(mixed).all()):
        raise RuntimeError("LivePortrait warm-up rendered non-finite values")
    return time.perf_counter() - started
