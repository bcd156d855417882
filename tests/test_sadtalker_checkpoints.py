"""Strict loading of the official SadTalker checkpoint layout, and the layout itself."""
from __future__ import annotations

import pytest
import torch

from runtime.config import load_settings
from runtime.device import DeviceChoice
from runtime.engines.checkpoints import fold_spectral_norm
from runtime.engines.sadtalker.checkpoint import (
    CheckpointError,
    check_no_stray_keys,
    load_strict,
    network_slice,
    read_safetensors,
)
from runtime.engines.sadtalker.networks import build_networks, load_networks
from runtime.errors import BackendUnavailable

from testkit.sadtalker_checkpoints import UPSTREAM_FACERENDER, random_models_dir, upstream_pose_config

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def official():
    return read_safetensors(random_models_dir() / "sadtalker" / "SadTalker_V0.0.2_256.safetensors")


@pytest.mark.slow  # writes and loads two full random checkpoints
@pytest.mark.parametrize("kind", ["full", "crop"])
def test_random_checkpoints_load_strictly(kind):
    nets = load_networks(random_models_dir() / "sadtalker", 256, kind)
    assert nets.mapping.first[0].in_channels == (73 if kind == "full" else 70)


def test_a_missing_tensor_is_named(official):
    state = network_slice(official, "kp_extractor")
    del state["kp.weight"]
    with pytest.raises(CheckpointError, match=r"missing kp\.weight"):
        load_strict(build_networks(256, "full").keypoint_detector, state, "test")


def test_an_unexpected_tensor_is_named(official):
    state = network_slice(official, "audio2exp")
    state["mapping2.weight"] = torch.zeros(64, 30)
    with pytest.raises(CheckpointError, match=r"unexpected mapping2\.weight"):
        load_strict(build_networks(256, "full").audio2exp, state, "test")


def test_a_wrong_shape_is_named(official):
    state = network_slice(official, "face_3drecon")
    state["final_layers.1.weight"] = torch.zeros(63, 2048, 1, 1)
    with pytest.raises(CheckpointError, match=r"final_layers\.1\.weight: file \(63, 2048, 1, 1\)"):
        load_strict(build_networks(256, "full").recon, state, "test")


def test_the_official_layout_is_checked(official):
    check_no_stray_keys(official, "file")
    with pytest.raises(CheckpointError, match="outside the known networks"):
        check_no_stray_keys({**official, "he_estimator.fc_yaw.weight": torch.zeros(1)}, "file")
    without_discriminator = {k: v for k, v in official.items() if not k.startswith("audio2pose.netD_motion.")}
    with pytest.raises(CheckpointError, match="netD_motion"):
        check_no_stray_keys(without_discriminator, "file")


def test_spectral_norm_folds_to_weight_over_sigma():
    weight = torch.randn(8, 4, 3, 3)
    u, v = torch.nn.functional.normalize(torch.randn(8), dim=0), torch.nn.functional.normalize(torch.randn(36), dim=0)
    folded = fold_spectral_norm({"c.weight_orig": weight, "c.weight_u": u, "c.weight_v": v, "c.bias": torch.ones(8)})
    sigma = u @ (weight.reshape(8, -1) @ v)
    assert set(folded) == {"c.weight", "c.bias"}
    assert ((folded["c.weight"] - weight / sigma).abs() / (weight / sigma).abs().max()).max() < 1e-5


def test_missing_weights_make_the_backend_unavailable(tmp_path):
    from runtime.models.sadtalker_model import SadTalkerBackend

    settings = load_settings(models_dir=tmp_path)
    with pytest.raises(BackendUnavailable) as error:
        SadTalkerBackend.load(settings, DeviceChoice("cpu", "test", True))
    message = str(error.value)
    assert "SadTalker_V0.0.2_256.safetensors" in message and "mapping_00109-model.pth.tar" in message
    assert "setup_sadtalker.sh" in message


def test_layout_matches_upstreams_own_state_dicts(official, upstream):
    """Key names and shapes equal the state dict of upstream's conversion wrapper
    (model2safetensor.py: kp_extractor, generator, audio2exp, audio2pose, face_3drecon)."""
    common = UPSTREAM_FACERENDER["common"]
    parts = {
        "kp_extractor": upstream.keypoint.KPDetector(**UPSTREAM_FACERENDER["kp"], **common),
        "generator": upstream.generator.OcclusionAwareSPADEGenerator(**UPSTREAM_FACERENDER["generator"], **common),
        "audio2exp": upstream.audio2exp.SimpleWrapperV2(),
        "audio2pose": upstream.audio2pose.Audio2Pose(upstream_pose_config(), None, device="cpu"),
        "face_3drecon": upstream.recon.define_net_recon(net_recon="resnet50", use_last_fc=False, init_path=""),
    }
    expected = {f"{prefix}.{k}": tuple(v.shape) for prefix, module in parts.items()
                for k, v in module.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in official.items()} == expected
