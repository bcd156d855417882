"""SadTalker backend: our engine on the official checkpoints, resident and batched.

Per portrait and render size (cached by image hash): MediaPipe landmarks, the face crop, the
source 3DMM coefficients, the generator's source volumes and the paste plan. Per request:
speech at 16 kHz -> expression + pose sequences -> keypoints for every frame -> batched
render -> frames pasted into the full portrait.
"""
from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Iterator, Literal, Optional

import numpy as np
from pydantic import Field

from ..errors import BackendUnavailable, UserInputError
from ..media.audio import Speech, resample
from .base import (AnimationOptions, AvatarBackend, BackendOptions, BatchedSession, BatchRenderer, PortraitCache,
                   portraits_of)

if TYPE_CHECKING:
    from ..config import Settings
    from ..device import DeviceChoice
    from ..engines.sadtalker.engine import PreparedPortrait, SadTalkerEngine
    from ..media.landmarks import FaceLocator
    from ..media.speech_motion import FaceMotion

log = logging.getLogger(__name__)


class SadTalkerOptions(BackendOptions):
    pose_style: int = Field(0, ge=0, le=45, description="SadTalker pose style.")
    size: Optional[Literal[256, 512]] = Field(None, description="Render size (default: the smallest loaded).")


# Frames per second of full 256 px batches where warm-up measured none (it does on CUDA): the H200
# figure (FACTS.md), and a CPU's order of magnitude.
_ESTIMATED_FPS = {"cuda": 290.0, "mps": 5.0, "cpu": 0.2}


class SadTalkerFrames(BatchRenderer):
    """Frames of many sessions in shared renderer batches (engines.sadtalker.mixed_batch): each
    item's payload is its frame's coefficient window (C, 27), its portrait the session's
    PreparedPortrait. Portraits prepared at another size render in a batch of their own."""

    def __init__(self, engine: "SadTalkerEngine"):
        self.engine = engine
        self.batch_size = engine.batch_sizes[engine.default_size]

    def estimated_frames_per_second(self) -> float:
        measured = self.engine.render_rates.get(self.engine.default_size)
        return measured or _ESTIMATED_FPS.get(self.engine.device.type, 0.2)

    def __call__(self, items) -> list[np.ndarray]:
        import torch

        from ..engines.sadtalker.mixed_batch import render_mixed

        frames: list[np.ndarray] = [np.empty(0)] * len(items)
        for size in sorted({item.portrait.size for item in items}):
            rows = [row for row, item in enumerate(items) if item.portrait.size == size]
            batch = self.engine.batch_sizes[size]
            for start in range(0, len(rows), batch):
                chunk = rows[start:start + batch]
                portraits, index = portraits_of([items[row] for row in chunk])
                windows = torch.from_numpy(np.stack([items[row].payload for row in chunk]))
                for row, frame in zip(chunk, render_mixed(self.engine, portraits, index, windows)):
                    frames[row] = frame
        return frames


class SadTalkerSession(BatchedSession):
    """SadTalker's motion for a stream, piece by piece: the engine's DrivingStream carries speech
    context, pose, latents and blinks from one piece to the next, so the head moves on where the
    last piece left it. A unit is a whole number of render batches (at least 2 s): no padded
    batch between full units. The device's render scheduler renders the planned windows."""

    def __init__(self, renderer: SadTalkerFrames, prepared: "PreparedPortrait", fps: int, options: AnimationOptions,
                 backend_options: SadTalkerOptions):
        from ..engines.sadtalker.coefficients import MotionRequest

        self.renderer, self.engine, self.portrait, self.fps = renderer, renderer.engine, prepared, fps
        request = MotionRequest(expression_scale=options.expression_scale, pose_style=backend_options.pose_style,
                                still=options.still)
        self.driving = self.engine.driving_stream(prepared, fps, request)
        batch = self.engine.batch_sizes[prepared.size]
        self.unit_frames = batch * max(1, math.ceil(2 * fps / batch))
        self.units = 0
        self.motion_seconds = 0.0

    def plan(self, motion: "FaceMotion", speech: Speech) -> list[np.ndarray]:
        """Each frame's mapping-net window, (C, 27) float32, continuing the stream's motion."""
        started = time.perf_counter()
        windows = self.driving.windows(resample(speech, 16000).samples, motion.first_frame, motion.n_frames)
        self.motion_seconds += time.perf_counter() - started
        self.units += 1
        return list(windows.astype(np.float32, copy=False))

    def stages(self) -> dict:
        """Seconds by stage over the units so far, for /health and scripts/bench.py (rendering is
        the scheduler's: /metrics)."""
        return {"units": self.units, "motion_seconds": round(self.motion_seconds, 4)}


class SadTalkerBackend(AvatarBackend):
    name = "sadtalker"
    display_name = "SadTalker"
    options_model = SadTalkerOptions
    setup_script = "scripts/setup_sadtalker.sh"

    @classmethod
    def weights_present(cls, settings: "Settings") -> bool:
        from ..engines.sadtalker.config import MAPPING_CHECKPOINTS, SAFETENSORS_NAME, SUPPORTED_SIZES

        folder = settings.models_dir / "sadtalker"
        return ((folder / MAPPING_CHECKPOINTS["full"][0]).is_file()
                and any((folder / SAFETENSORS_NAME.format(size=size)).is_file() for size in SUPPORTED_SIZES))

    def __init__(self, engine: "SadTalkerEngine", locator: "FaceLocator", load_seconds: float):
        self.engine = engine
        self.locator = locator
        self.load_seconds = load_seconds
        self._portraits: dict[int, PortraitCache["PreparedPortrait"]] = {
            size: PortraitCache(capacity=16) for size in engine.sizes}
        self._frames = SadTalkerFrames(engine)
        self._last_request: dict[str, float] = {}  # seconds by stage, for /health and scripts/bench.py
        self._last_session: Optional[SadTalkerSession] = None  # the last request's, when it streamed

    @classmethod
    def load(cls, settings: "Settings", device: "DeviceChoice") -> "SadTalkerBackend":
        started = time.perf_counter()
        if not device.torch_available:
            raise BackendUnavailable("torch is not installed (install the 'engines' extra)")
        try:
            from ..engines.sadtalker.checkpoint import CheckpointError
            from ..engines.sadtalker.engine import SadTalkerEngine, warm_up
            from ..media.landmarks import FaceLocator
        except ImportError as error:
            raise BackendUnavailable(f"cannot import the SadTalker engine: {error}") from error
        try:
            engine = SadTalkerEngine.load(settings.models_dir / "sadtalker", device.name,
                                          compile_renderer=settings.sadtalker_compile,
                                          compile_cache_dir=settings.models_dir / ".cache" / "inductor")
        except CheckpointError as error:
            raise BackendUnavailable(f"{error} (run scripts/setup_sadtalker.sh)") from error
        warm_up(engine)  # compiles (and captures the CUDA graph) here, never in a request
        locator = FaceLocator(min_face_side=settings.min_face_side)
        seconds = time.perf_counter() - started
        log.debug("SadTalker ready on %s (sizes %s, %s, batches %s) in %.1f s", device.name,
                 list(engine.sizes), engine.precision, engine.batch_sizes, seconds)
        return cls(engine, locator, seconds)

    def _size(self, options: SadTalkerOptions) -> int:
        size = options.size or self.engine.default_size
        if size not in self.engine.sizes:
            raise UserInputError(
                f"size {size} is not available on this server (loaded: {list(self.engine.sizes)}); "
                "the 512 model needs SadTalker_V0.0.2_512.safetensors", error="invalid_request")
        return size

    def _prepare(self, portrait: np.ndarray, size: int) -> "PreparedPortrait":
        landmarks = self.locator.locate(portrait)  # NoFaceError when there is no usable face
        return self.engine.prepare_portrait(portrait, landmarks.points, size)

    def animate(self, portrait: np.ndarray, speech: Speech, fps: int, frames: int,
                options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                backend_options: Optional[SadTalkerOptions] = None) -> Iterator[np.ndarray]:
        """Eager: face, coefficients and keypoints are ready (or an error raised) before this
        returns; frames come lazily in render batches."""
        from ..engines.sadtalker.coefficients import MotionRequest

        backend_options = backend_options or SadTalkerOptions()
        size = self._size(backend_options)
        started = time.perf_counter()
        prepared = self._portraits[size].get_or_compute(portrait, lambda image: self._prepare(image, size))
        portrait_done = time.perf_counter()
        speech_16k = resample(speech, 16000)
        request = MotionRequest(expression_scale=options.expression_scale, pose_style=backend_options.pose_style,
                                still=options.still)
        rendered = self.engine.animate(prepared, speech_16k.samples, fps, frames, request)
        self._last_request = {"portrait_seconds": round(portrait_done - started, 4),
                              "motion_seconds": round(time.perf_counter() - portrait_done, 4)}
        self._last_session = None
        return rendered

    def start_session(self, portrait: np.ndarray, fps: int,
                      options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                      backend_options: Optional[SadTalkerOptions] = None) -> SadTalkerSession:
        backend_options = backend_options or SadTalkerOptions()
        size = self._size(backend_options)
        started = time.perf_counter()
        prepared = self._portraits[size].get_or_compute(portrait, lambda image: self._prepare(image, size))
        self._last_request = {"portrait_seconds": round(time.perf_counter() - started, 4)}
        self._last_session = SadTalkerSession(self._frames, prepared, fps, options, backend_options)
        return self._last_session

    @property
    def batch_renderer(self) -> SadTalkerFrames:
        return self._frames

    @property
    def preparations(self) -> int:
        return self.engine.portraits_prepared

    def describe(self) -> dict:
        return {
            "device": str(self.engine.device),
            "precision": self.engine.precision,
            "batch_sizes": {str(size): batch for size, batch in self.engine.batch_sizes.items()},
            "sizes": list(self.engine.sizes),
            "mapping": self.engine.mapping_kind,
            "compiled": self.engine.compiled,
            "cuda_graphs": self.engine.cuda_graphs,
            "load_seconds": round(self.load_seconds, 2),
            "cached_portraits": sum(len(cache) for cache in self._portraits.values()),
            "portraits_prepared": self.engine.portraits_prepared,
            "render_rates": {str(size): round(rate, 1) for size, rate in self.engine.render_rates.items()},
            "batch_seconds": {str(size): {str(frames): round(seconds, 4) for frames, seconds in by_frames.items()}
                              for size, by_frames in self.engine.batch_seconds.items()},
            "last_request": {**self._last_request, **(self._last_session.stages() if self._last_session is not None
                                                      else self.engine.host_frames.last.as_dict())},
        }
