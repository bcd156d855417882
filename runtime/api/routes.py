"""The HTTP endpoints. They parse and validate, then hand work to the GenerationService."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import (
    AudioTooLargeError,
    ImageTooLargeError,
    InvalidAudioError,
    InvalidImageError,
    UserInputError,
)
from ..generation import GenerationRequest, GenerationService
from ..media.portrait import decode_base64_field
from ..models.base import AnimationOptions
from .schemas import ErrorBody, GenerateRequestBody

router = APIRouter()

_BINARY_FIELDS = {
    # field -> (setting that bounds it, error for bad data)
    "image": ("max_image_bytes", InvalidImageError),
    "audio": ("max_audio_bytes", InvalidAudioError),
    "speaker_wav": ("max_audio_bytes", InvalidAudioError),
}
_TOO_LARGE = {"image": ImageTooLargeError, "audio": AudioTooLargeError, "speaker_wav": AudioTooLargeError}

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": GenerateRequestBody.model_json_schema()},
            "multipart/form-data": {"schema": GenerateRequestBody.model_json_schema()},
        },
    }
}


def service(request: Request) -> GenerationService:
    return request.app.state.service


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


async def _read_fields(request: Request, max_body: int) -> tuple[dict, dict[str, bytes]]:
    """Form or JSON fields, plus raw bytes of any file parts."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body:
        raise UserInputError(f"request body is {declared} bytes; the limit is {max_body}", error="body_too_large", status_code=413)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            form = await request.form(max_files=4, max_fields=32, max_part_size=max_body)
        except Exception as exc:
            raise UserInputError(f"the form could not be parsed: {exc}", error="invalid_form", status_code=400) from exc
        fields, files = {}, {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[name] = await value.read()
            else:
                fields[name] = value
        return fields, files
    body = await request.body()
    if len(body) > max_body:
        raise UserInputError(f"request body is {len(body)} bytes; the limit is {max_body}", error="body_too_large", status_code=413)
    try:
        fields = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"the body is not valid JSON: {exc}", error="invalid_json", status_code=400) from exc
    if not isinstance(fields, dict):
        raise UserInputError("the JSON body must be an object", error="invalid_json", status_code=400)
    return fields, {}


def _to_generation_request(fields: dict, files: dict[str, bytes], svc: GenerationService,
                           request_id: str) -> GenerationRequest:
    settings = svc.settings
    unknown_files = set(files) - set(_BINARY_FIELDS)
    if unknown_files:
        raise UserInputError(f"unexpected file parts: {', '.join(sorted(unknown_files))}", error="invalid_request")
    try:
        body = GenerateRequestBody.model_validate(fields)
    except ValidationError as exc:
        raise UserInputError(_validation_message(exc), error="invalid_request") from exc
    fps = body.fps or settings.default_fps
    if fps > settings.max_fps:
        raise UserInputError(f"fps is {fps}; the limit is {settings.max_fps}", error="invalid_request")
    binary: dict[str, bytes | None] = {}
    for name, (limit_name, error) in _BINARY_FIELDS.items():
        limit = getattr(settings, limit_name)
        if name in files:
            if len(files[name]) > limit:
                raise _TOO_LARGE[name](f"{name} is {len(files[name])} bytes; the limit is {limit}")
            binary[name] = files[name] or None
        elif getattr(body, name) is not None:
            binary[name] = decode_base64_field(getattr(body, name), name, limit, error)
        else:
            binary[name] = None
    return GenerationRequest(
        request_id=request_id,
        text=body.text,
        image=binary["image"],
        audio=binary["audio"],
        speaker_wav=binary["speaker_wav"],
        voice=body.voice,
        fps=fps,
        options=AnimationOptions(
            still=body.still, expression_scale=body.expression_scale, pose_style=body.pose_style, size=body.size
        ),
    )


@router.post(
    "/generate",
    summary="Speak text with a talking portrait; returns an mp4",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "H.264 + AAC mp4"},
        400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody},
        503: {"model": ErrorBody}, 500: {"model": ErrorBody},
    },
    openapi_extra=_OPENAPI_BODY,
)
async def generate(request: Request):
    svc = service(request)
    s = svc.settings
    max_body = 2 * (s.max_image_bytes + 2 * s.max_audio_bytes) + 4 * s.max_text_chars + 65536  # base64 inflates by 4/3
    fields, files = await _read_fields(request, max_body)
    job = _to_generation_request(fields, files, svc, request.state.request_id)
    workdir = Path(tempfile.mkdtemp(prefix="avatar-"))
    try:
        result = await run_in_threadpool(svc.generate, job, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    headers = {  # X-Request-ID comes from the service's middleware, as on every response
        "X-Avatar-Backend": result.backend,
        "X-TTS-Engine": result.tts_engine,
        "X-Video-Frames": str(result.frames),
        "X-Video-Duration": f"{result.duration:.3f}",
        **{f"X-{name.title()}-Seconds": f"{value:.3f}" for name, value in result.seconds.items()},
    }
    return FileResponse(
        result.path,
        media_type="video/mp4",
        filename=f"avatar-{result.request_id}.mp4",
        headers=headers,
        background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True),
    )


@router.get("/health", summary="Device, loaded backends and why anything fell back")
async def health(request: Request) -> JSONResponse:
    return JSONResponse(service(request).health())
