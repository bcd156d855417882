"""A conversation session: one portrait that speaks each text it is given and idles in between.

The stream never stops while the session lives: speech when there is some, silence otherwise
(closed mouth, blinks, head sway), rendered a step at a time and paced to the wall clock once a
small buffer is ahead, so a player never stalls and a new utterance starts soon after it arrives.
Output is one fragmented MP4 whose timestamps run on across utterances and pauses: the init
segment, then fragments, handed to `emit` with JSON-able events between them.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from .cancellation import CancelToken, Cancelled
from .errors import InvalidTextError, UserInputError
from .media.audio import Speech, resample
from .media.encode import Mp4Encoder
from .media.fmp4 import iter_boxes
from .pipeline import TalkingHead, Worker, get_cancellably, put_cancellably, synthesize_chunks
from .text_rules import check_text_characters
from .tts.base import TTSEngine

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050  # the session's speech rate (Piper's); other engines' speech is resampled to it
STEP_SECONDS = 0.2  # speech or silence rendered per step
BUFFER_SECONDS = 1.0  # how far the stream runs ahead of the wall clock

Message = Union[bytes, dict]


@dataclass
class _Utterance:
    id: int
    text: str


class Conversation:
    """Run with run() in a thread of its own until the token is cancelled; say() from any thread.

    emit(message) receives, in order: bytes (the init segment, then one fragment a message) and
    dicts (events: utterance_started / utterance_finished with the media time in seconds, or
    {"error", "detail"} for an utterance that could not be spoken)."""

    def __init__(self, session_id: str, tts: TTSEngine, head: TalkingHead, encoder: Mp4Encoder,
                 emit: Callable[[Message], None], token: CancelToken, *, voice: Optional[str],
                 max_seconds: float, max_chars: int, max_text_chars: int):
        self.session_id = session_id
        self.tts = tts
        self.head = head
        self.encoder = encoder
        self.emit = emit
        self.token = token
        self.voice = voice
        self.max_seconds, self.max_chars, self.max_text_chars = max_seconds, max_chars, max_text_chars
        self._texts: queue.Queue = queue.Queue()
        self._speech: queue.Queue = queue.Queue(maxsize=4)  # (utterance, Speech | None = its end)
        self._next_id = 1
        self._id_lock = threading.Lock()
        self._pending = np.zeros(0, np.float32)  # speech not yet pushed
        self._speaking: Optional[_Utterance] = None
        self._utterance_done = False  # the speaking utterance's last chunk is in _pending
        self._bytes = bytearray()
        self._clock_start: Optional[float] = None

    @property
    def frames(self) -> int:
        return self.head.rendered

    def say(self, text: str) -> int:
        """Queue an utterance; returns its id. Raises InvalidTextError for empty or over-long text."""
        if not text.strip():
            raise InvalidTextError("text is empty")
        if len(text) > self.max_text_chars:
            raise InvalidTextError(f"text is {len(text)} characters; the limit is {self.max_text_chars}")
        check_text_characters(text)
        with self._id_lock:
            utterance = _Utterance(self._next_id, text)
            self._next_id += 1
        self._texts.put(utterance)
        return utterance.id

    # -- the session's threads -------------------------------------------------------------------

    def _synthesize(self) -> None:
        """TTS thread: each queued text, chunk by chunk, into the speech queue."""
        while True:
            try:
                utterance = get_cancellably(self._texts, self.token)
            except Cancelled:
                return
            try:
                for speech in synthesize_chunks(self.tts, utterance.text, voice=self.voice, speaker_wav=None,
                                                max_seconds=self.max_seconds, token=self.token,
                                                max_chars=self.max_chars):
                    self._put((utterance, resample(speech, SAMPLE_RATE)))
            except Cancelled:
                return
            except UserInputError as error:
                self.emit({"error": error.error, "detail": error.detail, "utterance": utterance.id})
                continue
            self._put((utterance, None))

    def _put(self, item) -> None:
        put_cancellably(self._speech, item, self.token)

    def run(self) -> None:
        """Render and emit until cancelled (the socket closed). Never raises Cancelled."""
        tts = Worker(self._synthesize, f"tts-{self.session_id}")
        try:
            while True:
                self.token.check()
                self._take_speech()
                step = int(round(STEP_SECONDS * SAMPLE_RATE))
                if len(self._pending):
                    samples, self._pending = self._pending[:step], self._pending[step:]
                    samples = np.pad(samples, (0, step - len(samples)))
                else:
                    samples = np.zeros(step, np.float32)
                self._render(samples)
                if self._speaking is not None and self._utterance_done and not len(self._pending):
                    self.emit({"event": "utterance_finished", "id": self._speaking.id,
                               "at": round(self.head.motion.received_seconds, 3)})
                    self._speaking = None
                self._pace()
        except Cancelled:
            stopped = time.monotonic() - (self.token.cancelled_at or time.monotonic())
            log.info("request %s cancelled after %d frames (%s; stopped %.3f s after the cancel)",
                     self.session_id, self.head.rendered, self.token.reason, stopped)
        finally:
            self.token.cancel("the session ended")
            self.head.close()
            self.encoder.abort()
            tts.join(timeout=0)

    def _take_speech(self) -> None:
        """Move synthesized speech of the current (or next) utterance into the pending samples."""
        while not (self._utterance_done and len(self._pending)):  # one utterance after the other
            try:
                utterance, speech = self._speech.get_nowait()
            except queue.Empty:
                return
            if self._speaking is None or self._speaking.id != utterance.id:
                self._speaking, self._utterance_done = utterance, False
                self.emit({"event": "utterance_started", "id": utterance.id,
                           "at": round(self.head.motion.received_seconds, 3)})
            if speech is None:
                self._utterance_done = True
                return  # the next utterance starts once this one is pushed
            self._pending = np.concatenate([self._pending, speech.samples])

    def _render(self, samples: np.ndarray) -> None:
        self.encoder.add_speech(Speech(samples, SAMPLE_RATE))
        for frame in self.head.push(samples):
            self.encoder.add_frame(frame)
            if self._clock_start is None:
                self._clock_start = time.monotonic()
            self._send(self.encoder.take())

    def _send(self, data: bytes) -> None:
        """Emit the init segment as one message, then each moof + mdat pair as one message."""
        if not data:
            return
        self._bytes.extend(data)
        view = bytes(self._bytes)
        start = 0
        for kind, _, end in iter_boxes(view):
            if kind in (b"moov", b"mdat"):
                self.emit(view[start:end])
                start = end
        del self._bytes[:start]

    def _pace(self) -> None:
        """Wait while the stream is more than BUFFER_SECONDS ahead of the wall clock."""
        if self._clock_start is None:
            return
        ahead = self.encoder.frames / self.head.fps - (time.monotonic() - self._clock_start)
        if ahead > BUFFER_SECONDS:
            self.token.wait(ahead - BUFFER_SECONDS)
