"""Load an official Wav2Lip checkpoint strictly.

Layout (upstream's training saves it so, the releases ship it so): MODELS_DIR/wav2lip/wav2lip.pth
or wav2lip_gan.pth = torch.save({"state_dict", "optimizer", "global_step", "global_epoch"}), the
state dict's keys carrying DataParallel's "module." prefix (upstream's inference strips it).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import CheckpointError
from .network import Wav2Lip

# Preferred first: the GAN-trained release gives sharper mouths (upstream's recommendation for quality).
CHECKPOINT_NAMES = ("wav2lip_gan.pth", "wav2lip.pth")


def find_checkpoint(wav2lip_dir: Path) -> Path:
    """The first official checkpoint present in MODELS_DIR/wav2lip; CheckpointError naming both if none."""
    for name in CHECKPOINT_NAMES:
        if (wav2lip_dir / name).is_file():
            return wav2lip_dir / name
    raise CheckpointError(
        f"no Wav2Lip checkpoint in {wav2lip_dir} (expected {' or '.join(CHECKPOINT_NAMES)}; "
        "run scripts/setup_wav2lip.sh)"
    )


def load_wav2lip(path: Path) -> Wav2Lip:
    """The network in eval mode, fp32 on the cpu, with every parameter and buffer from `path`."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated download, a wrong file
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Wav2Lip training checkpoint (no 'state_dict' entry)")
    state = {key.removeprefix("module."): value for key, value in checkpoint["state_dict"].items()}
    network = Wav2Lip()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit Wav2Lip: {str(error)[:800]}") from error
    return network.eval()
