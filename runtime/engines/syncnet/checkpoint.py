"""Load the official `syncnet_v2.model` (MODELS_DIR/syncnet/): torch.save of SyncNet's state dict.

Upstream's loadParameters copies each saved entry into its network by name; a file saved before
torch 0.4.1 has no batch-norm `num_batches_tracked` counters (unused in eval), so only those may be
absent: anything else missing or unexpected is an error.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import CheckpointError
from .network import SyncNet

CHECKPOINT_NAME = "syncnet_v2.model"


def load_syncnet(path: Path) -> SyncNet:
    """The network in eval mode, fp32 on the cpu; CheckpointError naming what is wrong."""
    if not path.is_file():
        raise CheckpointError(f"no SyncNet weights at {path} (run scripts/setup_syncnet.sh)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not SyncNet's state dict")
    network = SyncNet()
    expected = network.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit SyncNet: {str(error)[:800]}") from error
    return network.eval()
