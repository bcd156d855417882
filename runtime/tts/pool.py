"""A TTS engine behind a bounded pool of worker threads.

An engine's memory grows with what it speaks at once. The pipeline hands it bounded chunks of text
(tts.chunking); this pool bounds how many chunks are spoken at once in the whole process, however
many requests are waiting. Together they bound TTS memory whatever the texts and the traffic.
"""
from __future__ import annotations

import concurrent.futures
from typing import Optional

from ..media.audio import Speech
from .base import TTSEngine


class PooledTTS(TTSEngine):
    """`engine` with synthesize() run on at most `workers` threads; the caller's thread waits."""

    def __init__(self, engine: TTSEngine, workers: int):
        self.engine = engine
        self.workers = workers
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.engine.name

    @classmethod
    def load(cls, settings, device):  # pragma: no cover - wraps an engine that is already loaded
        raise TypeError("PooledTTS wraps a loaded engine: PooledTTS(engine, workers)")

    @property
    def default_voice(self) -> str:
        return self.engine.default_voice

    def voices(self) -> list[str]:
        return self.engine.voices()

    def synthesize(self, text: str, voice: Optional[str] = None, speaker_wav: Optional[Speech] = None) -> Speech:
        return self._executor.submit(self.engine.synthesize, text, voice=voice, speaker_wav=speaker_wav).result()

    def shortest_seconds(self, text: str) -> float:
        return self.engine.shortest_seconds(text)

    def voice_for(self, text: str) -> str:
        return self.engine.voice_for(text)

    def describe(self) -> dict:
        return {**self.engine.describe(), "workers": self.workers}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
