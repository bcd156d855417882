"""The TTS engine interface: load once, then text -> Speech."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Iterator, Optional

from ..errors import InvalidTextError
from ..media.audio import Speech
from .chunking import split_text

if TYPE_CHECKING:
    from ..config import Settings
    from ..device import DeviceChoice


class TTSEngine(ABC):
    """Speaks text. `synthesize` may be called from several threads."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def load(cls, settings: "Settings", device: "DeviceChoice") -> "TTSEngine":
        """Load the model(s); raise BackendUnavailable with the reason when it cannot."""

    @property
    @abstractmethod
    def default_voice(self) -> str:
        """The voice used when a request names none."""

    @abstractmethod
    def voices(self) -> list[str]:
        """Voice names a request may ask for."""

    def voice_for(self, text: str) -> str:
        """The voice that reads a text when the request names none (engines may choose by language)."""
        return self.default_voice

    @abstractmethod
    def synthesize(self, text: str, voice: Optional[str] = None, speaker_wav: Optional[Speech] = None) -> Speech:
        """Mono float32 speech at the engine's own sample rate. Raises UnknownVoiceError for a bad voice."""

    def synthesize_chunks(self, text: str, max_chars: int, voice: Optional[str] = None,
                          speaker_wav: Optional[Speech] = None) -> Iterator[Speech]:
        """Speech for `text` fed to the engine in chunks of at most max_chars characters (its memory
        grows with what it speaks at once), lazily, so the caller can stop between chunks. Chunks with
        nothing to say ("...") are skipped."""
        for chunk in split_text(text, max_chars):
            try:
                yield self.synthesize(chunk, voice=voice, speaker_wav=speaker_wav)
            except InvalidTextError:
                continue

    def shortest_seconds(self, text: str) -> float:
        """A lower bound on how long `text` takes to say, found without synthesizing it, so that a text
        sure to exceed the speech limit is refused before any work. Default: 25 characters a second,
        faster than anyone speaks."""
        return len(text) / 25.0

    def describe(self) -> dict:
        return {"engine": self.name, "voice": self.default_voice, "voices": self.voices()}
