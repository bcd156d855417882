"""Which avatar backend runs: AVATAR_BACKEND, the device, and the fallback chain.

auto picks by device (cuda -> liveportrait; mps/cpu -> sadtalker) and skips, with a one-line hint,
backends whose weights are not in MODELS_DIR: that is the normal state of a fresh install, not a
failure. A backend that was named, or whose weights are there, but cannot load (import error, bad
checkpoint, out of memory) falls back along liveportrait -> sadtalker -> meshwarp, logging why.
meshwarp needs no download and always loads.
"""
from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field

from ..config import Settings
from ..device import DeviceChoice
from .base import AvatarBackend

log = logging.getLogger(__name__)

# The one place a backend is registered: public name -> "module:Class". The wrapper modules import
# torch only inside `load`, so asking a class whether its weights are present stays cheap.
BACKENDS: dict[str, str] = {
    "liveportrait": "runtime.models.liveportrait_model:LivePortraitBackend",
    "sadtalker": "runtime.models.sadtalker_model:SadTalkerBackend",
    "meshwarp": "runtime.models.meshwarp_model:MeshWarpBackend",
}
FALLBACK_CHAIN = ["liveportrait", "sadtalker", "meshwarp"]
AUTO_BY_DEVICE = {"cuda": "liveportrait", "mps": "sadtalker", "cpu": "sadtalker"}


@dataclass
class BackendSelection:
    """What was asked for, what loaded, what auto skipped (no weights) and what failed to load."""

    requested: str
    first_choice: str
    loaded: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def fell_back(self) -> bool:
        """True only when a backend that should have loaded failed to."""
        return bool(self.failures)

    def as_dict(self) -> dict:
        return {
            "requested": self.requested,
            "first_choice": self.first_choice,
            "loaded": self.loaded,
            "fell_back": self.fell_back,
            "skipped": dict(self.skipped),
            "failures": dict(self.failures),
        }


def backend_class(name: str) -> type[AvatarBackend]:
    module_name, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _candidates(settings: Settings, device: DeviceChoice, selection: BackendSelection) -> list[str]:
    """The chain to try in order. Under auto, backends without weights are left out, each with a hint."""
    chain = FALLBACK_CHAIN[FALLBACK_CHAIN.index(selection.first_choice):]
    if settings.avatar_backend != "auto":
        return chain
    present = [name for name in chain if backend_class(name).weights_present(settings)]
    for name in chain:
        if name in present:
            break
        absent = backend_class(name)
        selection.skipped[name] = "weights not found in MODELS_DIR"
        hint = f" Run {absent.setup_script}" if absent.setup_script else ""
        log.info("%s weights not found in MODELS_DIR; using %s.%s", absent.display_name, present[0], hint)
    return present


def load_avatar_backend(settings: Settings, device: DeviceChoice) -> tuple[AvatarBackend, BackendSelection]:
    """Load the requested backend, or the first one after it in the chain that loads."""
    first = AUTO_BY_DEVICE[device.name] if settings.avatar_backend == "auto" else settings.avatar_backend
    selection = BackendSelection(requested=settings.avatar_backend, first_choice=first)
    chain = _candidates(settings, device, selection)
    for position, name in enumerate(chain):
        backend_type = backend_class(name)
        started = time.perf_counter()
        try:
            log.debug("Loading %s on %s...", backend_type.display_name, device.name)
            backend = backend_type.load(settings, device)
        except Exception as exc:  # any failure to load means: try the next one
            selection.failures[name] = f"{type(exc).__name__}: {exc}"
            log.error("Failed to load %s: %s", backend_type.display_name, exc)
            if position + 1 == len(chain):
                raise RuntimeError(f"no avatar backend could be loaded: {selection.failures}") from exc
            log.info("Falling back to %s...", backend_class(chain[position + 1]).display_name)
            continue
        selection.loaded = name
        log.info("Avatar: %s on %s, loaded in %.1f s", name, device.name, time.perf_counter() - started)
        return backend, selection
    raise AssertionError("unreachable: the chain always ends with meshwarp, whose weights ship with it")
