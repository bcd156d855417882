"""Strict loading of the official SadTalker checkpoints into our networks.

`SadTalker_V0.0.2_{256,512}.safetensors` holds five networks under prefixes (the state dict of
upstream's conversion wrapper): `kp_extractor.`, `generator.`, `audio2exp.`, `audio2pose.`,
`face_3drecon.`. The mapping nets ship separately as `mapping_*-model.pth.tar`, a pickled dict
whose `mapping` entry is the state dict.

Strict means: every tensor a network needs is present with its exact shape, and every tensor
under a network's prefix is used, except the ones listed in TRAINING_ONLY_PREFIXES (the CVAE
encoder and the pose discriminator, which inference never runs).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import CheckpointError

logger = logging.getLogger(__name__)

SAFETENSORS_PREFIXES = ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")
TRAINING_ONLY_PREFIXES = ("audio2pose.netG.encoder.", "audio2pose.netD_motion.")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"missing SadTalker checkpoint file: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def read_mapping_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The `mapping` state dict from a `mapping_*-model.pth.tar` file."""
    if not path.is_file():
        raise CheckpointError(f"missing SadTalker checkpoint file: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # The official file also carries optimizer state; allow full unpickling of the file
        # the user downloaded from the official release, but say so.
        logger.warning("%s needs full unpickling (not weights-only); loading it trusted", path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(checkpoint, dict) or "mapping" not in checkpoint:
        raise CheckpointError(f"{path} has no 'mapping' state dict (keys: {_keys(checkpoint)})")
    return checkpoint["mapping"]


def network_slice(checkpoint: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under `prefix.` with the prefix removed, training-only tensors dropped."""
    head = prefix + "."
    return {
        key[len(head):]: value
        for key, value in checkpoint.items()
        if key.startswith(head) and not key.startswith(TRAINING_ONLY_PREFIXES)
    }


def load_strict(network: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `network`, failing loudly on any missing, extra or mis-shaped tensor."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not match {type(network).__name__}: "
            f"missing {_preview(missing)}, unexpected {_preview(unexpected)}, "
            f"shape mismatch {_preview(mismatched)}")
    network.load_state_dict(state, strict=True)


def check_no_stray_keys(checkpoint: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor of the safetensors file belongs to one of the known networks."""
    stray = [k for k in checkpoint if not k.startswith(tuple(p + "." for p in SAFETENSORS_PREFIXES))]
    if stray:
        raise CheckpointError(f"{path} has tensors outside the known networks: {_preview(stray)}")
    for prefix in TRAINING_ONLY_PREFIXES:
        if not any(k.startswith(prefix) for k in checkpoint):
            raise CheckpointError(f"{path} lacks the {prefix}* tensors of the official layout")


def _preview(items: list[str], limit: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _keys(obj) -> str:
    return ", ".join(map(str, obj.keys())) if isinstance(obj, dict) else type(obj).__name__
