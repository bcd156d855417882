"""Our SadTalker networks against upstream's (PyPI `sadtalker-z`, installed --no-deps) with the
same random weights: each network must match within 1e-3 (fp32, CPU).

Upstream's networks are built from the yaml values (carried in our config) and loaded the way
upstream loads the official files (`load_x_from_safetensor` + strict `load_state_dict`), so
these tests also prove that our random checkpoints have the official layout.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from runtime.engines.sadtalker import motion
from runtime.engines.sadtalker.checkpoint import read_mapping_checkpoint, read_safetensors
from runtime.engines.sadtalker.networks import load_networks
from testkit.sadtalker_checkpoints import (
    UPSTREAM_FACERENDER,
    random_models_dir,
    upstream_face_renderer,
    upstream_pose_config,
    upstream_slice,
)

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def sadtalker_models_dir():
    return random_models_dir()


@pytest.fixture(scope="module")
def official_files(sadtalker_models_dir):
    folder = sadtalker_models_dir / "sadtalker"
    return SimpleNamespace(
        safetensors=read_safetensors(folder / "SadTalker_V0.0.2_256.safetensors"),
        mapping_full=read_mapping_checkpoint(folder / "mapping_00109-model.pth.tar"),
        mapping_crop=read_mapping_checkpoint(folder / "mapping_00229-model.pth.tar"))


@pytest.fixture(scope="module")
def ours(sadtalker_models_dir):
    return load_networks(sadtalker_models_dir / "sadtalker", 256, "full")


def _close(ours_out: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours_out.shape == theirs.shape
    assert torch.isfinite(theirs).all()
    assert theirs.abs().max() > 0  # a dead network would compare equal trivially
    diff = (ours_out - theirs).abs().max().item()
    assert diff < TOLERANCE, f"max abs difference {diff}"


def _strict_upstream(module, state):
    module.load_state_dict(state)  # strict=True, as upstream loads them
    return module.eval()


def test_recon_net_matches_upstream(upstream, official_files, ours):
    theirs = _strict_upstream(
        upstream.recon.define_net_recon(net_recon="resnet50", use_last_fc=False, init_path=""),
        upstream_slice(official_files.safetensors, "face_3drecon"))
    image = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _close(ours.recon(image), theirs(image))


def test_audio2exp_matches_upstream(upstream, official_files, ours):
    theirs = _strict_upstream(upstream.audio2exp.SimpleWrapperV2(),
                              upstream_slice(official_files.safetensors, "audio2exp"))
    g = torch.Generator().manual_seed(2)
    frames = 6
    mels = torch.randn(frames, 1, 80, 16, generator=g)
    ref = torch.randn(1, frames, 64, generator=g)
    blink = torch.rand(1, frames, generator=g)
    with torch.no_grad():
        expected = theirs(mels, ref, blink)[0]  # upstream: (bs, T, 64)
        _close(ours.audio2exp(mels, ref[0], blink[0].unsqueeze(1)), expected)


def test_audio2pose_decoder_matches_upstream(upstream, official_files, ours):
    theirs = _strict_upstream(upstream.audio2pose.Audio2Pose(upstream_pose_config(), None, device="cpu"),
                              upstream_slice(official_files.safetensors, "audio2pose"))
    g = torch.Generator().manual_seed(3)
    window_mels = torch.randn(1, 32, 1, 80, 16, generator=g)
    z = torch.randn(1, 64, generator=g)
    ref_pose = torch.randn(1, 6, generator=g) * 0.1
    style = torch.tensor([7])
    with torch.no_grad():
        embedding = theirs.audio_encoder(window_mels)
        batch = theirs.netG.test({"z": z, "class": style, "ref": ref_pose, "audio_emb": embedding})
        _close(ours.audio2pose.decode_windows(z, style, ref_pose, window_mels), batch["pose_motion_pred"])


@pytest.mark.parametrize("kind", ["full", "crop"])
def test_mapping_net_matches_upstream(upstream, official_files, sadtalker_models_dir, kind):
    coeffs = 73 if kind == "full" else 70
    state = official_files.mapping_full if kind == "full" else official_files.mapping_crop
    theirs = _strict_upstream(upstream.mapping.MappingNet(coeffs, 1024, 3, 15, 66), state)
    nets = load_networks(sadtalker_models_dir / "sadtalker", 256, kind)
    window = torch.randn(3, coeffs, 27, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours_out, theirs_out = nets.mapping(window), theirs(window)
    for key in ("yaw", "pitch", "roll", "t", "exp"):
        _close(ours_out[key], theirs_out[key])


def test_keypoint_detector_matches_upstream(upstream, official_files, ours):
    params = {**UPSTREAM_FACERENDER["kp"], **UPSTREAM_FACERENDER["common"]}
    theirs = _strict_upstream(upstream.keypoint.KPDetector(**params),
                              upstream_slice(official_files.safetensors, "kp_extractor"))
    image = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _close(ours.keypoint_detector(image), theirs(image)["value"])


def test_keypoint_transformation_matches_upstream(upstream):
    g = torch.Generator().manual_seed(6)
    canonical = torch.rand(4, 15, 3, generator=g) * 2 - 1
    he = {k: torch.randn(4, 66, generator=g) for k in ("yaw", "pitch", "roll")}
    he.update(t=torch.randn(4, 3, generator=g) * 0.1, exp=torch.randn(4, 45, generator=g) * 0.05)
    expected = upstream.animation.keypoint_transformation({"value": canonical},
                                                          {k: v.clone() for k, v in he.items()})
    _close(motion.transform_keypoints(canonical, he), expected["value"])


def test_generator_matches_upstream(upstream, official_files, ours):
    params = {**UPSTREAM_FACERENDER["generator"], **UPSTREAM_FACERENDER["common"]}
    theirs = _strict_upstream(upstream.generator.OcclusionAwareSPADEGenerator(**params),
                              upstream_slice(official_files.safetensors, "generator"))
    g = torch.Generator().manual_seed(7)
    source = torch.rand(1, 3, 256, 256, generator=g)
    kp_source = torch.rand(1, 15, 3, generator=g) * 1.6 - 0.8
    kp_driving = kp_source + torch.randn(2, 15, 3, generator=g) * 0.05
    with torch.no_grad():
        expected = theirs(source.expand(2, -1, -1, -1), kp_source={"value": kp_source.expand(2, -1, -1)},
                          kp_driving={"value": kp_driving})["prediction"]
        # our batched path: one cached source encoding shared by both frames
        generator = copy.deepcopy(ours.generator)  # fused below: the module's fixture stays as loaded
        encoding = generator.encode_source(source)
        _close(generator.render(encoding, kp_source.expand(2, -1, -1), kp_driving), expected)
        generator.decoder.fuse()  # the fused SPADE path the engine runs: same arithmetic
        _close(generator.render(encoding, kp_source.expand(2, -1, -1), kp_driving), expected)


def test_face_renderer_matches_make_animation(upstream, sadtalker_models_dir, ours):
    """The whole renderer (mapping + keypoints + generator) against upstream's make_animation."""
    kp, gen, mapping = upstream_face_renderer(upstream, sadtalker_models_dir, "cpu")
    g = torch.Generator().manual_seed(8)
    frames = 2
    source = torch.rand(1, 3, 256, 256, generator=g)
    source_window = torch.randn(1, 73, 27, generator=g) * 0.3
    target_windows = source_window.unsqueeze(1) + torch.randn(1, frames, 73, 27, generator=g) * 0.3
    with torch.no_grad():
        expected = upstream.animation.make_animation(source, source_window, target_windows, gen, kp,
                                                     None, mapping)[0]
        from runtime.engines.sadtalker.renderer import FaceRenderer

        # FaceRenderer fuses and converts the networks in place: a copy keeps the module's fixture as loaded.
        renderer = FaceRenderer(copy.deepcopy(ours), device=torch.device("cpu"), dtype=torch.float32)
        prepared = renderer.prepare_source(source, source_window)
        got = renderer.render_batch(prepared, target_windows[0])
    _close(got, expected)
