"""Which TTS engine speaks: TTS_ENGINE=auto|piper|coqui, falling back to piper when coqui cannot load."""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Optional

from ..config import Settings
from ..device import DeviceChoice
from .base import TTSEngine

log = logging.getLogger(__name__)

# Public name -> "module:Class"; imported only when chosen (coqui brings torch).
ENGINES = {
    "piper": "runtime.tts.piper_engine:PiperEngine",
    "coqui": "runtime.tts.coqui_engine:CoquiEngine",
}


@dataclass
class TTSSelection:
    requested: str
    loaded: str = ""
    fallback_reason: Optional[str] = None

    def as_dict(self) -> dict:
        return {"requested": self.requested, "loaded": self.loaded, "fallback_reason": self.fallback_reason}


def coqui_model_present(settings: Settings) -> bool:
    """A local Coqui checkpoint, or a named model already downloaded by scripts/setup_coqui.sh."""
    if settings.coqui_model_path is not None:
        return settings.coqui_model_path.exists()
    if settings.coqui_model:
        try:
            from .coqui_engine import named_model_downloaded
        except ImportError:
            return False
        return named_model_downloaded(settings.coqui_model)
    return False


def _engine_class(name: str) -> type[TTSEngine]:
    module_name, class_name = ENGINES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_tts_engine(settings: Settings, device: DeviceChoice) -> tuple[TTSEngine, TTSSelection]:
    selection = TTSSelection(requested=settings.tts_engine)
    wanted = settings.tts_engine
    if wanted == "auto":
        wanted = "coqui" if coqui_model_present(settings) else "piper"
    if wanted == "coqui":
        try:
            engine = _engine_class("coqui").load(settings, device)
            selection.loaded = "coqui"
            return engine, selection
        except Exception as exc:
            selection.fallback_reason = f"{type(exc).__name__}: {exc}"
            log.error("Failed to load Coqui TTS: %s", exc)
            log.info("Falling back to Piper...")
    engine = _engine_class("piper").load(settings, device)
    selection.loaded = "piper"
    return engine, selection
