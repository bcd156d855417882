"""Which avatar backend runs: AVATAR_BACKEND, the device, and the fallback chain.

auto picks by device (cuda -> liveportrait; mps/cpu -> sadtalker). Whatever is asked for, a backend
that cannot load (weights missing, import error, out of memory) falls back along
liveportrait -> sadtalker -> meshwarp, logging why. meshwarp needs no download and always loads.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field

from ..config import Settings
from ..device import DeviceChoice
from .base import AvatarBackend

log = logging.getLogger(__name__)

# The one place a backend is registered: public name -> (display name, "module:Class").
# Modules are imported only when tried, so the light install never imports torch.
BACKENDS: dict[str, tuple[str, str]] = {
    "liveportrait": ("LivePortrait", "runtime.models.liveportrait_model:LivePortraitBackend"),
    "sadtalker": ("SadTalker", "runtime.models.sadtalker_model:SadTalkerBackend"),
    "meshwarp": ("MeshWarp", "runtime.models.meshwarp_model:MeshWarpBackend"),
}
FALLBACK_CHAIN = ["liveportrait", "sadtalker", "meshwarp"]
AUTO_BY_DEVICE = {"cuda": "liveportrait", "mps": "sadtalker", "cpu": "sadtalker"}


@dataclass
class BackendSelection:
    """What was asked for, what loaded, and why anything before it did not."""

    requested: str
    first_choice: str
    loaded: str = ""
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def fell_back(self) -> bool:
        return self.loaded != self.first_choice

    def as_dict(self) -> dict:
        return {
            "requested": self.requested,
            "first_choice": self.first_choice,
            "loaded": self.loaded,
            "fell_back": self.fell_back,
            "failures": dict(self.failures),
        }


def backend_class(name: str) -> type[AvatarBackend]:
    module_name, class_name = BACKENDS[name][1].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_avatar_backend(settings: Settings, device: DeviceChoice) -> tuple[AvatarBackend, BackendSelection]:
    """Load the requested backend, or the first one after it in the chain that loads."""
    first = AUTO_BY_DEVICE[device.name] if settings.avatar_backend == "auto" else settings.avatar_backend
    selection = BackendSelection(requested=settings.avatar_backend, first_choice=first)
    chain = FALLBACK_CHAIN[FALLBACK_CHAIN.index(first):]
    for position, name in enumerate(chain):
        display = BACKENDS[name][0]
        try:
            log.info("Loading %s on %s...", display, device.name)
            backend = backend_class(name).load(settings, device)
        except Exception as exc:  # any failure to load means: try the next one
            selection.failures[name] = f"{type(exc).__name__}: {exc}"
            log.error("Failed to load %s: %s", display, exc)
            if position + 1 == len(chain):
                raise RuntimeError(f"no avatar backend could be loaded: {selection.failures}") from exc
            log.info("Falling back to %s...", BACKENDS[chain[position + 1]][0])
            continue
        selection.loaded = name
        log.info("%s loaded on %s", display, device.name)
        return backend, selection
    raise AssertionError("unreachable: the chain is never empty")
