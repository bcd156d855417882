"""The HTTP endpoints: HTTP fields in, a GenerationRequest to the pipeline, its result out.

Transport concerns live here (body size, JSON or multipart, base64); what the values mean is checked
by the pipeline, once."""
from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import InvalidAudioError, InvalidImageError, InvalidVideoError, UserInputError
from ..generation import GenerationRequest, GenerationService
from .schemas import ErrorBody, EvaluateRequestBody, GenerateRequestBody

router = APIRouter()

# Fields that carry a file: base64 in JSON, a file part (or base64) in multipart -> error for bad data.
_BINARY_FIELDS = {"image": InvalidImageError, "audio": InvalidAudioError, "speaker_wav": InvalidAudioError}
_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": GenerateRequestBody.model_json_schema()},
            "multipart/form-data": {"schema": GenerateRequestBody.model_json_schema()},
        },
    }
}


def pipeline(request: Request) -> GenerationService:
    return request.app.state.service.generation


def _decode_base64(value: str, field: str, error: type[UserInputError]) -> bytes:
    """Strict base64 (a data: URL prefix is allowed) -> bytes; the body limit already bounds its size."""
    text = _DATA_URL.sub("", value.strip(), count=1)
    text = "".join(text.split())  # line breaks are common in base64 tools' output
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{field} is not valid base64: {exc}") from exc
    if not data:
        raise error(f"{field} is empty")
    return data


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


def _to_generation_request(fields: dict, files: dict[str, bytes], request_id: str) -> GenerationRequest:
    unknown_files = set(files) - set(_BINARY_FIELDS)
    if unknown_files:
        raise UserInputError(f"unexpected file parts: {', '.join(sorted(unknown_files))}", error="invalid_request")
    if isinstance(fields.get("backend_options"), str):  # multipart carries it as JSON text
        try:
            fields["backend_options"] = json.loads(fields["backend_options"])
        except json.JSONDecodeError as exc:
            raise UserInputError(f"backend_options is not a JSON object: {exc}", error="invalid_request") from exc
    try:
        body = GenerateRequestBody.model_validate(fields)
    except ValidationError as exc:
        raise UserInputError(_validation_message(exc), error="invalid_request") from exc
    binary: dict[str, bytes | None] = {}
    for name, error in _BINARY_FIELDS.items():
        if name in files:
            binary[name] = files[name] or None
        elif getattr(body, name) is not None:
            binary[name] = _decode_base64(getattr(body, name), name, error)
        else:
            binary[name] = None
    return GenerationRequest(
        request_id=request_id,
        text=body.text,
        image=binary["image"],
        audio=binary["audio"],
        speaker_wav=binary["speaker_wav"],
        voice=body.voice,
        fps=body.fps,
        still=body.still,
        expression_scale=body.expression_scale,
        backend_options=body.backend_options,
        seed_options={name: getattr(body, name) for name in ("pose_style", "size") if getattr(body, name) is not None},
        lip_refine=body.lip_refine,
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
    svc = pipeline(request)
    s = svc.settings
    max_body = 2 * (s.max_image_bytes + 2 * s.max_audio_bytes) + 4 * s.max_text_chars + 65536  # base64 inflates by 4/3
    fields, files = await _read_fields(request, max_body)
    job = _to_generation_request(fields, files, request.state.request_id)
    workdir = Path(tempfile.mkdtemp(prefix="avatar-"))
    try:
        result = await run_in_threadpool(svc.generate, job, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    headers = {  # X-Request-ID comes from the service's middleware, as on every response
        "X-Avatar-Backend": result.backend,
        "X-TTS-Engine": result.tts_engine,
        "X-Lip-Refiner": result.lip_refiner,
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
    return JSONResponse(request.app.state.service.health())


@router.post(
    "/evaluate",
    summary="Quality metrics of an mp4: lip sync, A/V timing, identity, jitter, sharpness, SyncNet LSE-C/LSE-D",
    responses={422: {"model": ErrorBody}, 413: {"model": ErrorBody}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": EvaluateRequestBody.model_json_schema()},
        "multipart/form-data": {"schema": EvaluateRequestBody.model_json_schema()}}}},
)
async def evaluate(request: Request) -> JSONResponse:
    evaluator = request.app.state.service.evaluation
    s = evaluator.settings
    fields, files = await _read_fields(request, 2 * (s.max_video_bytes + s.max_image_bytes) + 65536)
    unknown_files = set(files) - {"video", "portrait"}
    if unknown_files:
        raise UserInputError(f"unexpected file parts: {', '.join(sorted(unknown_files))}", error="invalid_request")
    try:
        body = EvaluateRequestBody.model_validate({**fields, **{name: "" for name in files}})
    except ValidationError as exc:
        raise UserInputError(_validation_message(exc), error="invalid_request") from exc
    video = files.get("video") or _decode_base64(body.video, "video", InvalidVideoError)
    portrait = files.get("portrait")
    if portrait is None and body.portrait:
        portrait = _decode_base64(body.portrait, "portrait", InvalidImageError)
    return JSONResponse(await run_in_threadpool(evaluator.evaluate, video, portrait))
