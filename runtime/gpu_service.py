"""FastAPI app: at startup picks the device and loads TTS + avatar through the factories, then serves.

Run: `uvicorn runtime.gpu_service:create_app --factory --port 8001` or `python -m runtime.gpu_service`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Optional

from fastapi import FastAPI

from .api.avatar_routes import router as avatar_router
from .api.edge import install_edge
from .api.probes import router as probes_router
from .api.routes import router
from .api.serving import Lifecycle, serve
from .api.session import router as session_router
from .api.web import router as web_router
from .avatars import AvatarStore
from .config import Settings, load_settings
from .device import DeviceChoice, select_device
from .generation import GenerationService
from .models.factory import BackendSelection, load_avatar_backend
from .models.lip_refiner import load_lip_refiner
from .quality.service import EvaluationService
from .observability import Metrics, device_memory_reader
from .process import configure_process
from .tts.factory import TTSSelection, load_tts_engine
from .tts.pool import PooledTTS
from .workdirs import remove_stale_workdirs

log = logging.getLogger("runtime.gpu_service")


@dataclass
class LoadedService:
    """What start-up loaded, and how it was chosen: the pipeline plus what /health reports."""

    settings: Settings
    device: DeviceChoice
    tts_selection: TTSSelection
    avatar_selection: BackendSelection
    generation: GenerationService
    evaluation: EvaluationService

    def health(self) -> dict:
        """The seed's /health shape, plus detail from the device, the factories and the pipeline."""
        pipeline = self.generation
        return {
            "status": "healthy",
            "device": self.device.name,
            "avatar_backend": pipeline.avatar.name,
            "models": {"tts": True, "avatar": True, "avatar_backend": pipeline.avatar.name},
            "detail": {
                "device": self.device.describe(self.settings),
                "avatar": {**self.avatar_selection.as_dict(), "options": sorted(pipeline.avatar.options_model.model_fields),
                           **pipeline.avatar.describe()},
                "tts": {**self.tts_selection.as_dict(), **pipeline.tts.describe()},
                "lip_refiner": pipeline.lip_refiner.as_dict(),
                "quality": self.evaluation.describe(),
                **pipeline.describe(),
            },
        }


def build_service(settings: Settings) -> LoadedService:
    """Everything /generate needs, loaded once: device, TTS engine, avatar backend."""
    device = select_device(settings)
    log.info("Device: %s (%s)", device.name, device.reason)
    tts, tts_selection = load_tts_engine(settings, device)
    log.info("TTS: %s, voice %s, %d worker(s)", tts.name, tts.default_voice, settings.tts_workers)
    tts = PooledTTS(tts, settings.tts_workers)
    avatar, avatar_selection = load_avatar_backend(settings, device)
    lip_refiner = load_lip_refiner(settings, device)
    generation = GenerationService(settings, tts, avatar, lip_refiner)
    return LoadedService(settings, device, tts_selection, avatar_selection, generation,
                         EvaluationService.load(settings, device.name if device.torch_available else "cpu"))


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or load_settings()
    configure_process(settings)
    metrics = Metrics()
    lifecycle = Lifecycle(settings.shutdown_grace_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        remove_stale_workdirs()
        # Models load in the background so the probes answer meanwhile (/health/ready: 503 until warm).
        loading = asyncio.create_task(asyncio.to_thread(_load_and_warm, app, settings, metrics, lifecycle))
        yield
        loading.cancel()
        if app.state.service is not None:
            app.state.service.generation.tts.close()
            app.state.service.generation.close()

    app = FastAPI(
        title="Realtime avatar GPU service",
        description="Text in, talking-head mp4 out. POST /generate; GET /health.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle
    app.state.service = None
    app.state.avatars = None
    app.include_router(router)
    app.include_router(probes_router)
    app.include_router(avatar_router)
    app.include_router(session_router)
    app.include_router(web_router)
    install_edge(app, settings, metrics)
    return app


def _load_and_warm(app: FastAPI, settings: Settings, metrics: Metrics, lifecycle: Lifecycle) -> None:
    """Load everything, speak one short utterance and prepare the default portrait, then declare the
    service ready. A failure is logged and stops the server (exit status 1)."""
    try:
        service = build_service(settings)
        pipeline = service.generation
        started = time.perf_counter()
        pipeline.tts.synthesize("Ready.")
        pipeline.avatar.prepare(pipeline.default_portrait())
        pipeline.measure_capacity()
        log.info("Warmed up in %.2f s", time.perf_counter() - started)
        app.state.avatars = AvatarStore(settings.data_dir, pipeline.avatar, pipeline.portraits,
                                        settings.avatar_cache_size, settings.max_avatars)
        app.state.service = service
        metrics.watch_queue(lambda: pipeline.pending)
        metrics.watch_device_memory(service.device.name, device_memory_reader(service.device.name))
        metrics.watch_preparations(pipeline.avatar.name, lambda: pipeline.avatar.preparations)
        metrics.watch_rendering(pipeline.scheduler or pipeline.parallel, service.device.name)
        lifecycle.ready = True
        metrics.ready.set(1)
        log.info("Ready: http://%s:%d", settings.host, settings.port)
    except Exception as exc:
        lifecycle.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("Start-up failed; stopping")
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    settings = load_settings()
    app = create_app(settings)  # configures logging; uvicorn keeps its hands off it (log_config=None)
    serve(app, settings)
    if app.state.lifecycle.load_error:
        sys.exit(1)


if __name__ == "__main__":
    main()
