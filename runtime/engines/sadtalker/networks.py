"""All SadTalker networks of one model size, built from our config and loaded strictly."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..checkpoints import fold_spectral_norm
from .audio2exp import Audio2Exp
from .audio2pose import Audio2Pose
from .checkpoint import (
    CheckpointError,
    check_no_stray_keys,
    load_strict,
    network_slice,
    read_mapping_checkpoint,
    read_safetensors,
)
from .config import MAPPING_CHECKPOINTS, SAFETENSORS_NAME, SUPPORTED_SIZES, MappingConfig
from .generator import OcclusionAwareSPADEGenerator
from .keypoint_detector import KeypointDetector
from .mapping_net import MappingNet
from .recon_net import ReconNet

logger = logging.getLogger(__name__)


@dataclass
class SadTalkerNetworks:
    recon: ReconNet
    audio2exp: Audio2Exp
    audio2pose: Audio2Pose
    keypoint_detector: KeypointDetector
    generator: OcclusionAwareSPADEGenerator
    mapping: MappingNet
    size: int
    mapping_kind: str  # "full" (73 coefficients, paste-back) or "crop" (70)

    def modules(self) -> list[nn.Module]:
        return [self.recon, self.audio2exp, self.audio2pose, self.keypoint_detector,
                self.generator, self.mapping]


def checkpoint_paths(sadtalker_dir: Path, size: int, mapping_kind: str) -> tuple[Path, Path]:
    if size not in SUPPORTED_SIZES:
        raise ValueError(f"size must be one of {SUPPORTED_SIZES}, got {size}")
    if mapping_kind not in MAPPING_CHECKPOINTS:
        raise ValueError(f"mapping_kind must be one of {sorted(MAPPING_CHECKPOINTS)}")
    return (sadtalker_dir / SAFETENSORS_NAME.format(size=size),
            sadtalker_dir / MAPPING_CHECKPOINTS[mapping_kind][0])


def build_networks(size: int, mapping_kind: str) -> SadTalkerNetworks:
    """Networks with untrained weights (the loader overwrites every tensor)."""
    coeff_channels = MAPPING_CHECKPOINTS[mapping_kind][1]
    return SadTalkerNetworks(
        recon=ReconNet(), audio2exp=Audio2Exp(), audio2pose=Audio2Pose(),
        keypoint_detector=KeypointDetector(), generator=OcclusionAwareSPADEGenerator(),
        mapping=MappingNet(MappingConfig(coeff_channels=coeff_channels)),
        size=size, mapping_kind=mapping_kind)


def load_networks(sadtalker_dir: Path, size: int = 256, mapping_kind: str = "full") -> SadTalkerNetworks:
    """Load the official checkpoints from `sadtalker_dir` (fp32, CPU, eval mode).

    Raises CheckpointError naming the file when one is missing or does not match.
    """
    started = time.perf_counter()
    safetensors_path, mapping_path = checkpoint_paths(Path(sadtalker_dir), size, mapping_kind)
    missing = [str(p) for p in (safetensors_path, mapping_path) if not p.is_file()]
    if missing:
        raise CheckpointError("missing SadTalker checkpoint file(s): " + ", ".join(missing))

    nets = build_networks(size, mapping_kind)
    checkpoint = read_safetensors(safetensors_path)
    check_no_stray_keys(checkpoint, safetensors_path)
    parts = {
        "kp_extractor": nets.keypoint_detector,
        "generator": nets.generator,
        "audio2exp": nets.audio2exp,
        "audio2pose": nets.audio2pose,
        "face_3drecon": nets.recon,
    }
    for prefix, network in parts.items():
        state = network_slice(checkpoint, prefix)
        if prefix == "generator":
            state = fold_spectral_norm(state)
        load_strict(network, state, f"{safetensors_path.name}[{prefix}]")
    load_strict(nets.mapping, read_mapping_checkpoint(mapping_path), mapping_path.name)

    for module in nets.modules():
        module.eval().requires_grad_(False)
    logger.info("SadTalker %d networks loaded from %s in %.1f s", size, sadtalker_dir,
                time.perf_counter() - started)
    return nets
