"""Random-weight LivePortrait checkpoints in the exact official file layout, for tests.

Same file names, key names, shapes and torch.save format as the official download:
BatchNorm running stats included, the decoder's residual convs stored spectrally normalized
(`weight_orig`, `weight_u`, `weight_v`), the retargeting MLPs as three sub-dicts with DDP's
`module.` prefix. Built from our own networks, so no upstream code is needed; the
equivalence test checks the key sets against upstream's modules.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from runtime.engines.liveportrait.appearance_feature_extractor import AppearanceFeatureExtractor
from runtime.engines.liveportrait.checkpoints import BASE_MODEL_FILES, RETARGETING_FILE, spectral_conv_names
from runtime.engines.liveportrait.motion_extractor import MotionExtractor
from runtime.engines.liveportrait.spade_generator import SPADEDecoder
from runtime.engines.liveportrait.stitching_retargeting import StitchingRetargetingModule
from runtime.engines.liveportrait.warping_module import WarpingNetwork

# Every exact speed rewrite the engine has (engine.SPEED_OPTIONS), for the tests that render with
# all of them against the plain networks (fp32 on the CPU, half precision on CUDA).
EVERY_REWRITE = {"align_channels": True, "spectral_mask_conv": True, "split_decoder_conv": True,
                 "low_res_upsample_convs": True, "occlusion_taps": True}

_CACHE: dict[int, Path] = {}


def _randomize_norm_statistics(network: nn.Module, generator: torch.Generator) -> None:
    """Trained BatchNorms are not the identity: give them non-trivial stats and affine terms."""
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(1 + 0.1 * torch.randn(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
            module.num_batches_tracked.fill_(1000)
        elif isinstance(module, nn.LayerNorm) or type(module).__name__ in ("ChannelsFirstLayerNorm", "GlobalResponseNorm"):
            for parameter in module.parameters():
                parameter.data.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def _spectral_layout(generator_net: SPADEDecoder, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """G's state dict as the official file stores it: spectral convs as (weight_orig, u, v).

    u and v are the leading singular vectors (power iteration), as training leaves them."""
    state = generator_net.state_dict()
    for name in spectral_conv_names(generator_net):
        weight = state.pop(f"{name}.weight")
        matrix = weight.reshape(weight.shape[0], -1)
        v = torch.randn(matrix.shape[1], generator=generator)
        for _ in range(30):
            u = nn.functional.normalize(matrix @ v, dim=0)
            v = nn.functional.normalize(matrix.t() @ u, dim=0)
        state[f"{name}.weight_orig"] = weight
        state[f"{name}.weight_u"] = u
        state[f"{name}.weight_v"] = v
    return state


def official_state_dicts(seed: int = 0) -> dict[str, dict]:
    """{relative file path: object torch.save writes there}, random but deterministic in `seed`."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    networks = {
        "appearance_feature_extractor": AppearanceFeatureExtractor(),
        "motion_extractor": MotionExtractor(),
        "warping_module": WarpingNetwork(),
        "spade_generator": SPADEDecoder(),
    }
    files: dict[str, dict] = {}
    for name, network in networks.items():
        _randomize_norm_statistics(network, generator)
        state = _spectral_layout(network, generator) if name == "spade_generator" else network.state_dict()
        files[BASE_MODEL_FILES[name]] = state
    retargeting = StitchingRetargetingModule()
    files[RETARGETING_FILE] = {
        official: {f"module.{key}": value for key, value in getattr(retargeting, ours).state_dict().items()}
        for official, ours in (("retarget_shoulder", "stitching"), ("retarget_mouth", "lip"), ("retarget_eye", "eye"))
    }
    return files


def write_random_checkpoints(models_dir: Path, seed: int = 0) -> Path:
    """Write the five files under models_dir/liveportrait/...; returns models_dir."""
    for relative, content in official_state_dicts(seed).items():
        path = Path(models_dir) / "liveportrait" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content, path)
    return Path(models_dir)


def shared_random_models_dir(seed: int = 0) -> Path:
    """One MODELS_DIR with random checkpoints per test process (writing them takes seconds)."""
    if seed not in _CACHE:
        directory = Path(tempfile.mkdtemp(prefix=f"liveportrait-random-{seed}-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        _CACHE[seed] = write_random_checkpoints(directory, seed)
    return _CACHE[seed]
