"""Everything between the socket and the routes, installed in one call: middleware in its order,
errors mapped to HTTP in one place (all in the `{"error", "detail", "request_id"}` shape), and the
OpenAPI schema's limits taken from the settings the server enforces."""
from __future__ import annotations

import errno
import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..cancellation import Cancelled
from ..config import Settings
from ..errors import ServiceBusyError, UserInputError
from ..observability import Metrics
from .auth import AccessGuard
from .cancellable import ClientGone
from .guards import BodyGuard, RequestContext

log = logging.getLogger(__name__)

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# Statuses any endpoint may answer, documented on every operation so a client (and Schemathesis)
# knows them: refusals at the edge, limits, deadlines, and the server's own failures.
COMMON_ERRORS = (400, 401, 404, 405, 408, 409, 413, 415, 422, 429, 500, 503, 504, 507)
EXPOSED_HEADERS = ["X-Request-ID", "X-Avatar-Backend", "X-TTS-Engine", "X-Video-Frames", "X-Video-Duration",
                   "X-Tts-Seconds", "X-Animation-Seconds", "X-Encoding-Seconds", "X-Queue-Seconds",
                   "X-Total-Seconds", "Retry-After"]


def error_response(request: Request, status: int, error: str, detail: str, headers=None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    # The header too: a 500 is sent from outside the middleware that adds it to every other answer.
    headers = {**(headers or {}), **({"X-Request-ID": request_id} if request_id else {})}
    return JSONResponse({"error": error, "detail": detail, "request_id": request_id}, status_code=status,
                        headers=headers)


def install_edge(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    # add_middleware puts each new one outside the previous: this reads from the routes outwards.
    app.add_middleware(BodyGuard, settings=settings)
    app.add_middleware(AccessGuard, keys=settings.access_keys(), per_minute=settings.rate_limit_per_minute,
                       burst=settings.rate_limit_burst, metrics=metrics)
    if settings.cors_origins:  # none by default: browsers on other sites get no CORS headers at all
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=EXPOSED_HEADERS, max_age=600)
    app.add_middleware(RequestContext, metrics=metrics)
    _install_error_handlers(app)
    _install_openapi_limits(app, settings)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UserInputError)
    async def user_input_error(request: Request, exc: UserInputError):
        log.info("request %s: %d %s", getattr(request.state, "request_id", "?"), exc.status_code, exc.error)
        return error_response(request, exc.status_code, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(request, 422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        names = {404: "not_found", 405: "method_not_allowed"}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            detail = f"no endpoint at {request.url.path[:200]}; see /docs"
        return error_response(request, exc.status_code, names.get(exc.status_code, "http_error"), detail,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(ServiceBusyError)
    async def busy(request: Request, exc: ServiceBusyError):
        return error_response(request, 503, "busy", str(exc),
                              headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone):
        return error_response(request, 499, "client_closed_request", "the client disconnected; the work was stopped")

    @app.exception_handler(Cancelled)
    async def cancelled(request: Request, exc: Cancelled):
        return error_response(request, 503, "cancelled", "the work was stopped before it finished")

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError):
        if exc.errno in _NO_SPACE:
            log.error("request %s: no space left for temporary files", getattr(request.state, "request_id", "?"))
            return error_response(request, 507, "insufficient_storage",
                                  "the server has no disk space left for this request; retry later")
        raise exc  # any other failure: a 500 from RequestContext (guards.py), request id only


def _install_openapi_limits(app: FastAPI, settings: Settings) -> None:
    """The schema states the limits the server enforces: text maxLength = MAX_TEXT_CHARS, fps maximum
    = MAX_FPS, and the common error statuses on every operation."""

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                for status in COMMON_ERRORS:
                    responses.setdefault(str(status), {
                        "description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
                for media in operation.get("requestBody", {}).get("content", {}).values():
                    properties = media.get("schema", {}).get("properties", {})
                    if "text" in properties:
                        properties["text"]["maxLength"] = settings.max_text_chars
                    if "fps" in properties:
                        _set_maximum(properties["fps"], settings.max_fps)
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault("ErrorBody", _error_schema())
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _set_maximum(prop: dict, maximum: int) -> None:
    for variant in prop.get("anyOf", [prop]):
        if variant.get("type") == "integer":
            variant["maximum"] = maximum


def _error_schema() -> dict:
    return {"type": "object", "required": ["error", "detail", "request_id"],
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"},
                           "request_id": {"type": ["string", "null"]}}}
