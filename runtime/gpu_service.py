"""FastAPI app: at startup picks the device and loads TTS + avatar through the factories, then serves.

Run: `uvicorn runtime.gpu_service:create_app --factory --port 8001` or `python -m runtime.gpu_service`.
"""
from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .api.routes import router
from .config import Settings, load_settings
from .device import select_device
from .errors import ServiceBusyError, UserInputError
from .generation import GenerationService, new_request_id
from .models.factory import load_avatar_backend
from .tts.factory import load_tts_engine

log = logging.getLogger("runtime.gpu_service")

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def build_service(settings: Settings) -> GenerationService:
    """Everything /generate needs, loaded once: device, TTS engine, avatar backend."""
    device = select_device(settings)
    log.info("Device: %s (%s)", device.name, device.reason)
    tts, tts_selection = load_tts_engine(settings, device)
    log.info("TTS: %s, voice %s", tts.name, tts.default_voice)
    avatar, avatar_selection = load_avatar_backend(settings, device)
    log.info("Avatar backend: %s", avatar.name)
    return GenerationService(settings, device, tts, tts_selection, avatar, avatar_selection)


def _error(status: int, error: str, detail: str, request: Request) -> JSONResponse:
    body = {"error": error, "detail": detail}
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": request_id} if request_id else None)


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    # The renderer thread and the encoder thread of a request hand the GIL back and forth around
    # every C call; at CPython's default 5 ms switch interval each hand-over can stall the other
    # for 5 ms (the convoy effect), which starved the GPU between batches. 0.5 ms bounds the stall.
    sys.setswitchinterval(0.0005)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = build_service(settings)
        log.info("Ready on port %d", settings.port)
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
        log.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return _error(500, "internal_error", f"{type(exc).__name__}: {exc}", request)

    return app


def main() -> None:
    import uvicorn

    settings = load_settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
