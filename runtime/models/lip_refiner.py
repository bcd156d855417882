"""Loads the lip refiner the service runs after any avatar backend (LIP_REFINER=none|wav2lip).

Loaded once at startup like a backend; when it cannot load (torch missing, no weights) the service
still starts, logs why, and /health says the refiner is off and why.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .base import LipRefinerSelection

if TYPE_CHECKING:
    from ..config import Settings
    from ..device import DeviceChoice

log = logging.getLogger(__name__)


def load_lip_refiner(settings: "Settings", device: "DeviceChoice", locator=None) -> LipRefinerSelection:
    """The configured refiner, or an inactive selection saying why it is off."""
    if settings.lip_refiner == "none":
        return LipRefinerSelection()
    selection = LipRefinerSelection(requested=settings.lip_refiner, reason="")
    try:
        from ..engines.wav2lip.refiner import LipRefiner

        selection.refiner = LipRefiner.load(settings.models_dir, device.name, locator)
        log.info("Lip refiner wav2lip loaded on %s (%s)", device.name, selection.refiner.checkpoint)
    except ImportError as exc:
        selection.reason = f"torch is not installed (install the engines extra): {exc}"
    except Exception as exc:  # CheckpointError (weights missing or wrong), out of memory
        selection.reason = f"{type(exc).__name__}: {exc}"
    if selection.reason:
        log.error("Lip refiner wav2lip is off: %s", selection.reason)
    return selection
