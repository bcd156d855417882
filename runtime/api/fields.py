"""Reading a request's fields the same way for every endpoint: JSON (nesting bounded) or multipart
(file parts as bytes, text parts coerced by the schema as JSON values would be), base64 decoding."""
from __future__ import annotations

import base64
import binascii
import json
import re
import types
import typing

from fastapi import Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from ..config import Settings
from ..errors import UserInputError
from .guards import BodyTooLargeError, max_body_bytes, parse_json_object

_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)


class NotReadyError(UserInputError):
    error = "not_ready"
    status_code = 503


def require_ready(request: Request) -> None:
    """503 while the models load or the server drains: probes tell orchestrators, this tells clients."""
    lifecycle = request.app.state.lifecycle
    if not lifecycle.accepting:
        raise NotReadyError("the server is shutting down" if lifecycle.draining else
                            "the models are still loading; retry shortly (GET /health/ready says when)")


async def read_fields(request: Request, settings: Settings) -> tuple[dict, dict[str, bytes]]:
    """(form or JSON fields, raw bytes of file parts). Multipart text values stay strings: the schema
    coerces them (pydantic's string mode) exactly as it would the JSON values."""
    limit = max_body_bytes(settings, request.url.path)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=4, max_fields=32, max_part_size=limit)
        except UserInputError:  # the body guard's 413/408, raised while the form was read
            raise
        except Exception as exc:
            raise UserInputError(f"the multipart form could not be parsed ({type(exc).__name__})",
                                 error="invalid_form", status_code=400) from None
        fields: dict = {}
        files: dict[str, bytes] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[name] = await value.read()
            else:
                fields[name] = value
        return fields, files
    body = bytearray()  # read here, not with request.body(), which would keep a copy for the request's life
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # the guard counts too; this covers apps mounted without it
            raise BodyTooLargeError(f"request body is over the limit of {limit} bytes")
    if not body:
        raise UserInputError("the request has no body; send JSON or multipart", error="invalid_json", status_code=400)
    return parse_json_object(body, settings.max_json_depth), {}


def coerce_form_values(model: type[BaseModel], fields: dict) -> dict:
    """Multipart text parts as the JSON values they stand for: a part of a field that is not a string
    ("512" for an int or a Literal[256, 512], "true", '{"a": 1}') is read as JSON when it parses, so
    the schema validates it exactly as it would in a JSON body; string fields stay verbatim."""
    coerced = {}
    for name, value in fields.items():
        field = model.model_fields.get(name)
        if field is not None and isinstance(value, str) and not _is_text(field.annotation):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # left as text: validation names the field and what it expects
        coerced[name] = value
    return coerced


def _is_text(annotation) -> bool:
    return annotation is str or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                 and str in typing.get_args(annotation))


def decode_base64(value: str, field: str, error: type[UserInputError]) -> bytes:
    """Strict base64 (a data: URL prefix is allowed) -> bytes; the body limit already bounds its size."""
    text = _DATA_URL.sub("", value.strip(), count=1)
    text = "".join(text.split())  # line breaks are common in base64 tools' output
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{field} is not valid base64") from None
    if not data:
        raise error(f"{field} is empty")
    return data
