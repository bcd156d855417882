"""Registered avatars: POST /avatars, GET /avatars, GET/DELETE /avatars/{avatar_id}."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..avatars import AvatarStore
from ..errors import InvalidImageError, UserInputError
from .schemas import AvatarBody, AvatarList, AvatarRegistered, ErrorBody, RegisterAvatarBody
from .fields import decode_base64, read_fields, require_ready

router = APIRouter(tags=["avatars"])

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 415, 422, 429, 503)}


def store(request: Request) -> AvatarStore:
    require_ready(request)  # the store exists once the backend it prepares for is loaded
    return request.app.state.avatars


@router.post(
    "/avatars", status_code=201, summary="Register a portrait once; use its avatar_id wherever `image` goes",
    responses={200: {"model": AvatarRegistered, "description": "already registered"},
               201: {"model": AvatarRegistered}, **_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": RegisterAvatarBody.model_json_schema()},
        "multipart/form-data": {"schema": RegisterAvatarBody.model_json_schema()}}}},
)
async def register(request: Request) -> JSONResponse:
    avatars = store(request)
    settings = request.app.state.settings
    fields, files = await read_fields(request, settings)
    unknown = (set(fields) | set(files)) - {"image"}
    if unknown:
        raise UserInputError(f"unexpected fields: {', '.join(sorted(unknown))}; send `image` only",
                             error="invalid_request")
    if "image" in files:
        image = files["image"]
    elif isinstance(fields.get("image"), str):
        image = decode_base64(fields["image"], "image", InvalidImageError)
    else:
        raise InvalidImageError("send the portrait as `image` (base64 in JSON, or a file part)")
    info, created = await run_in_threadpool(avatars.register, image)
    return JSONResponse(AvatarRegistered(**info.as_dict()).model_dump(), status_code=201 if created else 200)


@router.get("/avatars", summary="Registered avatars", responses={200: {"model": AvatarList}, **_ERRORS})
async def list_avatars(request: Request) -> JSONResponse:
    infos = await run_in_threadpool(store(request).list)
    return JSONResponse(AvatarList(avatars=[AvatarBody(**info.as_dict()) for info in infos]).model_dump())


@router.get("/avatars/{avatar_id}", summary="One registered avatar",
            responses={200: {"model": AvatarBody}, **_ERRORS})
async def get_avatar(avatar_id: str, request: Request) -> JSONResponse:
    avatar = await run_in_threadpool(store(request).get, avatar_id)
    return JSONResponse(AvatarBody(**avatar.info.as_dict()).model_dump())


@router.delete("/avatars/{avatar_id}", status_code=204, summary="Forget a registered avatar",
               responses={**_ERRORS})
async def delete_avatar(avatar_id: str, request: Request):
    await run_in_threadpool(store(request).delete, avatar_id)
    return Response(status_code=204)
