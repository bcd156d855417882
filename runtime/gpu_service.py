"""FastAPI app: at startup picks the device and loads TTS + avatar through the factories, then serves.

Run: `uvicorn runtime.gpu_service:create_app --factory --port 8001` or `python -m runtime.gpu_service`.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .api.routes import router
from .config import Settings, load_settings
from .device import DeviceChoice, select_device
from .errors import ServiceBusyError, UserInputError
from .generation import GenerationService, new_request_id
from .models.factory import BackendSelection, load_avatar_backend
from .models.lip_refiner import load_lip_refiner
from .quality.service import EvaluationService
from .process import configure_process
from .tts.factory import TTSSelection, load_tts_engine

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
    log.info("TTS: %s, voice %s", tts.name, tts.default_voice)
    avatar, avatar_selection = load_avatar_backend(settings, device)
    lip_refiner = load_lip_refiner(settings, device)
    generation = GenerationService(settings, tts, avatar, lip_refiner)
    return LoadedService(settings, device, tts_selection, avatar_selection, generation,
                         EvaluationService.load(settings, device.name if device.torch_available else "cpu"))


def _error(status: int, error: str, detail: str, request: Request) -> JSONResponse:
    body = {"error": error, "detail": detail}
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": request_id} if request_id else None)


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or load_settings()
    configure_process(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = build_service(settings)
        log.info("Ready: http://%s:%d", settings.host, settings.port)
        yield

    app = FastAPI(
        title="Realtime avatar GPU service",
        description="Text in, talking-head mp4 out. POST /generate; GET /health.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.middleware("http")
    async def assign_request_id(request: Request, call_next):
        """Every response names its request, errors found before /generate's handler runs too
        (a 422 from body validation), so a client's report can be matched with the server log."""
        request.state.request_id = new_request_id()
        response = await call_next(request)
        response.headers.setdefault("X-Request-ID", request.state.request_id)
        return response

    @app.exception_handler(UserInputError)
    async def user_input_error(request: Request, exc: UserInputError):
        log.info("request %s: %d %s", getattr(request.state, "request_id", "?"), exc.status_code, exc.error)
        return _error(exc.status_code, exc.error, exc.detail, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, "invalid_request", detail, request)

    @app.exception_handler(ServiceBusyError)
    async def busy(request: Request, exc: ServiceBusyError):
        return _error(503, "busy", str(exc), request)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        request_id = getattr(request.state, "request_id", "?")
        log.exception("request %s failed", request_id)
        # The exception's text can hold paths and object reprs: it goes to the log, not to the client.
        return _error(500, "internal_error", f"internal error; the server log has the details under request {request_id}",
                      request)

    return app


def main() -> None:
    import uvicorn

    settings = load_settings()
    app = create_app(settings)  # configures logging; uvicorn keeps its hands off it (log_config=None)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
