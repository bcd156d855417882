"""The streaming pipeline: speech chunks -> incremental motion -> rendered frames -> mp4 bytes.

Stages run concurrently and hand over through small bounded queues, so memory is bounded by a
text chunk and a few frames whatever the text's length:

  TTS thread      text chunk by chunk (tts.chunking.split_text) -> Speech
  render thread   SpeechMotion.push -> a unit's frames: planned by a BatchedSession and rendered by the
                  device's render scheduler in batches shared with other streams (ScheduledFrames), or
                  rendered by the session in this thread (DirectFrames: meshwarp on the CPU)
  caller          Mp4Encoder: a regular mp4 file, or fMP4 fragments yielded as they are cut

Every stage checks the request's CancelToken between chunks and frames; a cancelled pipeline
stops within a frame or a render unit and logs "request X cancelled after N frames".
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .cancellation import CancelToken, Cancelled, wait_cancellably
from .errors import InvalidTextError
from .media.audio import Speech
from .media.encode import EncodeResult, Mp4Encoder
from .media.speech_motion import FaceMotion, SpeechMotion
from .models.base import AvatarSession, BatchedSession, RefinerSession
from .scheduling import Stream
from .scheduling.parallel import ParallelRendering
from .tts.base import TTSEngine
from .tts.chunking import ramped_chunks

log = logging.getLogger(__name__)

_END = object()
# How long after its first frame is planned a stream's frame 0 is due (a player's start-up buffer);
# frame i is due i / fps after that.
PLAYBACK_DELAY_S = 0.5


class StageSeconds:
    """Where one request's wall-clock time went, stage by stage; the stages sum to the total.

    The stages overlap (the next chunk's TTS while this one renders, rendering while encoding), so
    time is charged to what the output was waiting on: the encoder's own work is `encoding`; while
    it waits for frames, whatever the render thread is doing then: waiting for speech (`tts`), for
    the device (`queue`) or rendering (`animation`)."""

    _RENDER_STAGES = ("tts", "queue", "animation")

    def __init__(self):
        self.started = time.perf_counter()
        self.finished: Optional[float] = None
        self.charged = {"tts": 0.0, "queue": 0.0, "animation": 0.0, "encoding": 0.0}
        self._lock = threading.Lock()
        self._render_stage, self._render_since = "tts", self.started  # the first speech is awaited
        self._render_totals = dict.fromkeys(self._RENDER_STAGES, 0.0)
        self._mark, self._at_mark = self.started, self._render_snapshot()

    def render_enters(self, stage: str) -> None:
        """The render thread now waits for speech ("tts"), the device ("queue"), renders
        ("animation"), or waits for the encoder ("output", charged to nothing)."""
        with self._lock:
            now = time.perf_counter()
            if self._render_stage in self._render_totals:
                self._render_totals[self._render_stage] += now - self._render_since
            self._render_stage, self._render_since = stage, now

    def _render_snapshot(self) -> dict[str, float]:
        with self._lock:
            totals = dict(self._render_totals)
            if self._render_stage in totals:
                totals[self._render_stage] += time.perf_counter() - self._render_since
            return totals

    def charge_wait(self) -> None:
        """The encoder waited since the last charge: split it as the render thread spent it."""
        now, snapshot = time.perf_counter(), self._render_snapshot()
        spent = {stage: max(0.0, snapshot[stage] - self._at_mark[stage]) for stage in self._RENDER_STAGES}
        total = sum(spent.values())
        for stage in self._RENDER_STAGES:
            share = spent[stage] / total if total > 0 else float(stage == "animation")
            self.charged[stage] += (now - self._mark) * share
        self._mark, self._at_mark = now, snapshot

    def charge_encoding(self) -> None:
        """The encoder worked since the last charge."""
        now = time.perf_counter()
        self.charged["encoding"] += now - self._mark
        self._mark, self._at_mark = now, self._render_snapshot()

    def finish(self) -> None:
        self.finished = time.perf_counter()

    def as_dict(self) -> dict[str, float]:
        return {**self.charged, "total": (self.finished or time.perf_counter()) - self.started}


class Handoff:
    """A bounded queue between two threads whose put and get give up when a token is cancelled."""

    def __init__(self, size: int, *tokens: CancelToken):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._tokens = tokens

    def put(self, item) -> None:
        put_cancellably(self._queue, item, *self._tokens)

    def get(self):
        return get_cancellably(self._queue, *self._tokens)


def get_cancellably(source: queue.Queue, *tokens: CancelToken):
    """The next item of a queue, giving up (Cancelled) when a token is cancelled."""
    got: list = []

    def take(poll_s: float) -> bool:
        try:
            got.append(source.get(timeout=poll_s))
            return True
        except queue.Empty:
            return False

    wait_cancellably(take, *tokens)
    return got[0]


def put_cancellably(into: queue.Queue, item, *tokens: CancelToken) -> None:
    """Put into a bounded queue, giving up (Cancelled) when a token is cancelled."""
    def put(poll_s: float) -> bool:
        try:
            into.put(item, timeout=poll_s)
            return True
        except queue.Full:
            return False

    wait_cancellably(put, *tokens)


def synthesize_chunks(tts: TTSEngine, text: str, *, voice: Optional[str], speaker_wav: Optional[Speech],
                      max_seconds: float, token: CancelToken, max_chars: int) -> Iterator[Speech]:
    """Speech for each bounded chunk of the text (tts.chunking.ramped_chunks: the first ones small, so
    the stream starts soon and TTS stays ahead of playback; TTSEngine.synthesize_chunks), in order, checking
    the token between chunks. A text with nothing to speak raises InvalidTextError, and speech
    beyond max_seconds raises it as soon as it is reached."""
    total = 0.0
    spoken = False
    voice = voice or tts.voice_for(text)  # one voice for the whole text, whatever each chunk looks like
    for piece in ramped_chunks(text, max_chars):
        for speech in tts.synthesize_chunks(piece, max_chars, voice=voice, speaker_wav=speaker_wav):
            token.check()
            if len(speech.samples) == 0:
                continue
            total += speech.duration
            if total > max_seconds:
                raise InvalidTextError(f"the text makes more than {max_seconds:g} s of speech (the limit)")
            spoken = True
            yield speech
    if not spoken:
        raise InvalidTextError("the text contains nothing that can be spoken")


UnitFrames = Callable[[FaceMotion, Speech], list[np.ndarray]]  # a unit's motion and speech -> its frames


class PlaybackClock:
    """When each frame of a stream is due: frame 0 PLAYBACK_DELAY_S after the first frame was
    planned, then one every 1 / fps (seconds of time.monotonic)."""

    def __init__(self, fps: int):
        self.fps = fps
        self._start: Optional[float] = None
        self._planned = 0

    def deadlines(self, count: int) -> list[float]:
        """The deadlines of the next `count` frames."""
        if self._start is None:
            self._start = time.monotonic() + PLAYBACK_DELAY_S
        first, self._planned = self._planned, self._planned + count
        return [self._start + index / self.fps for index in range(first, first + count)]


class DirectFrames:
    """A session's frames rendered in the calling thread (meshwarp: each stream's own worker, in
    parallel with the others); `parallel` counts them and the late ones for /metrics."""

    def __init__(self, session: AvatarSession, token: CancelToken, fps: int, parallel: ParallelRendering):
        self.session = session
        self._token = token
        self._clock = PlaybackClock(fps)
        self._parallel = parallel

    def __call__(self, motion: FaceMotion, speech: Speech) -> list[np.ndarray]:
        deadlines = self._clock.deadlines(motion.n_frames)
        frames = []
        for frame in self.session.render(motion, speech):
            frames.append(frame)
            if self._token.cancelled:
                break
        self._token.check()
        now = time.monotonic()
        self._parallel.frames_done(len(frames), sum(now > deadline for deadline in deadlines[:len(frames)]))
        return frames


class ScheduledFrames:
    """A BatchedSession's frames through the device's render scheduler: the session plans each
    frame's payload here, the scheduler renders them in batches shared with other streams, and they
    come back in order, each due at its PlaybackClock deadline."""

    def __init__(self, session: BatchedSession, stream: Stream, fps: int):
        self.session = session
        self.stream = stream
        self._clock = PlaybackClock(fps)
        self._results = stream.frames()

    def __call__(self, motion: FaceMotion, speech: Speech) -> list[np.ndarray]:
        payloads = self.session.plan(motion, speech)
        self.stream.submit_all(payloads, self.session.portrait, self._clock.deadlines(len(payloads)))
        return [next(self._results) for _ in payloads]


class TalkingHead:
    """A portrait that speaks a stream of speech: the motion is computed as the speech arrives and
    rendered a unit at a time (by `frames`: DirectFrames or ScheduledFrames), carrying all state
    across pushes.

    push() and finish() return the frames that became final, in order (silence pushed keeps the
    mouth at rest while blinks and head sway go on); `rendered` counts them."""

    def __init__(self, session: AvatarSession, sample_rate: int, fps: int, frames: UnitFrames,
                 token: CancelToken, seconds: StageSeconds, refine: Optional[RefinerSession] = None,
                 on_close: Optional[Callable[[], None]] = None):
        self.session = session
        self.refine = refine  # the lip refiner after the backend, fed the same speech and frames
        self.sample_rate = sample_rate
        self.fps = fps
        self.motion = SpeechMotion(sample_rate, fps)
        self._frames = frames
        self._on_close = on_close  # gives the stream's share of rendering back
        self._token = token
        self._seconds = seconds
        self._samples = np.zeros(0, np.float32)  # the stream's speech from sample _samples_start on
        self._samples_start = 0
        self._pending: list[FaceMotion] = []  # final motion not yet rendered
        self.rendered = 0

    def close(self) -> None:
        """The stream is over (done, failed or cancelled): release what it held. Again is harmless."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        self._keep_samples(samples)
        if self.refine is not None:
            self.refine.add_speech(Speech(np.asarray(samples, np.float32), self.sample_rate))
        self._pending.append(self.motion.push(samples))
        return self._render(flush=False)

    def finish(self) -> Iterator[np.ndarray]:
        """The last frames: frame_count(seconds pushed, fps) in all."""
        self._pending.append(self.motion.finish())
        return self._render(flush=True)

    def _keep_samples(self, samples: np.ndarray) -> None:
        self._samples = np.concatenate([self._samples, np.asarray(samples, np.float32)])

    def _speech_for(self, motion: FaceMotion) -> Speech:
        """The stream's samples spanning motion's frames (zeros past the end); earlier ones are dropped."""
        per_frame = self.sample_rate / self.fps
        start = int(round(motion.first_frame * per_frame)) - self._samples_start
        stop = int(round((motion.first_frame + motion.n_frames) * per_frame)) - self._samples_start
        piece = self._samples[start:stop]
        piece = np.pad(piece, (0, stop - start - len(piece)))  # the clip's last frame may run past the speech
        self._samples = self._samples[start:]
        self._samples_start += start
        return Speech(piece, self.sample_rate)

    def _render(self, flush: bool) -> Iterator[np.ndarray]:
        pending = [piece for piece in self._pending if piece.n_frames]
        self._pending = []
        motion = FaceMotion.concatenate(pending) if pending else None
        unit = max(1, self.session.unit_frames)
        start = 0
        while motion is not None and start < motion.n_frames:
            stop = min(start + unit, motion.n_frames)
            # A fuller unit later uses the device better; a stream's first second goes out as it is
            # final. (No smaller first units: the GPU engines pad every unit to their batch size.)
            if stop - start < unit and not flush and start > 0 and self.rendered >= self.fps:
                self._pending = [motion.slice(start, motion.n_frames)]
                return
            piece = motion.slice(start, stop)
            yield from self._render_unit(piece)
            start = stop
        if flush and self.refine is not None:
            self._token.check()
            yield from self._deliver(self.refine.finish())  # on the refiner's own worker

    def _render_unit(self, motion: FaceMotion) -> Iterator[np.ndarray]:
        speech = self._speech_for(motion)
        self._token.check()
        self._seconds.render_enters("animation")
        frames = self._frames(motion, speech)
        if len(frames) != motion.n_frames:
            raise RuntimeError(f"the backend rendered {len(frames)} frames; {motion.n_frames} were asked for")
        # The refiner runs on a worker of its own, overlapping the next unit's render.
        yield from self._deliver(self.refine.add_frames(frames) if self.refine is not None else frames)

    def _deliver(self, frames: list[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            self.rendered += 1
            self._seconds.render_enters("output")
            yield frame
            self._seconds.render_enters("animation")


class Worker:
    """Runs fn in a daemon thread; its result, or the exception it raised, is kept for whoever joins it."""

    def __init__(self, fn: Callable[[], object], name: str):
        self.error: Optional[BaseException] = None
        self.result = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the consumer
            self.error = exc

    def join(self, timeout: Optional[float] = None) -> None:
        self.thread.join(timeout)


class SpeechFeed:
    """A request's speech chunks, synthesized in a thread of their own from the moment it is opened
    and at most two chunks ahead of the reader: the next chunks' TTS overlaps the portrait's
    preparation and the first frames' rendering instead of following them.

    first() waits for the first chunk (a bad voice or nothing to say raises there); iterating
    yields every chunk from the first and raises what stopped the synthesis; stop() ends the
    thread at its next check (a chunk being synthesized is finished and dropped, not waited for)."""

    def __init__(self, speech: Iterable[Speech], token: CancelToken, name: str):
        self._stop = CancelToken()
        self._queue = Handoff(2, token, self._stop)
        self._first: Optional[Speech] = None
        self._worker = Worker(lambda: self._synthesize(speech), name)

    def _synthesize(self, speech: Iterable[Speech]) -> None:
        try:
            for chunk in speech:
                self._queue.put(chunk)
            self._queue.put(_END)
        except Cancelled:
            return
        except BaseException as exc:  # handed to the reader
            self._queue.put(exc)

    def _next(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def first(self) -> Speech:
        if self._first is None:
            self._first = self._next()  # never _END: synthesize_chunks raises when there is nothing to say
        return self._first

    def __iter__(self) -> Iterator[Speech]:
        yield self.first()
        while (item := self._next()) is not _END:
            yield item

    def stop(self) -> None:
        self._stop.cancel()


class Clip:
    """One utterance through the pipeline, started by the caller (after its eager checks).

    fragments() runs it for a fragmented MP4 stream; write() for a regular mp4 file."""

    def __init__(self, request_id: str, speech: SpeechFeed, head: TalkingHead, token: CancelToken,
                 seconds: StageSeconds, on_progress: Optional[Callable[[int, Optional[int]], None]] = None):
        self.request_id = request_id
        self.token = token
        self.seconds = seconds
        self.head = head
        self._speech = speech
        self._on_progress = on_progress
        self.speech_seconds = 0.0
        self.refiner = "none"  # the lip refiner after the backend, by name
        self.result: Optional[EncodeResult] = None

    @property
    def frames_rendered(self) -> int:
        return self.head.rendered

    def _produce(self, out: Handoff, stop: CancelToken) -> None:
        """Render thread: speech chunks in, ("speech", Speech) and ("frame", frame) out, then _END,
        or the exception that stopped it."""
        speech = iter(self._speech)
        try:
            while True:
                self.seconds.render_enters("tts")
                item = next(speech, _END)
                self.seconds.render_enters("animation")
                if item is _END:
                    break
                self.speech_seconds += item.duration
                self.seconds.render_enters("output")
                out.put(("speech", item))
                self.seconds.render_enters("animation")
                for frame in self.head.push(item.samples):
                    out.put(("frame", frame))
            for frame in self.head.finish():
                out.put(("frame", frame))
            out.put(_END)
        except Cancelled:
            return
        except BaseException as exc:
            out.put(exc)
        finally:
            self._speech.stop()  # whatever ended the render thread ends TTS

    def _run(self, encoder: Mp4Encoder) -> Iterator[bytes]:
        stop = CancelToken()  # ends the render thread when this generator ends early, for any reason
        # Room for a render unit (up to 32 frames) and its speech: the render thread hands over one
        # unit and goes on rendering the next on the device while the encoder drains this one (with
        # fewer frames of room, GPU rendering and encoding took turns). Frames are up to 3 MB each,
        # so the room is what bounds a request's memory here.
        out = Handoff(min(self.head.session.unit_frames, 32) + 1, self.token, stop)
        producer = Worker(lambda: self._produce(out, stop), f"render-{self.request_id}")
        finished = False
        try:
            while True:
                item = out.get()
                self.seconds.charge_wait()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                kind, value = item
                if kind == "speech":
                    encoder.add_speech(value)
                else:
                    encoder.add_frame(value)
                    if self._on_progress is not None:
                        self._on_progress(encoder.frames, self._known_total())
                data = encoder.take()
                self.seconds.charge_encoding()
                if data:
                    yield data
                    self.seconds.charge_wait()  # the reader's time, while the render thread went on
            self.result = encoder.close()
            self.seconds.charge_encoding()
            self.seconds.finish()
            tail = encoder.take()
            if tail:
                yield tail
            finished = True
        except GeneratorExit:
            self.token.cancel("the reader stopped reading")  # nobody will read the rest
            raise
        finally:
            if not finished:
                stop.cancel()
                self._speech.stop()  # a render thread waiting for speech returns now
                encoder.abort()
            producer.join()
            self.head.close()
            if not finished and self.token.cancelled:
                stopped = time.monotonic() - (self.token.cancelled_at or time.monotonic())
                log.info("request %s cancelled after %d frames (%s; stopped %.3f s after the cancel)",
                         self.request_id, self.head.rendered, self.token.reason, stopped)

    def _known_total(self) -> Optional[int]:
        """Frames of the speech synthesized so far (the clip's total once TTS is done)."""
        return int(np.ceil(round(self.speech_seconds * self.head.fps, 6)))

    def fragments(self, fragment_frames: int, *, preset: str, crf: int) -> Iterator[bytes]:
        """The fragmented MP4: the init segment with the first fragment, then one fragment of
        fragment_frames frames at a time, as soon as each is encoded."""
        encoder = Mp4Encoder(self.head.fps, fragment_frames=fragment_frames, preset=preset, crf=crf)
        return self._run(encoder)

    def write(self, path, *, preset: str, crf: int) -> EncodeResult:
        """Run to the end into a regular mp4 at path."""
        for _ in self._run(Mp4Encoder(self.head.fps, path=path, preset=preset, crf=crf)):
            pass
        assert self.result is not None
        return self.result
