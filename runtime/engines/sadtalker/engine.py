"""SadTalker inference engine: official checkpoints, resident on the device, batched.

    engine = SadTalkerEngine.load(models_dir / "sadtalker", "cuda")
    portrait = engine.prepare_portrait(rgb, mediapipe_points, size=256)   # cache this
    for frame in engine.animate(portrait, samples_16k, fps=25, request=MotionRequest()):
        ...  # (H, W, 3) uint8 full-portrait frames

Steps: face crop + 5-point alignment (from MediaPipe landmarks) -> 3DMM coefficients of the
source (once per portrait) -> mel windows -> expression and pose sequences (one batch each) ->
per fixed-size batch of frames: mapping net + keypoints + generator + paste into the face region
(runtime.engines.batched_render).

Compile / CUDA-graph / warm-up policy (all here): on CUDA the batch goes through torch.compile
by default, compiled in `warm_up` at start-up for the engine's batch shape and then captured as a
CUDA graph; every clip's last batch is padded to that shape, so no request compiles.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ...media.audio import frame_count
from ..batched_render import FaceBox, HostFrames, measure_frames_per_second, padded_batches, to_device
from ..compile_cache import use_compile_cache, writable_cache_dir
from .alignment import align_for_recon, face_crop, five_points
from .audio_features import AUDIO, speech_frame_windows
from .checkpoint import CheckpointError
from .coefficients import MotionRequest, coefficient_windows, motion_coefficients, resample_frames
from .config import MAPPING_CHECKPOINTS, SUPPORTED_SIZES
from .driving_stream import DrivingStream
from .networks import SadTalkerNetworks, checkpoint_paths, load_networks
from .paste import PastePlan, paste_boxes, plan_paste
from .recon_net import COEFF_SLICES
from .renderer import FaceRenderer, PreparedSource, cpu_has_fast_bf16, gathered_example

logger = logging.getLogger(__name__)

MAX_BATCH = {"cuda": 64, "mps": 8, "cpu": 2}  # 64: the H200's best at 256 px (larger gains nothing)
# On CUDA, frame counts below the batch size that get a graph of their own (eager, captured at
# warm-up): a 4-frame unit padded to 64 would cost a whole batch. Each is used only where warm-up
# timed it faster than the padded full batch.
SMALL_BATCHES = (8, 16, 32)
# Peak device memory a frame needs in the renderer at fp16, estimated from activation sizes
# (the SPADE decoder's last block holds several 256-channel maps at full resolution); not
# measured, so the batch takes only half of the free memory.
BYTES_PER_FRAME = {256: 0.5e9, 512: 2.0e9}
DEFAULT_DTYPE = {"cuda": torch.float16, "mps": torch.float16, "cpu": torch.float32}


@dataclass
class PreparedPortrait:
    """Per-portrait work, cached by the caller (keyed by image hash)."""

    size: int
    portrait: np.ndarray  # (H, W, 3) uint8, the output frames' background
    source_coeffs: np.ndarray  # (73,) exp 64 | angles 3 | trans 3 | crop params 3
    source: PreparedSource
    paste: PastePlan


class SadTalkerEngine:
    def __init__(self, nets: dict[int, SadTalkerNetworks], device: torch.device,
                 dtype: torch.dtype, batch_sizes: dict[int, int], conv_dtype: torch.dtype | None = None):
        self.device, self.dtype, self.batch_sizes = device, dtype, batch_sizes
        self.nets = nets
        self.renderers = {}
        for size, bundle in nets.items():
            for module in (bundle.recon, bundle.audio2exp, bundle.audio2pose):
                module.to(device=device, dtype=torch.float32)
            self.renderers[size] = FaceRenderer(bundle, device, dtype, conv_dtype=conv_dtype)
        self.default_size = min(nets)
        self.mapping_kind = next(iter(nets.values())).mapping_kind
        self.host_frames = HostFrames(device)
        self.mixed_host_frames = HostFrames(device)  # mixed batches' (their timings apart from the clip's)
        self.render_rates: dict[int, float] = {}  # frames/s of a full mixed batch by size, measured by warm_up on CUDA
        # Seconds one batch takes, by render size and frame count (the full batch and the small
        # ones), measured by warm_up on CUDA; a short last batch pads to the quickest that fits.
        self.batch_seconds: dict[int, dict[int, float]] = {}
        self.portraits_prepared = 0  # per-portrait work done (the caller caches it by image hash)

    @classmethod
    def load(cls, sadtalker_dir: Path, device: str | torch.device, sizes: tuple[int, ...] = SUPPORTED_SIZES,
             mapping_kind: str = "full", dtype: torch.dtype | None = None,
             batch_size: int | None = None, compile_renderer: bool | None = None,
             conv_dtype: torch.dtype | None = None, compile_cache_dir: Path | None = None) -> "SadTalkerEngine":
        """Load every size in `sizes` whose safetensors file exists (at least one must).

        compile_renderer: torch.compile the render batch (default: on cuda only; the
        compilation happens in `warm_up`). conv_dtype: precision of the decoder and hourglass
        (default: bf16 on a CPU whose bf16 convolutions are measurably faster: about 1.9x per
        frame on the 2-core CI CPU, at about 1/255 mean difference; else the engine's dtype).
        compile_cache_dir: where inductor keeps its caches across restarts when compiling (made
        if it can be; compile_cache.py; process-wide). Raises CheckpointError naming the missing file(s)."""
        device = torch.device(device)
        sadtalker_dir = Path(sadtalker_dir)
        present = [s for s in sizes if checkpoint_paths(sadtalker_dir, s, mapping_kind)[0].is_file()]
        mapping_file = checkpoint_paths(sadtalker_dir, sizes[0], mapping_kind)[1]
        missing = []
        if not present:
            missing.append(" or ".join(str(checkpoint_paths(sadtalker_dir, s, mapping_kind)[0]) for s in sizes))
        if not mapping_file.is_file():
            missing.append(str(mapping_file))
        if missing:
            raise CheckpointError("missing SadTalker checkpoint file(s): " + ", ".join(missing))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: autotune once
        nets = {s: load_networks(sadtalker_dir, s, mapping_kind) for s in present}
        if conv_dtype is None and device.type == "cpu" and cpu_has_fast_bf16():
            conv_dtype = torch.bfloat16
        batch_sizes = {s: batch_size or default_batch_size(device, s) for s in present}
        engine = cls(nets, device, dtype or DEFAULT_DTYPE[device.type], batch_sizes, conv_dtype=conv_dtype)
        if compile_renderer if compile_renderer is not None else device.type == "cuda":
            if compile_cache_dir is not None and (cache := writable_cache_dir(Path(compile_cache_dir))):
                use_compile_cache(cache)
            for renderer in engine.renderers.values():
                renderer.compile()
        return engine

    @property
    def precision(self) -> str:
        return self.renderers[self.default_size].precision

    @property
    def compiled(self) -> bool:
        return all(r.compiled for r in self.renderers.values())

    @property
    def cuda_graphs(self) -> bool:
        return all(r.captured for r in self.renderers.values())

    @property
    def batch_size(self) -> int:
        """Frames per render batch at the default size."""
        return self.batch_sizes[self.default_size]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.nets))

    @property
    def coeff_channels(self) -> int:
        return MAPPING_CHECKPOINTS[self.mapping_kind][1]

    # ---- per portrait -------------------------------------------------------------------

    @torch.inference_mode()
    def prepare_portrait(self, portrait: np.ndarray, landmarks: np.ndarray, size: int | None = None) -> PreparedPortrait:
        """portrait (H, W, 3) RGB uint8; landmarks (478, 2) MediaPipe points in its pixels."""
        size = size or self.default_size
        if size not in self.nets:
            raise ValueError(f"size {size} is not loaded (available: {list(self.sizes)})")
        crop = face_crop(landmarks, size)
        crop_image = crop.crop(portrait)
        aligned = align_for_recon(crop_image, crop.points_to_crop(five_points(landmarks)))
        with torch.backends.cudnn.flags(enabled=True, benchmark=False):
            source_coeffs = self.source_coefficients(size, aligned.image, aligned.crop_params)

        image = torch.from_numpy(crop_image).to(self.device).permute(2, 0, 1)[None].float() / 255
        window = coefficient_windows(source_coeffs[None], self.coeff_channels)
        source = self.renderers[size].prepare_source(image, torch.from_numpy(window))
        plan = plan_paste(portrait, crop, self.device, self.dtype)
        self.portraits_prepared += 1
        return PreparedPortrait(size, np.ascontiguousarray(portrait), source_coeffs, source, plan)

    @torch.inference_mode()
    def source_coefficients(self, size: int, aligned: np.ndarray, crop_params: np.ndarray) -> np.ndarray:
        """(224, 224, 3) uint8 aligned face -> (73,) exp | angles | trans | crop params."""
        image = torch.from_numpy(aligned).to(self.device).permute(2, 0, 1)[None].float() / 255
        coeffs = self.nets[size].recon(image)[0].cpu().numpy()
        return np.concatenate([coeffs[COEFF_SLICES["exp"]], coeffs[COEFF_SLICES["angle"]],
                               coeffs[COEFF_SLICES["trans"]], crop_params]).astype(np.float32)

    # ---- per request ----------------------------------------------------------------------

    def driving_windows(self, portrait: PreparedPortrait, samples_16k: np.ndarray, fps: float,
                        frame_total: int, request: MotionRequest) -> np.ndarray:
        """Speech -> the mapping net's input for every output frame, (frame_total, C, 27)."""
        if len(samples_16k) == 0:
            raise ValueError("speech is empty")
        frames_25 = frame_count(len(samples_16k) / AUDIO.sample_rate, AUDIO.fps)
        mel_windows = speech_frame_windows(samples_16k, frames_25)
        nets = self.nets[portrait.size]
        # Clip lengths vary per request: no cuDNN autotuning for these small nets.
        with torch.backends.cudnn.flags(enabled=True, benchmark=False):
            coeffs = motion_coefficients(nets.audio2exp, nets.audio2pose, mel_windows,
                                         portrait.source_coeffs, request, self.device)
        windows = coefficient_windows(coeffs, self.coeff_channels)  # at 25 fps
        flat = resample_frames(windows.reshape(frames_25, -1), AUDIO.fps, fps, frame_total)
        return flat.reshape(frame_total, *windows.shape[1:])

    def animate(self, portrait: PreparedPortrait, samples_16k: np.ndarray, fps: float,
                frame_total: int, request: MotionRequest = MotionRequest()) -> Iterator[np.ndarray]:
        """Yields frame_total full-portrait frames (H, W, 3) uint8, rendered in batches. The
        coefficients are computed here (errors raised before the first frame); frames lazily."""
        started = time.perf_counter()
        windows = self.driving_windows(portrait, samples_16k, fps, frame_total, request)
        logger.debug("SadTalker motion for %d frames in %.3f s", frame_total, time.perf_counter() - started)
        return self.render(portrait, windows)

    def driving_stream(self, portrait: PreparedPortrait, fps: float,
                       request: MotionRequest = MotionRequest()) -> DrivingStream:
        """The mapping net's input for speech that arrives piece by piece, continuous across
        pieces (a streaming session's; see driving_stream.py)."""
        return DrivingStream(self.nets[portrait.size], self.device, self.coeff_channels, portrait.source_coeffs, fps, request)

    def render(self, portrait: PreparedPortrait, windows: np.ndarray) -> Iterator[np.ndarray]:
        """Mapping-net windows (N, C, 27) -> N full-portrait frames (H, W, 3) uint8, lazily, in
        batches of the engine's batch size."""
        windows = to_device(windows, self.device)
        renderer = self.renderers[portrait.size]
        # Fixed shapes: a short last batch would make cuDNN autotune and a compiled batch
        # recompile for every clip length.
        pad = renderer.compiled or self.device.type == "cuda"
        batches = ((paste_boxes(renderer.render_batch(portrait.source, chunk), portrait.paste), count)
                   for chunk, count in padded_batches(windows, self.batch_sizes[portrait.size], pad,
                                                      self.padded_batch_size(portrait.size)))
        return self.host_frames.frames(batches, FaceBox(portrait.portrait, portrait.paste.region))

    def padded_batch_size(self, size: int) -> Callable[[int], int]:
        """For a short batch of `count` frames, the frame count to pad it to: of the shapes
        warm-up timed (batch_seconds), the quickest that holds it; else the full batch."""
        timed = self.batch_seconds.get(size, {})
        full = self.batch_sizes[size]

        def padded(count: int) -> int:
            fitting = [frames for frames in timed if frames >= count]
            return min(fitting, key=lambda frames: (timed[frames], frames)) if fitting else full
        return padded


def default_batch_size(device: torch.device, size: int) -> int:
    """Frames per render batch: as many as half the free device memory holds, up to the
    device's useful maximum (an 8 GB card gets ~8 at 256 px, an H200 64)."""
    limit = MAX_BATCH[device.type] if size == 256 else max(1, MAX_BATCH[device.type] // 2)
    if device.type != "cuda":
        return limit
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(limit, free * 0.5 // BYTES_PER_FRAME[size])))


def warm_up(engine: SadTalkerEngine) -> None:
    """Render one batch per size through the path requests take, so that cuDNN autotuning and
    torch.compile happen at start-up, never in a request; then, on CUDA with compile, capture
    the batch as a CUDA graph. A renderer whose compilation fails is put back on the eager path,
    with the error logged. Nothing to do for an eager renderer off CUDA."""
    for size, renderer in engine.renderers.items():
        if not renderer.compiled and engine.device.type != "cuda":
            continue
        started = time.perf_counter()
        try:
            _render_one_batch(engine, size, renderer)
        except Exception as error:
            if not renderer.compiled:
                raise
            logger.error("torch.compile of the SadTalker %d renderer failed (%s: %s); using eager mode",
                         size, type(error).__name__, error)
            renderer.uncompile()
            _render_one_batch(engine, size, renderer)
        logger.info("SadTalker %d renderer warmed up (%s) in %.1f s", size,
                    "compiled, CUDA graph" if renderer.captured else "compiled" if renderer.compiled else "eager",
                    time.perf_counter() - started)


def _render_one_batch(engine: SadTalkerEngine, size: int, renderer: FaceRenderer) -> None:
    """One batch of one portrait and one mixed batch (each frame its own portrait's tensors), then
    on CUDA with compile their graphs' capture; on CUDA, the mixed batch's rate is measured."""
    image = torch.rand(1, 3, size, size, device=engine.device)
    window = torch.zeros(1, engine.coeff_channels, 27)
    source = renderer.prepare_source(image, window)
    batch = engine.batch_sizes[size]
    windows = window.expand(batch, -1, -1)
    gathered = gathered_example(source, batch)
    rendered = renderer.render_batch(source, windows)
    mixed = renderer.render_gathered(windows, *gathered)
    if not (torch.isfinite(rendered).all() and torch.isfinite(mixed).all()):
        raise RuntimeError(f"the SadTalker {size} renderer rendered non-finite values at warm-up")
    if renderer.compiled and engine.device.type == "cuda":
        renderer.capture(source, windows)
    if engine.device.type != "cuda":
        return
    small = tuple(frames for frames in SMALL_BATCHES if frames < batch)
    try:
        renderer.capture_small(source, window, small)
    except Exception as error:  # a graph that cannot be captured costs speed, not service
        logger.warning("SadTalker %d: no graphs for short batches (%s: %s); they pad to %d frames",
                       size, type(error).__name__, error, batch)
    with torch.inference_mode():
        engine.render_rates[size] = measure_frames_per_second(
            renderer.render_gathered, batch, windows.to(engine.device), *gathered)
        engine.batch_seconds[size] = {
            frames: frames / measure_frames_per_second(lambda chunk: renderer.render_batch(source, chunk), frames,
                                                       window.expand(frames, -1, -1).to(engine.device))
            for frames in (*renderer.small_batches, batch)}
    logger.info("SadTalker %d: seconds per batch by frames %s; mixed batch %.0f frames/s", size,
                {frames: round(seconds, 4) for frames, seconds in engine.batch_seconds[size].items()},
                engine.render_rates[size])
