"""Every environment variable the service reads, typed, in one place."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
# Names the .env file Settings reads (default: PROJECT_DIR/.env); empty = none. Tests set it empty
# so that a developer's own .env never changes what they test.
ENV_FILE_VARIABLE = "AVATAR_ENV_FILE"

AvatarBackendName = Literal["auto", "liveportrait", "sadtalker", "meshwarp"]
TTSEngineName = Literal["auto", "piper", "coqui"]
DeviceName = Literal["cuda", "mps", "cpu"]
LipRefinerName = Literal["none", "wav2lip"]


class Settings(BaseSettings):
    """Read from the environment, then from `.env` in the project root (not the working directory,
    so the service reads the same file wherever it is started); names are case-insensitive."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    def __init__(self, **values):
        values.setdefault("_env_file", env_file())
        super().__init__(**values)

    # Backends and device
    avatar_backend: AvatarBackendName = "auto"
    tts_engine: TTSEngineName = "auto"
    use_cuda: bool = True  # false forbids cuda even when one is present
    device: Optional[DeviceName] = None  # forces a device; fails at startup if it is not available
    pytorch_enable_mps_fallback: bool = True
    models_dir: Path = PACKAGE_DIR / "pretrained_weights"

    # LivePortrait: torch.compile of the per-frame networks (2x the frames/s on an H200; ~38 s at a first
    # start, ~17 s on a cached restart; needs a C compiler and Python headers for Triton).
    # None = on for cuda where it can build, else eager with a warning; true = required; false = eager.
    liveportrait_compile: Optional[bool] = None
    liveportrait_compile_cache_dir: Optional[Path] = None  # default MODELS_DIR/.cache/inductor

    # SadTalker: torch.compile of the face renderer (about 1.6x on an H200, ~30 s at start-up; falls back
    # to eager kernels if compiling fails). None = the engine's default (on for cuda only).
    sadtalker_compile: Optional[bool] = None

    # Lip refiner run on every backend's frames (per request: `lip_refine`). wav2lip needs torch and
    # MODELS_DIR/wav2lip/wav2lip_gan.pth or wav2lip.pth; without them the service starts with it off.
    lip_refiner: LipRefinerName = "none"

    # TTS voices
    piper_voice: str = "en_US-joe-medium"
    piper_voices_dir: Optional[Path] = None  # extra Piper voices: <name>.onnx + <name>.onnx.json
    # A text in a language no installed voice speaks is a 422 unless this is true (then the
    # default voice reads it, with its own language's sounds).
    speak_unsupported_languages: bool = False
    coqui_model: Optional[str] = None
    coqui_model_path: Optional[Path] = None
    coqui_config_path: Optional[Path] = None

    # HTTP
    host: str = "0.0.0.0"
    port: int = Field(8001, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Request limits: every one of them is a 4xx when exceeded
    max_text_chars: int = Field(2000, ge=1)
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=10_000)  # checked from the header, before decoding
    max_output_side: int = Field(1024, ge=64)  # larger portraits are scaled down to this
    min_face_side: int = Field(48, ge=16)  # smaller faces are enlarged to this (meshwarp) or refused
    smallest_face_side: int = Field(24, ge=8)  # meshwarp refuses faces smaller than this, enlarges the rest
    max_audio_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_audio_seconds: float = Field(120.0, gt=0)
    default_fps: int = Field(25, ge=1, le=60)
    max_fps: int = Field(60, ge=1, le=120)
    max_pending_requests: int = Field(32, ge=1)  # beyond this, /generate answers 503
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1024)  # POST /evaluate
    max_evaluate_seconds: float = Field(120.0, gt=0)  # longest video /evaluate and `avatar score` accept

    # Encoding
    x264_preset: str = "veryfast"
    x264_crf: int = Field(20, ge=0, le=51)

    default_avatar: Path = PACKAGE_DIR / "assets" / "default_avatar.png"


def env_file() -> Optional[Path]:
    """The .env file to read: AVATAR_ENV_FILE if set (empty: none), else the project root's."""
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named is None:
        return PROJECT_DIR / ".env"
    return Path(named) if named else None


def load_settings(**overrides) -> Settings:
    """Settings from the environment; a bad value raises a ValidationError naming the valid ones."""
    return Settings(**overrides)
