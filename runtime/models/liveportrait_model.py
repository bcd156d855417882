"""LivePortrait backend: our engine on the official checkpoints, driven by speech.

Per portrait (cached by image hash): MediaPipe landmarks, the aligned crop, F and M, the
source keypoints and eye / lip open ratios. Per request: the shared speech motion ->
every frame's driving keypoints at once -> batched W + G -> frames pasted into the portrait.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BackendUnavailable
from ..media.audio import Speech
from .base import (AnimationOptions, AvatarBackend, BackendOptions, BatchedSession, BatchRenderer, PortraitCache,
                   portraits_of)

if TYPE_CHECKING:
    from ..config import Settings
    from ..device import DeviceChoice
    from ..engines.liveportrait.engine import LivePortraitEngine, PreparedSource
    from ..media.landmarks import FaceLocator
    from ..media.speech_motion import FaceMotion

log = logging.getLogger(__name__)


# Frames per second of full batches where warm-up measured none (it does on CUDA): the H200 figure
# (FACTS.md), and a CPU's order of magnitude (~20 s a frame on two cores).
_ESTIMATED_FPS = {"cuda": 480.0, "mps": 5.0, "cpu": 0.05}


class LivePortraitFrames(BatchRenderer):
    """Frames of many sessions in one W + G batch (engines.liveportrait.mixed_batch): each item's
    payload is its frame's driving keypoints (21, 3), its portrait the session's PreparedSource."""

    def __init__(self, engine: LivePortraitEngine):
        self.engine = engine
        self.batch_size = engine.batch_size

    def estimated_frames_per_second(self) -> float:
        return self.engine.render_rate or _ESTIMATED_FPS.get(self.engine.device.type, 0.05)

    def __call__(self, items) -> list[np.ndarray]:
        import torch

        from ..engines.liveportrait.mixed_batch import render_mixed

        sources, index = portraits_of(items)
        return render_mixed(self.engine, sources, index, torch.stack([item.payload for item in items]))


class LivePortraitSession(BatchedSession):
    """Each frame's keypoints follow from its own motion targets: the prepared source is all it carries."""

    def __init__(self, renderer: LivePortraitFrames, source: PreparedSource, options: AnimationOptions):
        self.renderer, self.engine, self.portrait, self.options = renderer, renderer.engine, source, options
        self.unit_frames = renderer.batch_size

    def plan(self, motion: FaceMotion, speech: Speech) -> list:
        """Each frame's driving keypoints, (21, 3) fp32 on the device."""
        from ..engines.liveportrait.driving import driving_targets

        targets = driving_targets(motion, self.portrait.eye_ratios, expression_scale=self.options.expression_scale,
                                  still=self.options.still)
        return list(self.engine.driving_keypoints(self.portrait, targets))


class LivePortraitBackend(AvatarBackend):
    name = "liveportrait"
    display_name = "LivePortrait"
    setup_script = "scripts/setup_liveportrait.sh"

    @classmethod
    def weights_present(cls, settings: Settings) -> bool:
        from ..engines.liveportrait.files import missing_files

        return not missing_files(settings.models_dir / "liveportrait")

    def __init__(self, engine: LivePortraitEngine, locator: FaceLocator, load_seconds: float):
        self.engine = engine
        self.locator = locator
        self.load_seconds = load_seconds
        self._sources: PortraitCache[PreparedSource] = PortraitCache(capacity=16)
        self._frames = LivePortraitFrames(engine)
        self._last_request: dict[str, float] = {}  # seconds by stage, for /health and scripts/bench.py

    @classmethod
    def load(cls, settings: Settings, device: DeviceChoice) -> LivePortraitBackend:
        started = time.perf_counter()
        if not device.torch_available:
            raise BackendUnavailable("torch is not installed (install the 'engines' extra)")
        try:
            from ..engines.liveportrait.checkpoints import CheckpointError
            from ..engines.liveportrait.engine import CompileUnavailable, load_for_serving
            from ..engines.liveportrait.files import missing_files
            from ..media.landmarks import FaceLocator
        except ImportError as error:
            raise BackendUnavailable(f"cannot import the LivePortrait engine: {error}") from error
        weights = settings.models_dir / "liveportrait"
        absent = missing_files(weights)
        if absent:
            raise BackendUnavailable(
                "missing LivePortrait checkpoint(s): " + ", ".join(str(path) for path in absent)
                + " (run scripts/setup_liveportrait.sh)"
            )
        cache = settings.liveportrait_compile_cache_dir or settings.models_dir / ".cache" / "inductor"
        try:
            engine = load_for_serving(weights, device.name, settings.liveportrait_compile, cache)
        except CheckpointError as error:
            raise BackendUnavailable(str(error)) from error
        except CompileUnavailable as error:
            raise BackendUnavailable(f"LIVEPORTRAIT_COMPILE=true but {error} (install what is missing, or set "
                                     "LIVEPORTRAIT_COMPILE=false; LIVEPORTRAIT_COMPILE_CACHE_DIR names a writable "
                                     "cache folder)") from error
        locator = FaceLocator(min_face_side=settings.min_face_side)
        seconds = time.perf_counter() - started
        log.debug("LivePortrait ready on %s (%s, batch %d) in %.1f s", device.name, engine.precision,
                 engine.batch_size, seconds)
        return cls(engine, locator, seconds)

    def _prepare(self, portrait: np.ndarray) -> PreparedSource:
        landmarks = self.locator.locate(portrait)  # NoFaceError when there is no usable face
        return self.engine.prepare_source(portrait, landmarks.points)

    def animate(self, portrait: np.ndarray, speech: Speech, fps: int, frames: int,
                options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                backend_options: BackendOptions | None = None) -> Iterator[np.ndarray]:
        """Eager: the face is found (or NoFaceError raised) before this returns; frames come lazily."""
        from ..engines.liveportrait.driving import driving_targets
        from ..media.speech_motion import face_motion

        started = time.perf_counter()
        source = self._sources.get_or_compute(portrait, self._prepare)
        portrait_done = time.perf_counter()
        targets = driving_targets(face_motion(speech, fps), source.eye_ratios,
                                  expression_scale=options.expression_scale, still=options.still)
        rendered = self.engine.render(source, self.engine.driving_keypoints(source, targets))
        self._last_request = {"portrait_seconds": round(portrait_done - started, 4),
                              "motion_seconds": round(time.perf_counter() - portrait_done, 4)}
        return rendered

    def start_session(self, portrait: np.ndarray, fps: int,
                      options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                      backend_options: BackendOptions | None = None) -> LivePortraitSession:
        return LivePortraitSession(self._frames, self._sources.get_or_compute(portrait, self._prepare), options)

    @property
    def batch_renderer(self) -> LivePortraitFrames:
        return self._frames

    @property
    def preparations(self) -> int:
        return self._sources.computed

    def describe(self) -> dict:
        return {
            "device": str(self.engine.device),
            "precision": self.engine.precision,
            "batch_size": self.engine.batch_size,
            "compiled": self.engine.compiled,
            "load_seconds": round(self.load_seconds, 2),
            "cached_portraits": len(self._sources),
            "last_request": {**self._last_request, **self.engine.host_frames.last.as_dict()},
        }
