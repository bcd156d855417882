"""Coqui TTS: the optional engine for XTTS voices and voice cloning (`pip install .[coqui]`).

It runs models of the maintained `coqui-tts` distribution (import name `TTS`) from local files only:
- `COQUI_MODEL_PATH` (+ `COQUI_CONFIG_PATH`): a checkpoint of your own, file or folder;
- `COQUI_MODEL`: a Coqui model name (`tts_models/multilingual/multi-dataset/xtts_v2`) that
  `scripts/setup_coqui.sh` downloaded beforehand. The service never downloads at startup.

Importing this module is cheap (no torch, no TTS): the factory calls `named_model_downloaded` for
TTS_ENGINE=auto on the light install too. TTS and torch are imported inside `CoquiEngine.load`.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import BackendUnavailable, InvalidAudioError, InvalidTextError, UnknownVoiceError
from ..media.audio import Speech, resample, wav_bytes
from .base import TTSEngine

log = logging.getLogger(__name__)

SINGLE_SPEAKER = "default"  # the one voice of a single-speaker model
DEFAULT_LANGUAGE = "en"  # multilingual models speak this unless it is not among their languages
INSTALL_HINT = "install it with `pip install .[coqui]` (or TTS_ENGINE=coqui scripts/install.sh)"
XTTS_SAMPLE_RATE = 22050  # XTTS computes its conditioning from 22.05 kHz audio
MIN_REFERENCE_S = 1.0  # shorter speaker_wav clips carry too little voice (XTTS refuses < 0.33 s)


# ---------------------------------------------------------------------------------------------
# Where named models live (no TTS import: mirrors coqui-tts' ModelManager layout)
# ---------------------------------------------------------------------------------------------


def coqui_data_dir() -> Path:
    """The folder Coqui downloads named models into: $TTS_HOME/tts, else $XDG_DATA_HOME/tts, else
    the platform's user data folder + /tts (the rule of trainer.io.get_user_data_dir, restated here
    because importing that module imports torch)."""
    if os.environ.get("TTS_HOME"):
        return Path(os.environ["TTS_HOME"]).expanduser() / "tts"
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]).expanduser() / "tts"
    if sys.platform == "darwin":
        return Path("~/Library/Application Support/tts").expanduser()
    if sys.platform == "win32":
        from trainer.io import get_user_data_dir  # the registry lookup is not worth restating

        return Path(get_user_data_dir("tts"))
    return Path.home() / ".local" / "share" / "tts"


@dataclass(frozen=True)
class NamedModelStatus:
    """Whether a named model can be loaded without a download, and if not, why."""

    present: bool
    reason: str
    tos_required: bool = False


def _tts_package_dir() -> Optional[Path]:
    """The installed TTS package's folder, found without importing it (its __init__ needs torch)."""
    spec = importlib.util.find_spec("TTS")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _model_entry(name: str, package_dir: Path) -> Optional[dict]:
    """The model's entry in the package's .models.json, or None for names it does not list (fairseq)."""
    parts = name.split("/")
    if len(parts) != 4:
        raise ValueError(f"COQUI_MODEL={name!r} is not a Coqui model name of the form type/language/dataset/model")
    catalogue = json.loads((package_dir / ".models.json").read_text(encoding="utf-8"))
    node: Any = catalogue
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def named_model_status(name: str) -> NamedModelStatus:
    """Is the named model downloaded (and its terms agreed, where it has some)? Never downloads."""
    package_dir = _tts_package_dir()
    if package_dir is None:
        return NamedModelStatus(False, f"coqui-tts is not installed; {INSTALL_HINT}")
    entry = _model_entry(name, package_dir)
    if entry is None and "fairseq" not in name:
        return NamedModelStatus(False, f"{name} is not a model coqui-tts knows (see `tts --list_models`)")
    entry = entry or {}
    folder = coqui_data_dir() / name.replace("/", "--")
    tos_required = bool(entry.get("tos_required"))
    if tos_required and not (folder / "tos_agreed.txt").is_file() and os.environ.get("COQUI_TOS_AGREED") != "1":
        return NamedModelStatus(
            False, f"{name} needs its license terms agreed: run scripts/setup_coqui.sh {name}", tos_required
        )
    if "repo_id" in entry:  # kept in the Hugging Face cache, not in the Coqui folder
        from huggingface_hub import snapshot_download

        try:
            snapshot = Path(
                snapshot_download(
                    entry["repo_id"],
                    allow_patterns=entry.get("allow"),
                    ignore_patterns=entry.get("ignore"),
                    local_files_only=True,
                )
            )
        except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
            return NamedModelStatus(False, f"{name} is not downloaded ({type(exc).__name__}); run scripts/setup_coqui.sh {name}", tos_required)
        if not (snapshot / "config.json").is_file():
            return NamedModelStatus(False, f"{name}: {snapshot} has no config.json; run scripts/setup_coqui.sh {name} again", tos_required)
        return NamedModelStatus(True, f"in the Hugging Face cache at {snapshot}", tos_required)
    if not folder.is_dir() or not any(folder.iterdir()):
        return NamedModelStatus(False, f"{name} is not downloaded (no {folder}); run scripts/setup_coqui.sh {name}", tos_required)
    return NamedModelStatus(True, f"downloaded in {folder}", tos_required)


def named_model_downloaded(name: str) -> bool:
    """True when `name` loads without a download. False, never an exception, when coqui-tts is
    missing or the name is unknown (TTS_ENGINE=auto then picks piper)."""
    try:
        return named_model_status(name).present
    except Exception as exc:
        log.debug("Coqui model %s is not usable: %s", name, exc)
        return False


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


def _checkpoint_files(model_path: Path, config_path: Optional[Path]) -> tuple[Path, Path]:
    """COQUI_MODEL_PATH (a .pth file or a folder) and its config.json, both checked to exist."""
    if not model_path.exists():
        raise BackendUnavailable(f"COQUI_MODEL_PATH={model_path} does not exist")
    if config_path is None:
        config_path = (model_path if model_path.is_dir() else model_path.parent) / "config.json"
        if not config_path.is_file():
            raise BackendUnavailable(f"no config.json beside COQUI_MODEL_PATH={model_path}; set COQUI_CONFIG_PATH")
    elif not config_path.is_file():
        raise BackendUnavailable(f"COQUI_CONFIG_PATH={config_path} does not exist")
    return model_path, config_path


class CoquiEngine(TTSEngine):
    """One Coqui model, loaded once on the selected device. Inference is serialized by a lock
    (the models keep per-call state and the device is shared)."""

    name = "coqui"

    def __init__(self, api: Any, model_label: str, device_name: str):
        self._api = api  # TTS.api.TTS
        self._model = api.synthesizer.tts_model
        self._label = model_label
        self._device = device_name
        self._lock = threading.Lock()
        self.sample_rate = int(api.synthesizer.output_sample_rate)
        self._speakers = list(dict.fromkeys(api.speakers or []))
        languages = list(api.languages or []) if api.is_multi_lingual else []
        self._languages = languages
        self._language = (DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in languages else languages[0]) if languages else None
        config = self._model.config
        manager = getattr(self._model, "speaker_manager", None)
        self._is_xtts = hasattr(self._model, "get_gpt_cond_latents")
        # XTTS-like models clone by design; VITS-like ones when a speaker encoder came with them.
        self._clones = bool(getattr(config, "supports_cloning", False)) or getattr(manager, "encoder", None) is not None

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, settings, device) -> "CoquiEngine":
        kwargs, label = cls._model_source(settings)
        try:
            from TTS.api import TTS
        except Exception as exc:  # ImportError, or coqui's own check for torch/torchaudio/torchcodec
            raise BackendUnavailable(f"coqui-tts cannot be imported ({type(exc).__name__}: {str(exc).strip()}); {INSTALL_HINT}") from exc
        log.info("Loading Coqui model %s on %s", label, device.name)
        api = TTS(progress_bar=False, **kwargs)
        if api.synthesizer is None:
            raise BackendUnavailable(f"{label} is not a text-to-speech model")
        api.to(device.name)
        engine = cls(api, label, device.name)
        engine._warm_up()  # a model that loads but cannot speak (missing phonemizer...) must fail here
        return engine

    @staticmethod
    def _model_source(settings) -> tuple[dict, str]:
        """TTS() arguments for the configured model, after checking the files are all here."""
        if settings.coqui_model_path is not None:
            model_path, config_path = _checkpoint_files(settings.coqui_model_path, settings.coqui_config_path)
            return {"model_path": str(model_path), "config_path": str(config_path)}, str(model_path)
        if settings.coqui_model:
            try:
                status = named_model_status(settings.coqui_model)
            except ValueError as exc:
                raise BackendUnavailable(str(exc)) from exc
            if not status.present:
                raise BackendUnavailable(status.reason)
            if status.tos_required:
                # Agreed at download time (tos_agreed.txt); the env var keeps coqui from prompting on stdin.
                os.environ.setdefault("COQUI_TOS_AGREED", "1")
            return {"model_name": settings.coqui_model}, settings.coqui_model
        raise BackendUnavailable("TTS_ENGINE=coqui needs COQUI_MODEL (a downloaded Coqui model name) or COQUI_MODEL_PATH")

    def _warm_up(self) -> None:
        if self._clones and not self._speakers:
            return  # a pure cloning model has no voice to speak with until a request brings one
        speech = self.synthesize("Ready.")
        log.info("Coqui model %s speaks at %d Hz (warm-up %.2f s of audio)", self._label, self.sample_rate, speech.duration)

    # -- TTSEngine ----------------------------------------------------------------------------

    @property
    def default_voice(self) -> str:
        """The first preset speaker; "" for a model that only clones (each request brings speaker_wav)."""
        if self._speakers:
            return self._speakers[0]
        return "" if self._clones else SINGLE_SPEAKER

    def voices(self) -> list[str]:
        if self._speakers:
            return list(self._speakers)
        return [] if self._clones else [SINGLE_SPEAKER]

    def describe(self) -> dict:
        return {
            **super().describe(),
            "model": self._label,
            "device": self._device,
            "sample_rate": self.sample_rate,
            "languages": self._languages,
            "language": self._language,
            "voice_cloning": self._clones,
        }

    def synthesize(self, text: str, voice: Optional[str] = None, speaker_wav: Optional[Speech] = None) -> Speech:
        if speaker_wav is not None and not self._clones:
            raise UnknownVoiceError(f"the Coqui model {self._label} cannot clone a voice; send no speaker_wav")
        if speaker_wav is None and self._clones and not self._speakers:
            raise UnknownVoiceError(f"the Coqui model {self._label} has no preset voice: send speaker_wav to clone one")
        if speaker_wav is not None and speaker_wav.duration < MIN_REFERENCE_S:
            raise InvalidAudioError(
                f"speaker_wav is {speaker_wav.duration:.2f} s long; cloning a voice needs at least {MIN_REFERENCE_S:g} s"
            )
        speaker = None if speaker_wav is not None else self._speaker(voice)
        self._check_speakable(text)
        import torch

        with self._lock, torch.inference_mode():
            if self._device == "cpu":
                # Denormal floats make CPU math many times slower (seen 20x on a VITS); flushing them
                # to zero changes nothing audible. The flag is per thread, and requests come on many.
                torch.set_flush_denormal(True)
            if speaker_wav is not None and self._is_xtts:
                samples = self._speak_xtts_cloned(text, speaker_wav)
            elif speaker_wav is not None:
                samples = self._speak_cloned_from_file(text, speaker_wav)
            else:
                samples = self._api.tts(text, speaker=speaker, language=self._language)
        samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if samples.size == 0:
            raise InvalidTextError("the text contains nothing that can be spoken")
        return Speech(samples, self.sample_rate)

    # -- helpers ------------------------------------------------------------------------------

    def _speaker(self, voice: Optional[str]) -> Optional[str]:
        """The model's speaker name for a request's voice (None for a single-speaker model)."""
        if not self._speakers:
            if voice not in (None, SINGLE_SPEAKER):
                raise UnknownVoiceError(f"unknown voice {voice!r}: the Coqui model {self._label} has one voice, {SINGLE_SPEAKER!r}")
            return None
        if voice is None:
            return self._speakers[0]
        if voice not in self._speakers:
            shown = ", ".join(self._speakers[:20]) + (" ..." if len(self._speakers) > 20 else "")
            raise UnknownVoiceError(f"unknown voice {voice!r}; the Coqui model {self._label} has: {shown}")
        return voice

    def _check_speakable(self, text: str) -> None:
        """Models with a character tokenizer drop what they cannot say; nothing left is a 4xx, not a crash."""
        tokenizer = getattr(self._model, "tokenizer", None)
        if not hasattr(tokenizer, "text_to_ids"):
            return  # XTTS and others tokenize their own way
        # An empty text still yields the blank / bos tokens; no more than those means nothing to say.
        if len(tokenizer.text_to_ids(text, language=self._language)) <= len(tokenizer.text_to_ids("", language=self._language)):
            raise InvalidTextError("the text contains nothing this Coqui model can speak")

    def _speak_cloned_from_file(self, text: str, reference: Speech) -> np.ndarray:
        """Models with a speaker encoder (YourTTS...) read the reference from a wav file (librosa)."""
        with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
            handle.write(wav_bytes(reference))
            handle.flush()
            return self._api.tts(text, speaker_wav=handle.name, language=self._language)

    def _speak_xtts_cloned(self, text: str, reference: Speech) -> np.ndarray:
        """XTTS: conditioning from the decoded reference in memory (its own file loader needs
        torchaudio's FFmpeg backend), then one sentence at a time as coqui's synthesizer does.

        reference: mono float32 at any rate; trimmed to the model's max_ref_len seconds."""
        import torch
        from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES

        model, config = self._model, self._model.config
        audio = resample(reference, XTTS_SAMPLE_RATE).samples[: XTTS_SAMPLE_RATE * int(config.max_ref_len)]
        audio_t = torch.from_numpy(np.ascontiguousarray(audio)).unsqueeze(0).to(model.device)  # (1, n)
        latents = model.get_gpt_cond_latents(
            audio_t, XTTS_SAMPLE_RATE, length=config.gpt_cond_len, chunk_length=config.gpt_cond_chunk_len
        )  # (1, 32, gpt channels)
        embedding = model.get_speaker_embedding(audio_t, XTTS_SAMPLE_RATE)  # (1, 512, 1)
        settings = {k: config[k] for k in ("temperature", "length_penalty", "repetition_penalty", "top_k", "top_p")}
        gap = np.zeros(PAD_SILENCE_SAMPLES, dtype=np.float32)  # the pause coqui's synthesizer puts
        pieces = []
        for sentence in self._api.synthesizer.split_into_sentences(text, self._language):
            out = model.inference(sentence, self._language, latents, embedding, **settings)
            pieces += [np.asarray(out["wav"], dtype=np.float32).reshape(-1), gap]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
