"""The HTTP endpoints: HTTP fields in, a GenerationRequest to the pipeline, its result out.

Transport concerns live here (body size, JSON or multipart, base64); what the values mean is checked
by the pipeline, once."""
from __future__ import annotations

import json
import shutil

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ..cancellation import CancelToken
from ..errors import InvalidAudioError, InvalidImageError, InvalidVideoError, UserInputError
from ..generation import GenerationRequest, GenerationService
from ..workdirs import new_workdir
from .cancellable import run_cancellable
from .fields import coerce_form_values, decode_base64, read_fields, require_ready
from .schemas import ErrorBody, EvaluateRequestBody, GenerateRequestBody
from .streaming import FragmentStreamResponse

router = APIRouter()

# Fields that carry a file: base64 in JSON, a file part (or base64) in multipart -> error for bad data.
_BINARY_FIELDS = {"image": InvalidImageError, "audio": InvalidAudioError, "speaker_wav": InvalidAudioError}

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


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _to_generation_request(fields: dict, files: dict[str, bytes], request_id: str) -> GenerationRequest:
    unknown_files = set(files) - set(_BINARY_FIELDS)
    if unknown_files:
        raise UserInputError(f"unexpected file parts: {', '.join(sorted(unknown_files))}", error="invalid_request")
    if isinstance(fields.get("backend_options"), str):  # multipart carries it as JSON text
        try:
            fields["backend_options"] = json.loads(fields["backend_options"])
        except json.JSONDecodeError as exc:
            raise UserInputError(f"backend_options is not a JSON object: {exc}", error="invalid_request") from exc
    try:  # multipart values are text: read as the JSON values they stand for, then validated alike
        body = GenerateRequestBody.model_validate(coerce_form_values(GenerateRequestBody, fields))
    except ValidationError as exc:
        raise UserInputError(_validation_message(exc), error="invalid_request") from exc
    binary: dict[str, bytes | None] = {}
    for name, error in _BINARY_FIELDS.items():
        if name in files:
            binary[name] = files[name] or None
        elif getattr(body, name) is not None:
            binary[name] = decode_base64(getattr(body, name), name, error)
        else:
            binary[name] = None
    if body.avatar_id is not None and binary["image"] is not None:
        raise UserInputError("send either image or avatar_id, not both", error="invalid_request")
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
    require_ready(request)
    svc = pipeline(request)
    state = request.app.state
    fields, files = await read_fields(request, svc.settings)
    job = _to_generation_request(fields, files, request.state.request_id)
    avatar_id = fields.get("avatar_id")
    del fields, files  # the job holds the decoded bytes; the base64 text can go now
    if avatar_id:
        job.portrait = (await run_in_threadpool(state.avatars.get, str(avatar_id))).portrait
    workdir = new_workdir()
    try:
        result = await run_cancellable(request, lambda token: svc.generate(job, workdir, token),
                                       timeout_s=svc.settings.request_timeout_s, lifecycle=state.lifecycle,
                                       metrics=state.metrics)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    for stage in ("tts", "animation", "encoding", "queue"):
        state.metrics.stage_seconds.labels(stage=stage).observe(result.seconds[stage])
    state.metrics.frames.labels(backend=result.backend).inc(result.frames)
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


@router.get("/health", summary="Device, loaded backends and why anything fell back",
            responses={503: {"model": ErrorBody, "description": "still loading"}})
async def health(request: Request) -> JSONResponse:
    service = request.app.state.service
    if service is None:
        require_ready(request)
    return JSONResponse(service.health())


@router.post(
    "/evaluate",
    summary="Quality metrics of an mp4: lip sync, A/V timing, identity, jitter, sharpness, SyncNet LSE-C/LSE-D",
    responses={422: {"model": ErrorBody}, 413: {"model": ErrorBody}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": EvaluateRequestBody.model_json_schema()},
        "multipart/form-data": {"schema": EvaluateRequestBody.model_json_schema()}}}},
)
async def evaluate(request: Request) -> JSONResponse:
    require_ready(request)
    evaluator = request.app.state.service.evaluation
    fields, files = await read_fields(request, evaluator.settings)
    unknown_files = set(files) - {"video", "portrait"}
    if unknown_files:
        raise UserInputError(f"unexpected file parts: {', '.join(sorted(unknown_files))}", error="invalid_request")
    try:
        body = EvaluateRequestBody.model_validate({**fields, **{name: "" for name in files}})
    except ValidationError as exc:
        raise UserInputError(_validation_message(exc), error="invalid_request") from exc
    video = files.get("video") or decode_base64(body.video, "video", InvalidVideoError)
    portrait = files.get("portrait")
    if portrait is None and body.portrait:
        portrait = decode_base64(body.portrait, "portrait", InvalidImageError)
    return JSONResponse(await run_in_threadpool(evaluator.evaluate, video, portrait))


@router.post(
    "/generate/stream",
    summary="Speak text with a talking portrait; streams a fragmented MP4 while it renders",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "fragmented MP4 (H.264 + AAC), sent as it renders"},
        400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody},
        503: {"model": ErrorBody}, 500: {"model": ErrorBody},
    },
    openapi_extra=_OPENAPI_BODY,
)
async def generate_stream(request: Request):
    """Bad input is a 4xx before any byte; after the headers, the stream ends early if the work
    fails, and the client going away (or a drain past its grace) stops the work."""
    require_ready(request)
    svc = pipeline(request)
    state = request.app.state
    fields, files = await read_fields(request, svc.settings)
    job = _to_generation_request(fields, files, request.state.request_id)
    avatar_id = fields.get("avatar_id")
    del fields, files
    if avatar_id:
        job.portrait = (await run_in_threadpool(state.avatars.get, str(avatar_id))).portrait
    token = CancelToken()
    with state.lifecycle.track(token):  # a drain past its grace cancels the eager part too
        clip, fragments = await run_in_threadpool(svc.stream, job, token)
    headers = {  # X-Request-ID comes from the service's middleware, as on every response
        "X-Avatar-Backend": svc.avatar.name,
        "X-TTS-Engine": svc.tts.name,
        "X-Lip-Refiner": clip.refiner,
        "X-Video-FPS": str(clip.head.fps),
        "Cache-Control": "no-store",
    }

    def finished() -> None:
        state.metrics.frames.labels(backend=svc.avatar.name).inc(clip.frames_rendered)
        if token.reason == "the client disconnected" and clip.result is None:
            state.metrics.cancelled.labels(reason="disconnect").inc()

    return FragmentStreamResponse(fragments, token, headers, tracking=state.lifecycle.track, on_end=finished)
