"""The TTS engine interface: load once, then text -> Speech."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Optional

from ..media.audio import Speech

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

    @abstractmethod
    def synthesize(self, text: str, voice: Optional[str] = None, speaker_wav: Optional[Speech] = None) -> Speech:
        """Mono float32 speech at the engine's own sample rate. Raises UnknownVoiceError for a bad voice."""

    def shortest_seconds(self, text: str) -> float:
        """A lower bound on how long `text` takes to say, found without synthesizing it, so that a text
        sure to exceed the speech limit is refused before any work. Default: 25 characters a second,
        faster than anyone speaks."""
        return len(text) / 25.0

    def describe(self) -> dict:
        return {"engine": self.name, "voice": self.default_voice, "voices": self.voices()}
