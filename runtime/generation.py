"""The orchestrator: request -> TTS (speech) -> avatar backend (frames) -> encoder (mp4 bytes).

It knows neither HTTP nor any model's internals. Every request runs on the streaming pipeline
(runtime.pipeline): a regular mp4 for /generate, fMP4 fragments for /generate/stream, a live
session for /ws. A backend with a batch renderer (LivePortrait, SadTalker) gets one render
scheduler for the device, whose batches mix frames of every request; the others (meshwarp) render
each request in its own thread. Either way each request is admitted by the frames per second it
needs (runtime.scheduling.Admission): streams are refused when full (SchedulerBusyError), whole-file
requests wait. At most Settings.max_pending_requests are in flight, beyond that ServiceBusyError.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .cancellation import CancelToken, Cancelled
from .config import Settings
from .conversation import SAMPLE_RATE as CONVERSATION_SAMPLE_RATE
from .conversation import Conversation
from .errors import InvalidAudioError, InvalidTextError, ServiceBusyError, UnknownVoiceError, UserInputError
from .media.audio import Speech, decode_audio
from .media.encode import Mp4Encoder
from .media.portrait import PortraitDecoder, load_portrait_file
from .media.speech_motion import SpeechMotion
from .models.base import (AnimationOptions, AvatarBackend, AvatarSession, BackendOptions, BatchedSession,
                          LipRefinerSelection)
from .pipeline import (Clip, DirectFrames, ScheduledFrames, SpeechFeed, StageSeconds, TalkingHead, UnitFrames,
                       Worker, synthesize_chunks)
from .scheduling import Admission, RenderScheduler, Stream
from .scheduling.parallel import ParallelRendering
from .text_rules import check_text_characters
from .tts.base import TTSEngine
from .workdirs import new_workdir

log = logging.getLogger(__name__)

Progress = Callable[[int, Optional[int]], None]  # (frames encoded, frames of the speech known so far)


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
    seconds: dict[str, float]  # tts, animation, encoding, queue, total
    lip_refiner: str = "none"  # the refiner that ran after the backend


class RenderShare:
    """A request's admitted share of rendering, held until its clip or session ends: a stream of the
    device's render scheduler, or a ticket of the parallel admission."""

    def __init__(self, *, stream: Optional[Stream] = None, parallel: Optional[ParallelRendering] = None,
                 ticket: Optional[int] = None):
        self.stream, self.parallel, self.ticket = stream, parallel, ticket

    def frames(self, session: AvatarSession, token: CancelToken, fps: int) -> UnitFrames:
        if self.stream is not None:
            if not isinstance(session, BatchedSession):
                raise TypeError(f"{type(session).__name__} plans no payloads for the render scheduler")
            return ScheduledFrames(session, self.stream, fps)
        return DirectFrames(session, token, fps, self.parallel)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        else:
            self.parallel.admission.release(self.ticket)


class GenerationService:
    """Runs requests through a loaded TTS engine and avatar backend (interfaces, not factories)."""

    def __init__(self, settings: Settings, tts: TTSEngine, avatar: AvatarBackend,
                 lip_refiner: Optional[LipRefinerSelection] = None):
        self.settings = settings
        self.tts = tts
        self.avatar = avatar
        self.lip_refiner = lip_refiner or LipRefinerSelection()
        self.scheduler: Optional[RenderScheduler] = None
        self.parallel: Optional[ParallelRendering] = None
        renderer = avatar.batch_renderer
        if renderer is not None:
            self.scheduler = RenderScheduler(
                renderer, batch_size=renderer.batch_size,
                initial_capacity_fps=settings.render_capacity_fps or renderer.estimated_frames_per_second(),
                headroom=settings.render_headroom, retry_after_s=settings.busy_retry_after_s).start()
        else:
            # Until measure_capacity() runs, a placeholder: a few 25 fps streams.
            self.parallel = ParallelRendering(Admission(settings.render_capacity_fps or 100.0,
                                                        headroom=settings.render_headroom,
                                                        retry_after_s=settings.busy_retry_after_s))
        self._pending = 0
        self._pending_lock = threading.Lock()
        slots = settings.max_concurrent_generations or max(2, (os.cpu_count() or 2) // 4)
        self._generation_slots = threading.BoundedSemaphore(slots)
        self._default_portrait: Optional[np.ndarray] = None
        self.portraits = PortraitDecoder(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                                         max_output_side=settings.max_output_side)
        self.completed = 0
        self.failed = 0
        self.cancelled = 0

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def admission(self) -> Admission:
        return self.scheduler.admission if self.scheduler is not None else self.parallel.admission

    def describe(self) -> dict:
        """The pipeline's part of /health: its queue, rendering capacity and what it has done."""
        rendering = {"mode": "render scheduler" if self.scheduler is not None else "parallel",
                     **self.admission.describe()}
        if self.scheduler is not None:
            rendering["batch_size"] = self.scheduler.batch_size
        return {
            "queue": {"pending": self._pending, "limit": self.settings.max_pending_requests},
            "rendering": rendering,
            "requests": {"completed": self.completed, "failed": self.failed, "cancelled": self.cancelled},
        }

    def measure_capacity(self) -> None:
        """Parallel rendering (meshwarp): the capacity is what as many clips as the CPU has cores,
        rendered and encoded at once from the default portrait, deliver per second together (the
        parallel analogue of a full batch; the encoder is the bound). RENDER_CAPACITY_FPS, when set,
        is taken as it is. The render scheduler measures its own from the batches it runs."""
        if self.parallel is None or self.settings.render_capacity_fps is not None:
            return
        clips = max(1, os.cpu_count() or 1)
        workers = [Worker(self._one_silent_clip, f"capacity-{index}") for index in range(clips)]
        started = time.perf_counter()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - started
        failed = next((worker.error for worker in workers if worker.error is not None), None)
        if failed is not None:  # the requests will fail the same way, each with its own 500 and log
            log.warning("Parallel rendering: measuring the capacity failed (%s: %s); admission uses the estimate",
                        type(failed).__name__, failed)
            return
        measured = sum(worker.result for worker in workers) / seconds
        self.parallel.admission.measured(measured)
        log.info("Parallel rendering: %d clips at once render and encode %.0f frames/s here", clips, measured)

    def _one_silent_clip(self) -> int:
        """Render and encode 2 s of the default portrait at rest, as a request would; the frame count."""
        fps, rate = self.settings.default_fps, CONVERSATION_SAMPLE_RATE
        session = self.avatar.start_session(self.default_portrait(), fps)
        motion = SpeechMotion(rate, fps)
        speech = Speech(np.zeros(2 * rate, np.float32), rate)
        encoder = Mp4Encoder(fps, fragment_frames=fps, preset=self.settings.x264_preset, crf=self.settings.x264_crf)
        encoder.add_speech(speech)
        frames = 0
        for piece in (motion.push(speech.samples), motion.finish()):
            piece_speech = Speech(np.zeros(round(piece.n_frames * rate / fps), np.float32), rate)
            for frame in session.render(piece, piece_speech) if piece.n_frames else ():
                encoder.add_frame(frame)
                encoder.take()
                frames += 1
        encoder.close()
        return frames

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()

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

    def _check(self, request: GenerationRequest, needs_text: bool = True) -> tuple[int, BackendOptions]:
        """The cheap checks, before any decoding or queueing: text within the limit and something to
        say, fps within the limit, options the loaded backend takes. Returns the fps and those options."""
        limit = self.settings.max_text_chars
        if len(request.text) > limit:
            raise InvalidTextError(f"text is {len(request.text)} characters; the limit is {limit}")
        if needs_text and request.audio is None and not request.text.strip():
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

    def _speech(self, request: GenerationRequest, token: CancelToken) -> Iterator[Speech]:
        """The request's speech chunk by chunk: its audio as one chunk, or TTS of bounded text chunks."""
        s = self.settings
        if request.audio is not None:
            speech = decode_audio(request.audio, max_seconds=s.max_audio_seconds, max_bytes=s.max_audio_bytes)
            if np.max(np.abs(speech.samples)) < 1e-4:
                raise InvalidAudioError("the audio is silent")
            return iter([speech])
        speaker = None
        if request.speaker_wav is not None:
            speaker = decode_audio(request.speaker_wav, max_seconds=30.0, max_bytes=s.max_audio_bytes)
        return synthesize_chunks(self.tts, request.text, voice=request.voice, speaker_wav=speaker,
                                 max_seconds=s.max_audio_seconds, token=token, max_chars=s.tts_chunk_chars)

    def _admit(self) -> None:
        with self._pending_lock:
            if self._pending >= self.settings.max_pending_requests:
                raise ServiceBusyError(f"{self._pending} requests are already waiting; try again shortly")
            self._pending += 1

    def _release(self, outcome: str) -> None:
        with self._pending_lock:
            self._pending -= 1
            setattr(self, outcome, getattr(self, outcome) + 1)

    @contextlib.contextmanager
    def _generation_slot(self, token: CancelToken) -> Iterator[None]:
        """Wait (cancellably) for one of the whole-file generation slots and hold it."""
        while not self._generation_slots.acquire(timeout=0.1):
            token.check()
        try:
            yield
        finally:
            self._generation_slots.release()

    def _session(self, request: GenerationRequest, fps: int, backend_options: BackendOptions) -> AvatarSession:
        portrait = self._portrait(request)
        options = AnimationOptions(still=request.still, expression_scale=request.expression_scale)
        return self.avatar.start_session(portrait, fps, options, backend_options)  # NoFaceError now

    def _render_share(self, fps: int, token: CancelToken, wait_s: float) -> RenderShare:
        """Admission for a request needing `fps` frames per second: SchedulerBusyError (a 503 with
        Retry-After) when there is no room within wait_s seconds."""
        if self.scheduler is not None:
            return RenderShare(stream=self.scheduler.open_stream(fps, wait_s=wait_s, cancel_token=token))
        ticket = self.parallel.admission.admit(fps, wait_s=wait_s, cancel_token=token)
        return RenderShare(parallel=self.parallel, ticket=ticket)

    def _head(self, session: AvatarSession, share: RenderShare, sample_rate: int, fps: int, token: CancelToken,
              seconds: StageSeconds, lip_refine: Optional[bool]) -> TalkingHead:
        """The session that renders through its share, with the lip refiner after it when the request wants it."""
        refine = self.lip_refiner.refiner.session(fps) if self.lip_refiner.wants(lip_refine) else None
        return TalkingHead(session, sample_rate, fps, share.frames(session, token, fps), token, seconds, refine,
                           on_close=share.close)

    def _open_clip(self, request: GenerationRequest, fps: int, backend_options: BackendOptions,
                   token: CancelToken, share: RenderShare, seconds: StageSeconds,
                   on_progress: Optional[Progress] = None) -> Clip:
        """Everything that can fail because of the request, done before the first byte: the portrait
        decoded and its face prepared, the first speech chunk synthesized. The rest runs when the
        returned Clip is consumed (the clip gives `share` back when it ends)."""
        # TTS runs from now on, a chunk or two ahead of rendering: the first chunk while the portrait
        # is prepared (both take a while for a new portrait), the next ones while the first frames
        # render; a bad voice or nothing to say is a 4xx before any byte is sent.
        speech = SpeechFeed(self._speech(request, token), token, f"tts-{request.request_id}")
        try:
            session = self._session(request, fps, backend_options)
            head = self._head(session, share, speech.first().sample_rate, fps, token, seconds, request.lip_refine)
        except BaseException:
            speech.stop()
            raise
        clip = Clip(request.request_id, speech, head, token, seconds, on_progress)
        clip.refiner = self.lip_refiner.requested if head.refine is not None else "none"
        return clip

    def generate(self, request: GenerationRequest, workdir: Optional[Path] = None,
                 token: Optional[CancelToken] = None, on_progress: Optional[Progress] = None) -> GenerationResult:
        """Run the whole job into a regular mp4 (blocking). Raises UserInputError for bad input,
        ServiceBusyError when full, Cancelled when the token is cancelled."""
        fps, backend_options = self._check(request)  # bad input is a 4xx even when the queue is full
        self._admit()
        outcome = "failed"
        token = token or CancelToken()
        seconds = StageSeconds()
        try:
            seconds.render_enters("queue")  # waiting for an encoder slot and for rendering capacity
            with self._generation_slot(token):
                share = self._render_share(fps, token, wait_s=self.settings.request_timeout_s)
                seconds.render_enters("tts")
                try:
                    clip = self._open_clip(request, fps, backend_options, token, share, seconds, on_progress)
                except BaseException:
                    share.close()
                    raise
                workdir = workdir or new_workdir()
                path = workdir / f"{request.request_id}.mp4"
                encoded = clip.write(path, preset=self.settings.x264_preset, crf=self.settings.x264_crf)
            outcome = "completed"
        except Cancelled:
            outcome = "cancelled"
            raise
        finally:
            self._release(outcome)
        seconds = clip.seconds.as_dict()
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
            lip_refiner=clip.refiner,
            frames=encoded.frames,
            duration=encoded.duration,
            width=encoded.width,
            height=encoded.height,
            seconds=seconds,
        )

    def stream(self, request: GenerationRequest, token: CancelToken) -> tuple[Clip, Iterator[bytes]]:
        """A fragmented MP4 of the request, fragment by fragment (blocking iterator). The eager
        checks run now and raise UserInputError / ServiceBusyError; the bytes come as consumed."""
        fps, backend_options = self._check(request)
        self._admit()
        try:
            share = self._render_share(fps, token, wait_s=0.0)  # a live stream is refused rather than kept waiting
            try:
                clip = self._open_clip(request, fps, backend_options, token, share, StageSeconds())
            except BaseException:
                share.close()
                raise
        except BaseException:
            self._release("failed")
            raise
        frames = max(1, round(self.settings.fragment_seconds * fps))
        fragments = clip.fragments(frames, preset=self.settings.x264_preset, crf=self.settings.x264_crf)
        return clip, self._counted(fragments)

    def _counted(self, fragments: Iterator[bytes]) -> Iterator[bytes]:
        outcome = "failed"
        try:
            yield from fragments
            outcome = "completed"
        except Cancelled:
            outcome = "cancelled"
        except GeneratorExit:
            outcome = "cancelled"
            raise
        finally:
            self._release(outcome)

    def open_conversation(self, request: GenerationRequest, token: CancelToken,
                          emit: Callable[[object], None]) -> Conversation:
        """A live session on the request's portrait and voice (its text is ignored; say() adds
        utterances). The portrait is prepared now (NoFaceError); run() it in a thread of its own."""
        fps, backend_options = self._check(request, needs_text=False)
        if request.voice is not None and request.voice not in self.tts.voices():
            raise UnknownVoiceError(f"unknown voice {request.voice!r}; available: {', '.join(self.tts.voices())}")
        share = self._render_share(fps, token, wait_s=0.0)
        try:
            session = self._session(request, fps, backend_options)
            head = self._head(session, share, CONVERSATION_SAMPLE_RATE, fps, token, StageSeconds(), request.lip_refine)
        except BaseException:
            share.close()
            raise
        s = self.settings
        encoder = Mp4Encoder(fps, fragment_frames=max(1, round(s.fragment_seconds * fps)), preset=s.x264_preset,
                             crf=s.x264_crf)
        return Conversation(request.request_id, self.tts, head, encoder, emit, token, voice=request.voice,
                            max_seconds=s.max_audio_seconds, max_chars=s.tts_chunk_chars,
                            max_text_chars=s.max_text_chars)
