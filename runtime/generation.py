"""The orchestrator: request -> TTS (speech) -> avatar backend (frames) -> encoder (mp4).

It knows neither HTTP nor any model's internals. One generation runs on the device at a time;
others wait in line (up to Settings.max_pending_requests, then ServiceBusyError).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .cancellation import Cancelled, CancelToken
from .config import Settings
from .errors import InvalidAudioError, InvalidTextError, ServiceBusyError, UserInputError
from .media.audio import Speech, decode_audio, frame_count, pad_to_frames
from .media.encode import encode_mp4
from .media.portrait import PortraitDecoder, load_portrait_file
from .models.base import AnimationOptions, AvatarBackend, BackendOptions, LipRefinerSelection
from .tts.base import TTSEngine
from .text_rules import check_text_characters
from .workdirs import new_workdir

log = logging.getLogger(__name__)


def new_request_id() -> str:
    """The id a request carries in logs, in its X-Request-ID header and in error bodies."""
    return uuid.uuid4().hex[:16]


@dataclass
class GenerationRequest:
    """What a client asked for, in the pipeline's terms; image and audio are still undecoded file
    bytes. The pipeline checks it (text, fps, backend options) and decodes it, once.

    backend_options: knobs for the loaded backend, validated by its own schema (unknown ones refused).
    seed_options: the seed body's top-level backend knobs (pose_style, size), applied where the
    loaded backend takes them and ignored elsewhere, as the seed did.
    """

    text: str = ""
    image: Optional[bytes] = None
    audio: Optional[bytes] = None
    speaker_wav: Optional[bytes] = None
    voice: Optional[str] = None
    fps: Optional[int] = None  # None: Settings.default_fps
    still: bool = False  # keep the head still (no sway or nods)
    expression_scale: float = 1.0  # multiplies the speech-driven expression
    backend_options: dict[str, Any] = field(default_factory=dict)
    seed_options: dict[str, Any] = field(default_factory=dict)
    lip_refine: Optional[bool] = None  # None: as LIP_REFINER says; True/False: this request's choice
    request_id: str = field(default_factory=new_request_id)
    portrait: Optional[np.ndarray] = None  # a registered avatar's decoded portrait, instead of image


@dataclass
class GenerationResult:
    path: Path
    request_id: str
    backend: str
    tts_engine: str
    frames: int
    duration: float
    width: int
    height: int
    seconds: dict[str, float]  # tts, animation, encoding, total
    lip_refiner: str = "none"  # the refiner that ran after the backend


class _TimedFrames:
    """Runs the backend's frame iterator in a thread, a few frames ahead of the encoder, so that
    animation and encoding overlap; counts the seconds the backend itself spends."""

    _DONE = object()

    def __init__(self, frames: Iterator[np.ndarray], token: CancelToken, ahead: int = 8):
        self._frames = frames
        self._token = token
        self.rendered = 0
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self.busy_seconds = 0.0
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                self._token.check()
                started = time.perf_counter()
                try:
                    frame = next(self._frames)
                except StopIteration:
                    break
                finally:
                    self.busy_seconds += time.perf_counter() - started
                self.rendered += 1
                self._queue.put(frame)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.error = exc
        finally:
            self._queue.put(self._DONE)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            self._token.check()
            if item is self._DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


class GenerationService:
    """Runs requests through a loaded TTS engine and avatar backend (interfaces, not factories)."""

    def __init__(self, settings: Settings, tts: TTSEngine, avatar: AvatarBackend,
                 lip_refiner: Optional[LipRefinerSelection] = None):
        self.settings = settings
        self.tts = tts
        self.avatar = avatar
        self.lip_refiner = lip_refiner or LipRefinerSelection()
        self._device_lock = threading.Lock()  # one generation on the device at a time
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._default_portrait: Optional[np.ndarray] = None
        self.portraits = PortraitDecoder(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                                         max_output_side=settings.max_output_side)
        self.completed = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        return self._pending

    def describe(self) -> dict:
        """The pipeline's part of /health: its queue and what it has done."""
        return {
            "queue": {"pending": self._pending, "limit": self.settings.max_pending_requests},
            "requests": {"completed": self.completed, "failed": self.failed},
        }

    def default_portrait(self) -> np.ndarray:
        if self._default_portrait is None:
            self._default_portrait = load_portrait_file(self.settings.default_avatar, self.settings.max_output_side)
        return self._default_portrait

    def _portrait(self, request: GenerationRequest) -> np.ndarray:
        if request.portrait is not None:
            return request.portrait
        if request.image is None:
            return self.default_portrait()
        return self.portraits.decode(request.image)

    def _check(self, request: GenerationRequest) -> tuple[int, BackendOptions]:
        """The cheap checks, before any decoding or queueing: text within the limit and something to
        say, fps within the limit, options the loaded backend takes. Returns the fps and those options."""
        limit = self.settings.max_text_chars
        if len(request.text) > limit:
            raise InvalidTextError(f"text is {len(request.text)} characters; the limit is {limit}")
        if request.audio is None and not request.text.strip():
            raise InvalidTextError("text is empty; send text to speak, or audio")
        if request.audio is None:
            check_text_characters(request.text)
            shortest = self.tts.shortest_seconds(request.text)
            if shortest > self.settings.max_audio_seconds:  # refused before any synthesis
                raise InvalidTextError(f"the text makes at least {shortest:.0f} s of speech; "
                                       f"the limit is {self.settings.max_audio_seconds:g} s")
        fps = request.fps or self.settings.default_fps
        if fps > self.settings.max_fps:
            raise UserInputError(f"fps is {fps}; the limit is {self.settings.max_fps}", error="invalid_request")
        self.lip_refiner.wants(request.lip_refine)  # asking for a refiner that is off is a 409, now
        return fps, self.avatar.parse_options(request.backend_options, request.seed_options)

    def _speech(self, request: GenerationRequest, token: CancelToken) -> Speech:
        s = self.settings
        if request.audio is not None:
            speech = decode_audio(request.audio, max_seconds=s.max_audio_seconds, max_bytes=s.max_audio_bytes)
            if np.max(np.abs(speech.samples)) < 1e-4:
                raise InvalidAudioError("the audio is silent")
            return speech
        text = request.text.strip()
        speaker = None
        if request.speaker_wav is not None:
            speaker = decode_audio(request.speaker_wav, max_seconds=30.0, max_bytes=s.max_audio_bytes)
        pieces, spoken = [], 0.0
        for piece in self.tts.synthesize_chunks(text, s.tts_chunk_chars, voice=request.voice, speaker_wav=speaker):
            token.check()
            spoken += piece.duration
            if spoken > s.max_audio_seconds:  # enforced while speaking, not after
                raise InvalidTextError(f"the text makes more than {s.max_audio_seconds:g} s of speech (the limit)")
            pieces.append(piece.samples)
        if not pieces:
            raise InvalidTextError("the text contains nothing that can be spoken")
        return Speech(np.concatenate(pieces), piece.sample_rate)

    def generate(self, request: GenerationRequest, workdir: Optional[Path] = None,
                 token: Optional[CancelToken] = None) -> GenerationResult:
        """Run the whole job (blocking). Raises UserInputError for bad input, ServiceBusyError when full,
        Cancelled soon after `token` is cancelled."""
        token = token or CancelToken()
        fps, backend_options = self._check(request)  # bad input is a 4xx even when the queue is full
        with self._pending_lock:
            if self._pending >= self.settings.max_pending_requests:
                raise ServiceBusyError(f"{self._pending} requests are already waiting; try again shortly")
            self._pending += 1
        try:
            result = self._generate(request, fps, backend_options, workdir, token)
            self.completed += 1
            return result
        except BaseException:
            self.failed += 1
            raise
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _generate(self, request: GenerationRequest, fps: int, backend_options: BackendOptions,
                  workdir: Optional[Path], token: CancelToken) -> GenerationResult:
        started = time.perf_counter()
        portrait = self._portrait(request)
        speech = self._speech(request, token)  # TTS runs outside the device lock: it uses the CPU
        tts_done = time.perf_counter()
        speech = pad_to_frames(speech, fps)
        frames_expected = frame_count(speech.duration, fps)  # the one count the backend and the encoder share
        workdir = workdir or new_workdir()
        path = workdir / f"{request.request_id}.mp4"
        with self._device_lock:
            waited = time.perf_counter()
            options = AnimationOptions(still=request.still, expression_scale=request.expression_scale)
            token.check()
            animated = self.avatar.animate(portrait, speech, fps, frames_expected, options, backend_options)
            # The refiner runs in the same producer thread, so its time counts as animation.
            frames = _TimedFrames(self.lip_refiner.apply(animated, speech, fps, request.lip_refine), token)
            try:
                encoded = encode_mp4(
                    frames, speech, fps, path,
                    preset=self.settings.x264_preset, crf=self.settings.x264_crf, expected_frames=frames_expected,
                )
            except Cancelled:
                log.info("request %s cancelled after %d frames (%s; stopped %.3f s after the cancel)",
                         request.request_id, frames.rendered, token.reason,
                         time.monotonic() - (token.cancelled_at or time.monotonic()))
                raise
            finally:
                frames.close()
        finished = time.perf_counter()
        pipeline = finished - waited
        seconds = {
            "tts": tts_done - started,
            "animation": frames.busy_seconds,
            "encoding": max(0.0, pipeline - frames.busy_seconds),
            "queue": waited - tts_done,
            "total": finished - started,
        }
        log.info(
            "request %s: %s, %d frames (%.2f s of video) in %.2f s (tts %.2f, animation %.2f, encoding %.2f)",
            request.request_id, self.avatar.name, encoded.frames, encoded.duration, seconds["total"],
            seconds["tts"], seconds["animation"], seconds["encoding"],
        )
        return GenerationResult(
            path=path,
            request_id=request.request_id,
            backend=self.avatar.name,
            tts_engine=self.tts.name,
            lip_refiner=self.lip_refiner.requested if self.lip_refiner.wants(request.lip_refine) else "none",
            frames=encoded.frames,
            duration=encoded.duration,
            width=encoded.width,
            height=encoded.height,
            seconds=seconds,
        )
