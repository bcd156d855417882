"""Request and response bodies of the HTTP API."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class GenerateRequestBody(BaseModel):
    """POST /generate, as JSON or as multipart form fields of the same names.

    In multipart, `image`, `audio` and `speaker_wav` may also be file parts holding the raw file."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field("", description="What the avatar says. Required unless `audio` is given.")
    image: Optional[str] = Field(None, description="Portrait, base64 (PNG, JPEG, WebP...). Default: the bundled avatar.")
    audio: Optional[str] = Field(None, description="Speech as base64 audio (wav, mp3, ogg, flac); replaces TTS.")
    voice: Optional[str] = Field(None, description="A Piper voice name or a Coqui speaker; see /health.")
    speaker_wav: Optional[str] = Field(None, description="Coqui voice cloning: a short base64 wav of the voice.")
    fps: Optional[int] = Field(None, ge=1, le=120, description="Frames per second of the video (default 25).")
    still: bool = Field(False, description="Keep the head still (no sway or nods).")
    expression_scale: float = Field(1.0, ge=0.0, le=3.0, description="Scales the speech-driven expression.")
    pose_style: int = Field(0, ge=0, le=45, description="SadTalker pose style.")
    size: Optional[Literal[256, 512]] = Field(None, description="SadTalker render size.")


class ErrorBody(BaseModel):
    error: str
    detail: str
    request_id: str = Field(description="the request's id, also in the X-Request-ID header and the server log")
