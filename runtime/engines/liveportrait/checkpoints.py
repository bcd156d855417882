"""Load the official LivePortrait checkpoints into our networks, strictly.

Layout under MODELS_DIR (as upstream ships it):
    liveportrait/base_models/{appearance_feature_extractor,motion_extractor,warping_module,spade_generator}.pth
    liveportrait/retargeting_models/stitching_retargeting_module.pth
The retargeting file is a dict of three state dicts (`retarget_shoulder` = stitching,
`retarget_mouth` = lip, `retarget_eye` = eye) whose keys may carry DDP's `module.` prefix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import CheckpointError, fold_spectral_norm
from .appearance_feature_extractor import AppearanceFeatureExtractor
from .files import BASE_MODEL_FILES, RETARGETING_FILE, missing_files
from .motion_extractor import MotionExtractor
from .spade_generator import SPADEDecoder
from .stitching_retargeting import StitchingRetargetingModule
from .warping_module import WarpingNetwork

# Official sub-dict name -> our MLP's attribute on StitchingRetargetingModule.
RETARGETING_PARTS = {"retarget_shoulder": "stitching", "retarget_mouth": "lip", "retarget_eye": "eye"}
SPECTRAL_SUFFIXES = ("weight_orig", "weight_u", "weight_v")


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated download, a wrong file
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error


def load_strict(network: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) with a message that names the file and the first mismatches."""
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{source} does not fit {type(network).__name__}: {str(error)[:800]}") from error


@dataclass
class LivePortraitNetworks:
    """The five networks, in eval mode, fp32, on the cpu until moved."""

    appearance: AppearanceFeatureExtractor
    motion: MotionExtractor
    warping: WarpingNetwork
    generator: SPADEDecoder
    retargeting: StitchingRetargetingModule

    def to(self, device: torch.device | str) -> LivePortraitNetworks:
        for network in self.all():
            network.to(device)
        return self

    def all(self) -> list[nn.Module]:
        return [self.appearance, self.motion, self.warping, self.generator, self.retargeting]


def load_base_model(liveportrait_dir: Path, name: str) -> nn.Module:
    network = {"appearance_feature_extractor": AppearanceFeatureExtractor, "motion_extractor": MotionExtractor,
               "warping_module": WarpingNetwork, "spade_generator": SPADEDecoder}[name]()
    path = liveportrait_dir / BASE_MODEL_FILES[name]
    state_dict = _read(path)
    if name == "spade_generator":
        state_dict = fold_spectral_norm(state_dict)
    load_strict(network, state_dict, str(path))
    return network.eval()


def load_retargeting(liveportrait_dir: Path) -> StitchingRetargetingModule:
    path = liveportrait_dir / RETARGETING_FILE
    checkpoint = _read(path)
    module = StitchingRetargetingModule()
    absent = [part for part in RETARGETING_PARTS if part not in checkpoint]
    if absent:
        raise CheckpointError(f"{path} lacks {absent} (has {sorted(checkpoint)})")
    for part, attribute in RETARGETING_PARTS.items():
        load_strict(getattr(module, attribute), strip_module_prefix(checkpoint[part]), f"{path}[{part}]")
    return module.eval()


def load_networks(liveportrait_dir: Path) -> LivePortraitNetworks:
    """All five networks from the official files; CheckpointError names anything missing or wrong."""
    liveportrait_dir = Path(liveportrait_dir)
    absent = missing_files(liveportrait_dir)
    if absent:
        raise CheckpointError("missing LivePortrait checkpoint(s): " + ", ".join(str(p) for p in absent)
                              + " (scripts/setup_liveportrait.sh downloads them)")
    return LivePortraitNetworks(
        appearance=load_base_model(liveportrait_dir, "appearance_feature_extractor"),
        motion=load_base_model(liveportrait_dir, "motion_extractor"),
        warping=load_base_model(liveportrait_dir, "warping_module"),
        generator=load_base_model(liveportrait_dir, "spade_generator"),
        retargeting=load_retargeting(liveportrait_dir),
    )


def spectral_conv_names(generator: SPADEDecoder) -> list[str]:
    """Module names of G's convs that the official checkpoint stores spectrally normalized."""
    names = []
    for block_name, block in generator.named_children():
        if block_name.startswith(("G_middle_", "up_")):
            names += [f"{block_name}.conv_0", f"{block_name}.conv_1"]
            if block.learned_shortcut:
                names.append(f"{block_name}.conv_s")
    return names
