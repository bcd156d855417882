"""Pick the compute device once, at startup: cuda, else mps, else cpu."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    name: str  # "cuda" | "mps" | "cpu"
    reason: str
    torch_available: bool
    cuda_available: bool = False  # torch sees a CUDA device (whether or not USE_CUDA allows it)

    def describe(self, settings: Settings) -> dict:
        """The device's real state for /health: what was chosen, what exists, what USE_CUDA allows."""
        return {"selected": self.name, "reason": self.reason, "requested": settings.device,
                "torch_available": self.torch_available, "cuda_available": self.cuda_available,
                "cuda_allowed": settings.use_cuda}


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def select_device(settings: Settings) -> DeviceChoice:
    """cuda if present and allowed (USE_CUDA), else mps, else cpu; DEVICE forces one and must exist."""
    torch = _torch()
    cuda_ok = bool(torch is not None and torch.cuda.is_available())
    mps_ok = bool(torch is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())

    if settings.device is not None:
        available = {"cuda": cuda_ok and settings.use_cuda, "mps": mps_ok, "cpu": True}[settings.device]
        if not available:
            why = "torch is not installed" if torch is None else f"torch sees no {settings.device} device"
            if settings.device == "cuda" and cuda_ok and not settings.use_cuda:
                why = "USE_CUDA=false forbids it"
            raise RuntimeError(f"DEVICE={settings.device} was requested but is not available: {why}")
        return DeviceChoice(settings.device, "DEVICE", torch is not None, cuda_ok)
    if cuda_ok and settings.use_cuda:
        return DeviceChoice("cuda", f"cuda available ({torch.cuda.get_device_name(0)})", True, True)
    if mps_ok:
        return DeviceChoice("mps", "mps available", True, cuda_ok)
    if torch is None:
        reason = "torch not installed (light install)"
    elif cuda_ok:
        reason = "USE_CUDA=false"
    else:
        reason = "no cuda or mps device"
    return DeviceChoice("cpu", reason, torch is not None, cuda_ok)
