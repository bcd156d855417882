"""Every environment variable the service reads, typed, in one place."""
from __future__ import annotations

import os
import json
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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

    # HTTP. Loopback unless told otherwise: the container sets HOST=0.0.0.0 (Dockerfile).
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object a line, with the request id

    # Access. API_KEYS: comma-separated keys, or API_KEYS_FILE: one key a line ("#" comments); either
    # set -> every endpoint but the liveness/readiness probes needs `Authorization: Bearer <key>`.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_keys_file: Optional[Path] = None
    # Per key (per client address without keys): a bucket of RATE_LIMIT_BURST requests refilled at
    # RATE_LIMIT_PER_MINUTE; 0 turns the limit off. Probes and /metrics are not counted.
    rate_limit_per_minute: float = Field(0.0, ge=0)
    rate_limit_burst: int = Field(10, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)  # exact origins allowed to call from a browser

    # Deadlines. A request's work stops when its client hangs up, or at REQUEST_TIMEOUT_S (a 504).
    request_timeout_s: float = Field(300.0, gt=0)
    # SIGTERM: stop accepting, let requests in flight finish for this long, then cancel them (503).
    shutdown_grace_s: float = Field(20.0, ge=0)
    # Slow clients: the request head must arrive within header_timeout_s, the body within body_timeout_s.
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(60.0, gt=0)
    max_json_depth: int = Field(32, ge=2)  # JSON nested deeper is a 400
    # Request bodies held at once (a 30 MB base64 image costs ~3x that while parsed and decoded); a
    # body that would pass it waits for others to finish, unless it is alone (any one body may be read).
    max_buffered_body_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)

    # Registered avatars (POST /avatars): decoded portraits and per-backend preparation, on disk.
    data_dir: Path = PACKAGE_DIR.parent / "data"
    avatar_cache_size: int = Field(32, ge=1)  # prepared avatars kept in memory
    max_avatars: int = Field(1000, ge=1)

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
    # Whole-file clips rendered and encoded at once; the rest wait in line. An x264 encoder holds
    # about 75 MB at 1024 px, so this bounds memory. None = max(2, CPU cores // 4).
    max_concurrent_generations: Optional[int] = Field(None, ge=1)
    # Admission of streams (/generate/stream, /ws) and whole-file requests by the frames per second
    # they need: a stream is admitted only while every admitted one stays real time (else 503 with
    # Retry-After); a whole-file request waits for room. RENDER_CAPACITY_FPS is the starting estimate
    # of frames per second at full batches (None: the backend's figure for the device; meshwarp
    # measures one clip at start-up); the device's render scheduler corrects it from the batches it runs.
    render_capacity_fps: Optional[float] = Field(None, gt=0)
    render_headroom: float = Field(0.9, gt=0, le=1)  # share of the capacity streams may take
    busy_retry_after_s: float = Field(5.0, gt=0)  # the Retry-After of a refused stream
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1024)  # POST /evaluate
    max_evaluate_seconds: float = Field(120.0, gt=0)  # longest video /evaluate and `avatar score` accept

    # TTS memory: text reaches the engine in chunks of at most tts_chunk_chars, on tts_workers threads.
    tts_workers: int = Field(1, ge=1)  # each one speaking adds ~130 MB while it speaks
    tts_chunk_chars: int = Field(200, ge=20)

    # Encoding
    x264_preset: str = "veryfast"
    x264_crf: int = Field(20, ge=0, le=51)

    # Streaming: fragments of /generate/stream and /ws last this long (each starts on a keyframe).
    fragment_seconds: float = Field(0.5, ge=0.1, le=5.0)

    default_avatar: Path = PACKAGE_DIR / "assets" / "default_avatar.png"

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        """`a,b` (or a JSON list) from the environment -> ["a", "b"]; blanks dropped."""
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        return [item.strip() for item in value if item and item.strip()]

    def access_keys(self) -> list[str]:
        """API_KEYS plus the keys of API_KEYS_FILE (one a line, `#` starts a comment); empty = open."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                key = line.split("#", 1)[0].strip()
                if key:
                    keys.append(key)
        return keys


def env_file() -> Optional[Path]:
    """The .env file to read: AVATAR_ENV_FILE if set (empty: none), else the project root's."""
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named is None:
        return PROJECT_DIR / ".env"
    return Path(named) if named else None


def load_settings(**overrides) -> Settings:
    """Settings from the environment; a bad value raises a ValidationError naming the valid ones."""
    return Settings(**overrides)
