"""Random-weight SadTalker checkpoints in the exact official file layout (test helper).

Writes, into `<root>/sadtalker/`:
- `SadTalker_V0.0.2_{size}.safetensors`: the state dict of upstream's conversion wrapper
  (`src/utils/model2safetensor.py`): prefixes `kp_extractor.`, `generator.`, `audio2exp.`,
  `audio2pose.`, `face_3drecon.`; the generator's SPADE convs in spectral-norm form
  (`weight_orig`, `weight_u`, `weight_v`); `audio2pose.` includes the CVAE encoder and the pose
  discriminator, which upstream's strict `load_state_dict` requires;
- `mapping_00229-model.pth.tar` (70 coefficients) and `mapping_00109-model.pth.tar` (73): a
  pickled dict `{"mapping": state_dict, "epoch": int}`, the entries upstream's
  `load_cpk_mapping` reads.

Weights are random but tamed (BN statistics near identity, small conv gains) so the deep
networks give finite, non-trivial outputs for equivalence tests.

Also here, for the tests and scripts/bench_sadtalker.py: `import_upstream` (the test-only
reference, PyPI sadtalker-z), `upstream_face_renderer` (upstream's renderer networks loaded the
way upstream loads the official files) and `synthetic_landmarks` (for machines without
MediaPipe).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from runtime.engines.sadtalker.audio2pose import ResUnet
from runtime.engines.sadtalker.config import MAPPING_CHECKPOINTS, SAFETENSORS_NAME, Audio2PoseConfig
from runtime.engines.sadtalker.networks import build_networks

MAPPING_EPOCHS = {"crop": 229, "full": 109}
SPADE_CONV = re.compile(r"^decoder\.(G_middle_\d|up_0|up_1)\.conv_[01s]\.weight$")


def _randomize(module: nn.Module, generator: torch.Generator) -> None:
    """Deterministic random weights; BN running stats near identity so activations stay sane."""
    for name, tensor in module.state_dict().items():
        if not tensor.is_floating_point():
            continue
        if name.endswith("running_mean"):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
        elif name.endswith("bias"):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05)
        elif tensor.dim() >= 2:
            fan_in = tensor[0].numel()
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
        else:  # BN/affine scales, class biases, buffers
            tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=generator))


def _to_spectral_form(state: dict[str, torch.Tensor], generator: torch.Generator) -> dict:
    """SPADE block convs (`conv_0`, `conv_1`, `conv_s`) as upstream's spectral_norm stores them:
    `weight_orig` plus the power-iteration vectors `weight_u` (out) and `weight_v` (in*k*k)."""
    out = {}
    for key, value in state.items():
        is_spade_conv = SPADE_CONV.match(key) is not None
        if not is_spade_conv:
            out[key] = value
            continue
        weight_orig = value * 3.0  # the folded weight is weight_orig / sigma
        matrix = weight_orig.reshape(weight_orig.shape[0], -1)
        v = torch.randn(matrix.shape[1], generator=generator)
        for _ in range(8):  # converge u, v towards the top singular pair, as training does
            u = torch.nn.functional.normalize(matrix @ v, dim=0)
            v = torch.nn.functional.normalize(matrix.t() @ u, dim=0)
        base = key[: -len("weight")]
        out[base + "weight_orig"] = weight_orig
        out[base + "weight_u"] = u
        out[base + "weight_v"] = v
    return out


def _cvae_encoder_state(cfg: Audio2PoseConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Training-only CVAE encoder (upstream `ENCODER`): same ResUnet as the decoder, one MLP
    layer over [ref pose, pose embedding, audio, class bias], mean/logvar heads."""
    encoder = nn.Module()
    encoder.resunet = ResUnet()
    in_size = cfg.encoder_layer_sizes[0] + cfg.latent_size + cfg.sequence_length * cfg.audio_embedding_out + 6
    sizes = [in_size, *cfg.encoder_layer_sizes[1:]]
    encoder.MLP = nn.Sequential()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        encoder.MLP.add_module(f"L{i}", nn.Linear(a, b))
        encoder.MLP.add_module(f"A{i}", nn.ReLU())
    encoder.linear_means = nn.Linear(sizes[-1], cfg.latent_size)
    encoder.linear_logvar = nn.Linear(sizes[-1], cfg.latent_size)
    encoder.linear_audio = nn.Linear(cfg.audio_embedding_in, cfg.audio_embedding_out)
    encoder.classbias = nn.Parameter(torch.zeros(cfg.num_classes, cfg.latent_size))
    _randomize(encoder, generator)
    return encoder.state_dict()


def _pose_discriminator_state(cfg: Audio2PoseConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Training-only `PoseSequenceDiscriminator`: three conv1d-BN blocks and a conv1d head."""
    seq = nn.Sequential()
    for i, (cin, cout, k) in enumerate([(cfg.discriminator_input_channels, 256, 4), (256, 512, 4),
                                        (512, 1024, 3)]):
        block = nn.Module()
        block.conv = nn.Conv1d(cin, cout, k, bias=False)
        block.norm = nn.BatchNorm1d(cout)
        seq.add_module(str(i), block)
    seq.add_module("3", nn.Conv1d(1024, 1, 3, padding=1))
    holder = nn.Module()
    holder.seq = seq
    _randomize(holder, generator)
    return holder.state_dict()


def write_random_checkpoints(root: Path, sizes=(256,), seed: int = 0) -> Path:
    """Write random checkpoints under `root/sadtalker/`; returns `root` (a MODELS_DIR)."""
    from safetensors.torch import save_file

    folder = Path(root) / "sadtalker"
    folder.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        generator = torch.Generator().manual_seed(seed + size)
        nets = build_networks(size, "full")
        tensors: dict[str, torch.Tensor] = {}
        for prefix, network in [("kp_extractor", nets.keypoint_detector), ("generator", nets.generator),
                                ("audio2exp", nets.audio2exp), ("audio2pose", nets.audio2pose),
                                ("face_3drecon", nets.recon)]:
            _randomize(network, generator)
            state = network.state_dict()
            if prefix == "generator":
                state = _to_spectral_form(state, generator)
            tensors.update({f"{prefix}.{k}": v for k, v in state.items()})
        cfg = nets.audio2pose.cfg
        tensors.update({f"audio2pose.netG.encoder.{k}": v
                        for k, v in _cvae_encoder_state(cfg, generator).items()})
        tensors.update({f"audio2pose.netD_motion.{k}": v
                        for k, v in _pose_discriminator_state(cfg, generator).items()})
        save_file({k: v.contiguous() for k, v in tensors.items()},
                  str(folder / SAFETENSORS_NAME.format(size=size)))

    for kind, (filename, _) in MAPPING_CHECKPOINTS.items():
        generator = torch.Generator().manual_seed(seed + MAPPING_EPOCHS[kind])
        mapping = build_networks(256, kind).mapping
        _randomize(mapping, generator)
        torch.save({"mapping": mapping.state_dict(), "epoch": MAPPING_EPOCHS[kind]}, folder / filename)
    return Path(root)


_SHARED_DIR: Path | None = None


def random_models_dir() -> Path:
    """One random-weight MODELS_DIR per test process (writing it takes seconds)."""
    global _SHARED_DIR
    if _SHARED_DIR is None:
        import atexit
        import shutil
        import tempfile

        _SHARED_DIR = Path(tempfile.mkdtemp(prefix="sadtalker-random-"))
        atexit.register(shutil.rmtree, _SHARED_DIR, ignore_errors=True)
        write_random_checkpoints(_SHARED_DIR)
    return _SHARED_DIR


_UPSTREAM = None


def missing_reference(what: str) -> None:
    """A test-only reference is not installed: skip on a developer's machine, fail in CI (env CI
    set), where a skipped equivalence test would prove nothing."""
    import os

    import pytest

    message = f"test-only reference missing: {what} (scripts/install.sh --dev installs scripts/test-references.txt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def import_upstream():
    """Upstream's networks from sadtalker-z (test-only reference: `pip install --no-deps
    sadtalker-z`), or None when it is not installed.

    Its package `__init__` imports `aiy` (needs `pyaiy`), so the packages are registered as
    bare modules and only the network submodules are imported (never the facerender
    discriminator, which imports `facerender.modules.util` by a top-level name)."""
    global _UPSTREAM
    if _UPSTREAM is not None:
        return _UPSTREAM
    spec = importlib.util.find_spec("sadtalker")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])

    def package(name: str, path: Path) -> None:
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module

    package("sadtalker", root)
    package("sadtalker.face3d", root / "face3d")
    package("sadtalker.face3d.models", root / "face3d" / "models")
    if importlib.util.find_spec("kornia") is None:
        # networks.py imports kornia.warp_affine for the recognition net, which we never build.
        kornia = types.ModuleType("kornia")
        kornia.geometry = types.ModuleType("kornia.geometry")

        def warp_affine(*args, **kwargs):
            raise RuntimeError("kornia stand-in: warp_affine is not available in tests")

        kornia.geometry.warp_affine = warp_affine
        sys.modules["kornia"] = kornia
        sys.modules["kornia.geometry"] = kornia.geometry
    if importlib.util.find_spec("tqdm") is None:
        tqdm = types.ModuleType("tqdm")
        tqdm.tqdm = lambda iterable, *args, **kwargs: iterable
        sys.modules["tqdm"] = tqdm
    names = {
        "generator": "sadtalker.facerender.modules.generator",
        "keypoint": "sadtalker.facerender.modules.keypoint_detector",
        "mapping": "sadtalker.facerender.modules.mapping",
        "animation": "sadtalker.facerender.modules.make_animation",
        "audio2exp": "sadtalker.audio2exp_models.networks",
        "audio2pose": "sadtalker.audio2pose_models.audio2pose",
        "recon": "sadtalker.face3d.models.networks",
    }
    _UPSTREAM = SimpleNamespace(**{k: importlib.import_module(v) for k, v in names.items()})
    return _UPSTREAM


UPSTREAM_FACERENDER = {  # src/config/facerender.yaml, model_params
    "common": dict(num_kp=15, image_channel=3, feature_channel=32, estimate_jacobian=False),
    "kp": dict(temperature=0.1, block_expansion=32, max_features=1024, scale_factor=0.25,
               num_blocks=5, reshape_channel=16384, reshape_depth=16),
    "generator": dict(block_expansion=64, max_features=512, num_down_blocks=2, reshape_channel=32,
                      reshape_depth=16, num_resblocks=6, estimate_occlusion_map=True,
                      dense_motion_params=dict(block_expansion=32, max_features=1024, num_blocks=5,
                                               reshape_depth=16, compress=4)),
}


def upstream_pose_config() -> SimpleNamespace:
    """Upstream's src/config/auido2pose.yaml as attribute access (fresh lists: upstream mutates them)."""
    return SimpleNamespace(
        MODEL=SimpleNamespace(
            CVAE=SimpleNamespace(AUDIO_EMB_IN_SIZE=512, AUDIO_EMB_OUT_SIZE=6, SEQ_LEN=32,
                                 LATENT_SIZE=64, ENCODER_LAYER_SIZES=[192, 128],
                                 DECODER_LAYER_SIZES=[128, 192]),
            DISCRIMINATOR=SimpleNamespace(LEAKY_RELU=False, INPUT_CHANNELS=6)),
        DATASET=SimpleNamespace(NUM_CLASSES=46))


def upstream_slice(checkpoint: dict, prefix: str) -> dict:
    """Upstream's `load_x_from_safetensor`: keys containing `prefix`, with "prefix." removed."""
    return {k.replace(prefix + ".", ""): v for k, v in checkpoint.items() if prefix in k}


def upstream_face_renderer(upstream, models_dir: Path, device, mapping_file: str = "mapping_00109-model.pth.tar"):
    """Upstream's (keypoint detector, generator, mapping net), loaded strictly the way
    upstream's AnimateFromCoeff loads the official files; eval mode, on `device`."""
    from safetensors.torch import load_file

    folder = Path(models_dir) / "sadtalker"
    checkpoint = load_file(str(folder / "SadTalker_V0.0.2_256.safetensors"))
    common = UPSTREAM_FACERENDER["common"]
    kp = upstream.keypoint.KPDetector(**UPSTREAM_FACERENDER["kp"], **common)
    kp.load_state_dict(upstream_slice(checkpoint, "kp_extractor"))
    generator = upstream.generator.OcclusionAwareSPADEGenerator(**UPSTREAM_FACERENDER["generator"], **common)
    generator.load_state_dict(upstream_slice(checkpoint, "generator"))
    mapping_state = torch.load(folder / mapping_file, map_location="cpu", weights_only=True)["mapping"]
    channels = mapping_state["first.0.weight"].shape[1]
    mapping = upstream.mapping.MappingNet(channels, 1024, 3, 15, 66)
    mapping.load_state_dict(mapping_state)
    return tuple(m.to(device).eval() for m in (kp, generator, mapping))


def synthetic_landmarks(width: int, height: int) -> np.ndarray:
    """478 MediaPipe-indexed points with the ones the engine reads placed on a frontal face
    in the middle of the image (for machines without mediapipe)."""
    from runtime.engines.sadtalker import alignment as a

    points = np.zeros((478, 2), dtype=np.float32)
    cx, cy, eye = width / 2, height * 0.42, width * 0.09

    def eye_at(indices, x):
        for i, angle in zip(indices, np.linspace(0, 2 * np.pi, len(indices), endpoint=False)):
            points[i] = (x + eye * 0.3 * np.cos(angle), cy + eye * 0.12 * np.sin(angle))

    eye_at(a.LEFT_EYE_CONTOUR, cx - eye)
    eye_at(a.RIGHT_EYE_CONTOUR, cx + eye)
    points[list(a.LEFT_EYE_CORNERS)] = [(cx - eye * 1.3, cy), (cx - eye * 0.7, cy)]
    points[list(a.RIGHT_EYE_CORNERS)] = [(cx + eye * 0.7, cy), (cx + eye * 1.3, cy)]
    points[a.NOSE_TIP] = (cx, cy + eye * 0.9)
    points[a.MOUTH_LEFT] = (cx - eye * 0.8, cy + eye * 1.6)
    points[a.MOUTH_RIGHT] = (cx + eye * 0.8, cy + eye * 1.6)
    return points
