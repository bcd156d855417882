"""What orchestrators read: liveness, readiness and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .schemas import ErrorBody

router = APIRouter(tags=["probes"])


@router.get("/health/live", summary="The process answers (liveness); never needs a key")
async def live() -> JSONResponse:
    return JSONResponse({"status": "alive"})


@router.get(
    "/health/ready",
    summary="Models loaded and warm, and not draining (readiness); never needs a key",
    responses={503: {"model": ErrorBody, "description": "loading, failed to load, or draining"}},
)
async def ready(request: Request) -> JSONResponse:
    lifecycle = request.app.state.lifecycle
    if lifecycle.accepting:
        return JSONResponse({"status": "ready"})
    if lifecycle.draining:
        status, detail = "draining", "the server is shutting down"
    elif lifecycle.load_error:
        status, detail = "failed", "the models could not be loaded; see the server log"
    else:
        status, detail = "loading", "the models are loading and warming up"
    return JSONResponse({"error": "not_ready", "detail": detail, "request_id": request.state.request_id,
                         "status": status}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
