"""Test-only upstream references for the Wav2Lip refiner and SyncNet, and random-weight checkpoints
in the official layouts.

References (scripts/test-references.txt, installed --no-deps): `lipsync` carries upstream Wav2Lip's
network (models/wav2lip.py, models/conv.py) and audio front end (audio.py, hparams.py, on librosa);
`syncnet-python` carries upstream SyncNet's network (SyncNetModel.py); `python_speech_features` is
the MFCC upstream SyncNet feeds its audio stream. Their package `__init__`s pull tools the tests do
not need (face_alignment, ffmpeg, scenedetect), so the packages are registered bare and only the
network modules are imported.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch


def _bare_package(name: str) -> bool:
    """Register an installed package without running its __init__; False when it is not installed."""
    if name in sys.modules and hasattr(sys.modules[name], "__path__"):
        return True
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return False
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module
    return True


def upstream_wav2lip():
    """lipsync.models.wav2lip (upstream's Wav2Lip network), or None when lipsync is not installed."""
    if not _bare_package("lipsync"):
        return None
    _bare_package("lipsync.models")
    return importlib.import_module("lipsync.models.wav2lip")


def upstream_wav2lip_audio():
    """lipsync.audio (upstream's mel front end on librosa), or None when it cannot import."""
    if not _bare_package("lipsync"):
        return None
    try:
        return importlib.import_module("lipsync.audio")
    except ImportError:
        return None


def upstream_syncnet():
    """syncnet_python.SyncNetModel (upstream's SyncNet network), or None when not installed."""
    if not _bare_package("syncnet_python"):
        return None
    return importlib.import_module("syncnet_python.SyncNetModel")


def randomize(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and batch-norm statistics, so that eval-mode normalization is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("running_mean"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("weight") and tensor.dim() > 1:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
    return network.eval()


def write_wav2lip_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight Wav2Lip checkpoint as upstream's training saves it (and the releases ship):
    torch.save({"state_dict", "optimizer", "global_step", "global_epoch"}) with DataParallel's
    "module." prefix on every key. Returns the unprefixed state dict."""
    from runtime.engines.wav2lip.network import Wav2Lip

    network = randomize(Wav2Lip(), seed)
    state = network.state_dict()
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"module.{key}": value for key, value in state.items()},
            "optimizer": optimizer.state_dict(),
            "global_step": 253000,
            "global_epoch": 42,
        },
        path,
    )
    return state


def write_syncnet_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight `syncnet_v2.model` as upstream ships it: torch.save of the network's state
    dict (keys netcnnaud.*, netfcaud.*, netcnnlip.*, netfclip.*); upstream's loadParameters copies
    each entry into S(num_layers_in_fc_layers=1024). Returns the state dict."""
    from runtime.engines.syncnet.network import SyncNet

    state = randomize(SyncNet(), seed).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state
