"""The lip refiner the service runs after any avatar backend (LIP_REFINER=none|wav2lip).

Loaded once at startup like a backend; when it cannot load (torch missing, no weights) the service
still starts, logs why, and /health says the refiner is off and why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import numpy as np

from ..errors import UserInputError
from ..media.audio import Speech

if TYPE_CHECKING:
    from ..config import Settings
    from ..device import DeviceChoice
    from ..engines.wav2lip.refiner import LipRefiner

log = logging.getLogger(__name__)


class LipRefinerUnavailableError(UserInputError):
    error = "lip_refiner_unavailable"
    status_code = 409


@dataclass
class LipRefinerSelection:
    """What LIP_REFINER asked for, whether it loaded, and why not."""

    requested: str
    refiner: Optional["LipRefiner"] = None
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.refiner is not None

    def as_dict(self) -> dict:
        detail = {"requested": self.requested, "active": self.active, "reason": self.reason or None}
        if self.refiner is not None:
            detail.update(self.refiner.describe())
        return detail

    def wants(self, lip_refine: Optional[bool]) -> bool:
        """Whether a request runs the refiner: its `lip_refine` flag, else LIP_REFINER. Asking for it
        while it is off is the client's error (409, naming why it is off)."""
        if lip_refine is None:
            return self.active
        if lip_refine and not self.active:
            why = self.reason or "LIP_REFINER=none"
            raise LipRefinerUnavailableError(f"lip_refine was requested but the lip refiner is off: {why}")
        return bool(lip_refine)

    def apply(self, frames: Iterable[np.ndarray], speech: Speech, fps: int, lip_refine: Optional[bool]) -> Iterator[np.ndarray]:
        """The frames, refined when the request wants it, lazily (a stream stays a stream)."""
        if not self.wants(lip_refine):
            return iter(frames)
        return self.refiner.refine(frames, speech, fps)


def load_lip_refiner(settings: "Settings", device: "DeviceChoice", locator=None) -> LipRefinerSelection:
    """The configured refiner, or an inactive selection saying why it is off."""
    selection = LipRefinerSelection(requested=settings.lip_refiner)
    if settings.lip_refiner == "none":
        selection.reason = "LIP_REFINER=none"
        return selection
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
