"""Request and response bodies of the HTTP API."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class GenerateRequestBody(BaseModel):
    """POST /generate, as JSON or as multipart form fields of the same names.

    In multipart, `image`, `audio` and `speaker_wav` may also be file parts holding the raw file."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field("", description="What the avatar says. Required unless `audio` is given. "
                      "Control characters other than tab and line breaks, and unpaired surrogates, are refused.")
    image: Optional[str] = Field(None, description="Portrait, base64 (PNG, JPEG, WebP...). Default: the bundled avatar.")
    avatar_id: Optional[str] = Field(None, description="A portrait registered with POST /avatars, instead of `image`.")
    audio: Optional[str] = Field(None, description="Speech as base64 audio (wav, mp3, ogg, flac); replaces TTS.")
    voice: Optional[str] = Field(None, description="A Piper voice name or a Coqui speaker; see /health.")
    speaker_wav: Optional[str] = Field(None, description="Coqui voice cloning: a short base64 wav of the voice.")
    fps: Optional[int] = Field(None, ge=1, description="Frames per second of the video (default 25; see MAX_FPS).")
    still: bool = Field(False, description="Keep the head still (no sway or nods).")
    expression_scale: float = Field(1.0, ge=0.0, le=3.0, description="Scales the speech-driven expression.")
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Knobs of the loaded backend (see /health: detail.avatar.options), e.g. SadTalker's "
                    '{"pose_style": 3, "size": 512}. In multipart, a JSON object as text. Unknown ones are refused.')
    # The seed's body carried SadTalker's knobs at the top level; still accepted, and applied where
    # the loaded backend takes them (ignored elsewhere, as the seed did).
    pose_style: Optional[int] = Field(None, description="Same as backend_options.pose_style (SadTalker).")
    size: Optional[int] = Field(None, description="Same as backend_options.size (SadTalker: 256 or 512).")
    lip_refine: Optional[bool] = Field(None, description="Run the lip refiner (Wav2Lip) after the backend; default: "
                                       "as LIP_REFINER says. true while the refiner is off is a 409 saying why.")


class EvaluateRequestBody(BaseModel):
    """POST /evaluate, as JSON (base64 fields) or multipart (file parts or base64 fields)."""

    model_config = ConfigDict(extra="forbid")

    video: str = Field(description="The mp4 to score, base64 (or a file part in multipart).")
    portrait: Optional[str] = Field(None, description="The portrait it was made from, base64 (or a file part): "
                                    "identity and sharpness are measured against it. Default: the clip's first face.")


class RegisterAvatarBody(BaseModel):
    """POST /avatars, as JSON or multipart (`image` as a file part or base64)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="Portrait, base64 (PNG, JPEG, WebP...); in multipart also a file part.")


class AvatarBody(BaseModel):
    avatar_id: str
    width: int = Field(description="pixels of the stored portrait")
    height: int
    created: float = Field(description="unix seconds")
    prepared_for: list[str] = Field(description="backends whose per-portrait preparation is stored")


class AvatarRegistered(AvatarBody):
    pass


class AvatarList(BaseModel):
    avatars: list[AvatarBody]


class ErrorBody(BaseModel):
    error: str
    detail: str
    request_id: str = Field(description="the request's id, also in the X-Request-ID header and the server log")
