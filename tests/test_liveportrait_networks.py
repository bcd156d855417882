"""Our LivePortrait networks against upstream's, network by network, on the same random weights.

The reference is PyPI's `mimic-head` (its `modules/` equal upstream LivePortrait's first
release), installed test-only with `pip install --no-deps mimic-head`; it needs only torch
and pyyaml to import its networks. Checkpoints come from the random official-layout helper.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from runtime.engines.liveportrait import checkpoints as ckpt
from runtime.engines.liveportrait.config import FEATURE_VOLUME
from runtime.engines.motion_field import grid_sample_3d_via_2d, warp_volume
from runtime.engines.liveportrait.keypoints import transform_keypoints

from testkit.liveportrait_checkpoints import shared_random_models_dir

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]

try:
    import mimic_head.modules  # noqa: F401
    import yaml
except ImportError:
    if os.environ.get("CI"):  # in CI the reference must be there: a skipped equivalence test proves nothing
        raise
    pytest.skip("test-only reference missing: pip install --no-deps mimic-head==0.1.5", allow_module_level=True)

TOLERANCE = 1e-3  # max abs difference, fp32 on cpu


@pytest.fixture(scope="module")
def models_dir() -> Path:
    return shared_random_models_dir(seed=0)


@pytest.fixture(scope="module")
def upstream_config() -> dict:
    import mimic_head

    with open(Path(mimic_head.__file__).parent / "config" / "models.yaml") as handle:
        return yaml.safe_load(handle)["model_params"]


def _upstream(name: str, config: dict, models_dir: Path):
    """Upstream's network built from upstream's models.yaml, loaded strictly from our random file."""
    from mimic_head.modules.appearance_feature_extractor import AppearanceFeatureExtractor
    from mimic_head.modules.motion_extractor import MotionExtractor
    from mimic_head.modules.spade_generator import SPADEDecoder
    from mimic_head.modules.warping_network import WarpingNetwork

    cls = {"appearance_feature_extractor": AppearanceFeatureExtractor, "motion_extractor": MotionExtractor,
           "warping_module": WarpingNetwork, "spade_generator": SPADEDecoder}[name]
    network = cls(**config[f"{name}_params"])
    state = torch.load(models_dir / "liveportrait" / ckpt.BASE_MODEL_FILES[name], map_location="cpu")
    network.load_state_dict(state, strict=True)
    return network.eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_random_checkpoints_have_upstream_key_sets(models_dir, upstream_config):
    for name, relative in ckpt.BASE_MODEL_FILES.items():
        ours = torch.load(models_dir / "liveportrait" / relative, map_location="cpu")
        theirs = _upstream(name, upstream_config, models_dir).state_dict()
        assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}, name
    from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork

    retargeting = torch.load(models_dir / "liveportrait" / ckpt.RETARGETING_FILE, map_location="cpu")
    mlp_config = upstream_config["stitching_retargeting_module_params"]
    for part, config_name in (("retarget_shoulder", "stitching"), ("retarget_mouth", "lip"), ("retarget_eye", "eye")):
        reference = StitchingRetargetingNetwork(**mlp_config[config_name]).state_dict()
        assert {k.removeprefix("module."): v.shape for k, v in retargeting[part].items()} == \
               {k: v.shape for k, v in reference.items()}


def test_appearance_feature_extractor_matches_upstream(models_dir, upstream_config):
    ours = ckpt.load_base_model(models_dir / "liveportrait", "appearance_feature_extractor")
    theirs = _upstream("appearance_feature_extractor", upstream_config, models_dir)
    image = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(image)
        assert _max_diff(ours(image), expected) < TOLERANCE


def test_motion_extractor_matches_upstream(models_dir, upstream_config):
    ours = ckpt.load_base_model(models_dir / "liveportrait", "motion_extractor")
    theirs = _upstream("motion_extractor", upstream_config, models_dir)
    image = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = theirs(image), ours(image)
    for key in ("kp", "pitch", "yaw", "roll", "t", "exp", "scale"):
        assert _max_diff(getattr(got, key), expected[key]) < TOLERANCE, key


def _keypoint_pair(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    source = 0.6 * (torch.rand(batch, 21, 3, generator=generator) - 0.5)
    driving = source + 0.05 * torch.randn(batch, 21, 3, generator=generator)
    return source, driving


@pytest.mark.parametrize("variant", ["as-loaded", "batchnorm-folded", "spectral-mask-conv", "cuda-defaults"])
def test_warping_module_matches_upstream(models_dir, upstream_config, variant):
    ours = ckpt.load_base_model(models_dir / "liveportrait", "warping_module")
    motion = ours.dense_motion_network
    if variant != "as-loaded":
        ours.fold_norm()
    if variant == "spectral-mask-conv":
        motion.align_channels()
        motion.use_spectral_mask_conv(FEATURE_VOLUME)
    if variant == "cuda-defaults":  # every rewrite the engine runs on CUDA (conv_rewrites.py), here in fp32
        motion.align_channels()
        motion.hourglass.rewrite_3d_convs(low_res_upsample=True, split_decoder_conv=True)
        motion.use_spectral_mask_conv(FEATURE_VOLUME)
        motion.use_occlusion_taps()
    theirs = _upstream("warping_module", upstream_config, models_dir)
    feature = torch.randn(2, 32, 16, 64, 64, generator=torch.Generator().manual_seed(3))
    kp_source, kp_driving = _keypoint_pair(2, seed=4)
    with torch.no_grad():
        expected = theirs(feature, kp_driving=kp_driving, kp_source=kp_source)["out"]
        got = ours(feature, kp_driving, kp_source)
    assert expected.abs().max() > 1e-2  # the comparison must not be between two near-zero tensors
    assert _max_diff(got, expected) < TOLERANCE


@pytest.mark.parametrize("fused", [False, True, "low-res-upsample"], ids=["as-loaded", "fused", "low-res-upsample"])
def test_spade_generator_matches_upstream(models_dir, upstream_config, fused):
    ours = ckpt.load_base_model(models_dir / "liveportrait", "spade_generator")
    if fused:
        ours.fuse(low_res_upsample=fused == "low-res-upsample")
    theirs = _upstream("spade_generator", upstream_config, models_dir)
    feature = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = theirs(feature=feature)
        got = ours(feature)
    assert got.shape == (1, 3, 512, 512)
    assert expected.std() > 1e-3
    assert _max_diff(got, expected) < TOLERANCE


def test_stitching_and_retargeting_match_upstream(models_dir, upstream_config):
    from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork

    ours = ckpt.load_retargeting(models_dir / "liveportrait")
    checkpoint = torch.load(models_dir / "liveportrait" / ckpt.RETARGETING_FILE, map_location="cpu")
    mlp_config = upstream_config["stitching_retargeting_module_params"]
    generator = torch.Generator().manual_seed(6)
    for part, name in (("retarget_shoulder", "stitching"), ("retarget_mouth", "lip"), ("retarget_eye", "eye")):
        theirs = StitchingRetargetingNetwork(**mlp_config[name])
        theirs.load_state_dict({k.removeprefix("module."): v for k, v in checkpoint[part].items()}, strict=True)
        x = torch.randn(3, mlp_config[name]["input_size"], generator=generator)
        with torch.no_grad():
            assert _max_diff(getattr(ours, name)(x), theirs.eval()(x)) < TOLERANCE, name


def test_keypoint_transform_matches_upstream(models_dir):
    """Eqn. 2, x = s * (x_c R + exp) + t, with pose from the 66 bins, as upstream's wrapper computes it."""
    from mimic_head.utils.camera import get_rotation_matrix, headpose_pred_to_degree

    generator = torch.Generator().manual_seed(7)
    kp, exp = torch.randn(2, 63, generator=generator), 0.1 * torch.randn(2, 63, generator=generator)
    pitch, yaw, roll = (torch.randn(2, 66, generator=generator) for _ in range(3))
    t, scale = torch.randn(2, 3, generator=generator), 1 + 0.1 * torch.rand(2, 1, generator=generator)
    rotation = get_rotation_matrix(headpose_pred_to_degree(pitch), headpose_pred_to_degree(yaw),
                                   headpose_pred_to_degree(roll))
    expected = (kp.view(2, 21, 3) @ rotation + exp.view(2, 21, 3)) * scale[..., None]
    expected[:, :, :2] += t[:, None, :2]
    from runtime.engines.liveportrait.keypoints import pose_degrees, rotation_matrix

    got = transform_keypoints(kp.view(2, 21, 3), rotation_matrix(pose_degrees(pitch), pose_degrees(yaw),
                              pose_degrees(roll)), exp.view(2, 21, 3), scale, t)
    assert _max_diff(got, expected) < 1e-5


def test_gather_grid_sample_equals_torch():
    """The mps path of 3-D grid sampling (shared with SadTalker), checked on the cpu against torch's kernel."""
    generator = torch.Generator().manual_seed(8)
    volume = torch.randn(2, 3, 5, 6, 7, generator=generator)
    grid = 1.2 * (2 * torch.rand(2, 4, 5, 6, 3, generator=generator) - 1)  # some points outside
    expected = torch.nn.functional.grid_sample(volume, grid, align_corners=False)
    assert _max_diff(grid_sample_3d_via_2d(volume, grid), expected) < 1e-5


@pytest.mark.parametrize("volumes", [1, 2, 6])
def test_warp_volume_equals_one_grid_sample_per_grid(volumes):
    """Grids stacked on the depth axis of their (shared) volume sample what separate calls would."""
    generator = torch.Generator().manual_seed(9)
    volume = torch.randn(volumes, 3, 5, 6, 7, generator=generator)
    grid = 1.2 * (2 * torch.rand(6, 4, 5, 6, 3, generator=generator) - 1)
    owner = torch.arange(6) // (6 // volumes)
    expected = torch.cat([torch.nn.functional.grid_sample(volume[owner[i]][None], grid[i][None], align_corners=False)
                          for i in range(6)])
    assert _max_diff(warp_volume(volume, grid), expected) < 1e-6
    with pytest.raises(ValueError, match="split evenly"):
        warp_volume(torch.randn(4, 3, 5, 6, 7), grid)


def test_warping_module_samples_a_shared_volume_like_a_repeated_one(models_dir):
    """The engine passes one portrait's volume for a whole batch (batch 1, not expanded)."""
    ours = ckpt.load_base_model(models_dir / "liveportrait", "warping_module")
    feature = torch.randn(1, 32, 16, 64, 64, generator=torch.Generator().manual_seed(5))
    kp_source, kp_driving = _keypoint_pair(3, seed=6)
    with torch.no_grad():
        shared = ours(feature, kp_driving, kp_source)
        repeated = ours(feature.expand(3, -1, -1, -1, -1), kp_driving, kp_source)
    assert shared.shape == (3, 256, 64, 64)
    assert _max_diff(shared, repeated) < 1e-5
