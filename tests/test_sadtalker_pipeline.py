"""The SadTalker pipeline around the networks: audio features, coefficient sequences, the
portrait crop and alignment, the MPS sampling path and the paste back."""
from __future__ import annotations

import importlib.util
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.engines import motion_field
from runtime.engines.sadtalker import alignment, audio_features, coefficients
from runtime.engines.sadtalker.networks import load_networks
from runtime.engines.batched_render import FaceBox, HostFrames
from runtime.engines.sadtalker.paste import paste_boxes, plan_paste

from testkit.sadtalker_checkpoints import import_upstream, missing_reference, random_models_dir, upstream_pose_config, upstream_slice

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def nets():
    return load_networks(random_models_dir() / "sadtalker", 256, "full")


def _speech(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 200 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


# ---- audio --------------------------------------------------------------------------------

def test_mel_spectrogram_matches_upstream():
    if import_upstream() is None:
        missing_reference("sadtalker-z")
    if importlib.util.find_spec("librosa") is None:
        missing_reference("librosa (upstream's audio module needs it)")
    from sadtalker.utils import audio as upstream_audio  # noqa: E402  (registered by import_upstream)

    wav = _speech(1.3)
    expected = upstream_audio.melspectrogram(wav).T
    np.testing.assert_allclose(audio_features.mel_spectrogram(wav), expected, atol=1e-4)


def test_mel_spectrogram_has_upstreams_shape_and_range():
    wav = _speech(2.0)
    mel = audio_features.mel_spectrogram(wav)
    assert mel.shape == (len(wav) // 200 + 1, 80)  # centred frames, hop 200
    assert mel.min() >= -4 and mel.max() <= 4
    silent = audio_features.mel_spectrogram(np.zeros(16000, dtype=np.float32))
    assert np.allclose(silent, -4)  # below min_level_db everywhere
    assert mel[:, 20:].mean() > silent.mean()  # speech band has energy


def test_frame_windows_follow_upstreams_indexing():
    mel = np.arange(100 * 80, dtype=np.float32).reshape(100, 80)
    windows = audio_features.frame_mel_windows(mel, 30)
    assert windows.shape == (30, 80, 16)
    for frame in (0, 1, 2, 17, 29):  # upstream: start = int(80 * (frame - 2) / 25), clamped
        start = int(80.0 * ((frame - 2) / 25.0))
        rows = [min(max(i, 0), 99) for i in range(start, start + 16)]
        np.testing.assert_array_equal(windows[frame], mel[rows].T)


def test_speech_windows_cover_exactly_the_requested_frames():
    windows = audio_features.speech_frame_windows(_speech(1.01), 26)
    assert windows.shape == (26, 80, 16)


# ---- coefficients --------------------------------------------------------------------------

def _queued_randn(queue):
    """A stand-in for upstream's `torch` module whose randn returns our latents in order."""
    proxy = types.SimpleNamespace(**{name: getattr(torch, name) for name in ("zeros", "cat", "Tensor")})
    proxy.randn = lambda *shape, **kw: queue.pop(0)
    return proxy


@pytest.mark.parametrize("frames", [10, pytest.param(40, marks=pytest.mark.slow), pytest.param(70, marks=pytest.mark.slow)])
def test_pose_sequence_matches_upstream_audio2pose_test(nets, upstream, frames):
    from safetensors.torch import load_file

    checkpoint = load_file(str(random_models_dir() / "sadtalker" / "SadTalker_V0.0.2_256.safetensors"))
    theirs = upstream.audio2pose.Audio2Pose(upstream_pose_config(), None, device="cpu")
    theirs.load_state_dict(upstream_slice(checkpoint, "audio2pose"))
    theirs.eval()
    g = torch.Generator().manual_seed(5)
    mels = torch.randn(frames, 80, 16, generator=g)
    source_pose = torch.randn(6, generator=g) * 0.1

    ours = coefficients.predict_pose(nets.audio2pose, mels, source_pose, 3, torch.Generator().manual_seed(9))
    windows = math.ceil((frames - 1) / 32)
    latents = torch.randn(windows, 64, generator=torch.Generator().manual_seed(9))
    original = upstream.audio2pose.torch
    upstream.audio2pose.torch = _queued_randn([latents[i:i + 1] for i in range(windows)])
    try:
        with torch.no_grad():
            expected = theirs.test({"ref": source_pose.view(1, 1, 6), "class": torch.LongTensor([3]),
                                    "indiv_mels": mels.view(1, frames, 1, 80, 16), "num_frames": frames})
    finally:
        upstream.audio2pose.torch = original
    assert ours.shape == (frames, 6)
    assert (ours - expected["pose_pred"][0]).abs().max() < 1e-4


def test_expression_sequence_matches_upstream_audio2exp_test(nets, upstream):
    import importlib

    from safetensors.torch import load_file

    checkpoint = load_file(str(random_models_dir() / "sadtalker" / "SadTalker_V0.0.2_256.safetensors"))
    net = upstream.audio2exp.SimpleWrapperV2()
    net.load_state_dict(upstream_slice(checkpoint, "audio2exp"))
    wrapper = importlib.import_module("sadtalker.audio2exp_models.audio2exp").Audio2Exp(net.eval(), None, "cpu")
    g = torch.Generator().manual_seed(6)
    frames = 23
    mels = torch.randn(frames, 80, 16, generator=g)
    source = torch.randn(70, generator=g) * 0.2
    blink = torch.rand(frames, generator=g)
    with torch.no_grad():
        expected = wrapper.test({"indiv_mels": mels.view(1, frames, 1, 80, 16),
                                 "ref": source.view(1, 1, 70).expand(1, frames, 70),
                                 "ratio_gt": blink.view(1, frames, 1)})["exp_coeff_pred"][0]
    ours = coefficients.predict_expression(nets.audio2exp, mels, source[:64], blink)
    assert (ours - expected).abs().max() < 1e-4


@pytest.mark.slow
def test_motion_coefficients_options(nets):
    mels = audio_features.speech_frame_windows(_speech(1.2), 30)
    source = np.random.default_rng(0).normal(size=73).astype(np.float32) * 0.1
    moving = coefficients.motion_coefficients(nets.audio2exp, nets.audio2pose, mels, source,
                                              coefficients.MotionRequest(pose_style=5), torch.device("cpu"))
    assert moving.shape == (30, 73)
    np.testing.assert_array_equal(moving[:, 70:], np.repeat(source[None, 70:], 30, 0))  # crop params
    assert np.abs(moving[1:, 64:70] - source[64:70]).max() > 0  # the head moves
    still = coefficients.motion_coefficients(nets.audio2exp, nets.audio2pose, mels, source,
                                             coefficients.MotionRequest(pose_style=5, still=True),
                                             torch.device("cpu"))
    np.testing.assert_array_equal(still[:, 64:], np.repeat(source[None, 64:], 30, 0))
    doubled = coefficients.motion_coefficients(nets.audio2exp, nets.audio2pose, mels, source,
                                               coefficients.MotionRequest(pose_style=5, still=True,
                                                                          expression_scale=2.0),
                                               torch.device("cpu"))
    np.testing.assert_allclose(doubled[:, :64], 2 * still[:, :64], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pose_style"):
        coefficients.motion_coefficients(nets.audio2exp, nets.audio2pose, mels, source,
                                         coefficients.MotionRequest(pose_style=46), torch.device("cpu"))


def test_blinks_are_reproducible_and_shaped_like_upstreams():
    ratio = coefficients.blink_ratios(200, np.random.default_rng(1))
    np.testing.assert_array_equal(ratio, coefficients.blink_ratios(200, np.random.default_rng(1)))
    assert ratio.max() == 1.0 and (ratio > 0).sum() % 5 == 0
    assert not coefficients.blink_ratios(20, np.random.default_rng(1)).any()
    assert coefficients.blink_ratios(21, np.random.default_rng(1)).shape == (21,)


def test_coefficient_windows_and_resampling():
    coeffs = np.arange(5 * 73, dtype=np.float32).reshape(5, 73)
    windows = coefficients.coefficient_windows(coeffs, 70)
    assert windows.shape == (5, 70, 27)
    np.testing.assert_array_equal(windows[0, :, 0], coeffs[0, :70])  # clamped at the start
    np.testing.assert_array_equal(windows[2, :, 13], coeffs[2, :70])  # centre is the frame itself
    np.testing.assert_array_equal(windows[2, :, 14], coeffs[3, :70])
    halved = coefficients.resample_frames(coeffs, 25, 12.5, 3)
    np.testing.assert_allclose(halved, coeffs[[0, 2, 4]])
    doubled = coefficients.resample_frames(coeffs, 25, 50, 3)
    np.testing.assert_allclose(doubled[1], (coeffs[0] + coeffs[1]) / 2)


# ---- portrait geometry ---------------------------------------------------------------------

def test_crop_and_recon_alignment_on_a_real_portrait(astronaut, face_locator):
    points = face_locator.locate(astronaut).points
    crop = alignment.face_crop(points, 256)
    x0, y0, x1, y1 = crop.box()
    face = points[[33, 263, 61, 291, 1]]
    assert (face[:, 0] > x0).all() and (face[:, 0] < x1).all() and (face[:, 1] > y0).all() and (face[:, 1] < y1).all()
    assert 2.5 < crop.side / np.linalg.norm(points[33] - points[263]) < 5  # FFHQ-like framing
    image = crop.crop(astronaut)
    assert image.shape == (256, 256, 3)
    five = crop.points_to_crop(alignment.five_points(points))
    aligned = alignment.align_for_recon(image, five)
    assert aligned.image.shape == (224, 224, 3)
    # The recon crop puts the face where the reference landmarks sit (102 px per unit, centred).
    scale, tx, ty = aligned.crop_params
    assert 0.5 < scale < 2.0 and 0 < tx < 256 and 0 < ty < 256
    assert aligned.image[80:150, 80:150].std() > 10  # a face, not the black border


# ---- devices and paste ---------------------------------------------------------------------

def test_mps_sampling_path_equals_grid_sample():
    g = torch.Generator().manual_seed(3)
    volume = torch.randn(2, 4, 5, 6, 7, generator=g)
    grid = torch.rand(2, 3, 6, 7, 3, generator=g) * 2.6 - 1.3  # includes points outside
    expected = F.grid_sample(volume, grid, align_corners=False)
    assert (motion_field.grid_sample_3d_via_2d(volume, grid) - expected).abs().max() < 1e-5


def test_paste_blends_the_face_into_the_portrait():
    portrait = np.full((100, 120, 3), 40, dtype=np.uint8)
    crop = alignment.FaceCrop(center=(60.0, 45.0), side=60.0, size=32)
    plan = plan_paste(portrait, crop, torch.device("cpu"), torch.float32)
    boxes = paste_boxes(torch.ones(2, 3, 32, 32), plan)
    frames = list(HostFrames(torch.device("cpu")).frames(iter([(boxes, 2)]), FaceBox(portrait, plan.region)))
    assert len(frames) == 2 and frames[0].shape == (100, 120, 3)
    assert all((frame[45, 60] == 255).all() for frame in frames)  # crop centre: the rendered face
    assert (frames[0][5, 5] == 40).all() and (frames[1][95, 115] == 40).all()  # outside: untouched
    assert 40 < frames[0][45, 32, 0] < 255  # near the crop border: blended


@pytest.mark.slow
def test_mps_adapted_networks_equal_the_originals(nets):
    """The MPS fast paths (Conv3d as 2D convs, frozen BatchNorm3d), checked on the CPU on every
    3D part of the renderer (at half resolution, to keep the test quick)."""
    import copy

    from runtime.engines.sadtalker.mps import adapt_for_mps

    g = torch.Generator().manual_seed(11)
    generator = nets.generator
    adapted = adapt_for_mps(copy.deepcopy(generator))
    assert not any(isinstance(m, (torch.nn.Conv3d, torch.nn.BatchNorm3d)) for m in adapted.modules())
    volume = torch.randn(1, 32, 16, 32, 32, generator=g)
    kp_source = torch.rand(1, 15, 3, generator=g) * 1.6 - 0.8
    kp_driving = kp_source + torch.randn(1, 15, 3, generator=g) * 0.05
    image = torch.rand(1, 3, 128, 128, generator=g)
    with torch.inference_mode():
        assert (adapted.resblocks_3d(volume) - generator.resblocks_3d(volume)).abs().max() < 1e-4
        compressed = generator.dense_motion_network.compress_source(volume)
        assert (adapted.dense_motion_network.compress_source(volume) - compressed).abs().max() < 1e-5
        for ours, theirs in zip(adapted.dense_motion_network(compressed, kp_driving, kp_source),
                                generator.dense_motion_network(compressed, kp_driving, kp_source)):
            assert (ours - theirs).abs().max() < 1e-4
        detector = adapt_for_mps(copy.deepcopy(nets.keypoint_detector))
        assert (detector(image) - nets.keypoint_detector(image)).abs().max() < 1e-4


@pytest.mark.slow
def test_cuda_rewrites_of_the_dense_motion_network_change_nothing_but_rounding(nets):
    """What the renderer applies on CUDA (folded norms, low-resolution up-block convs, spectral
    mask conv, occlusion taps: LivePortrait's rewrites of the same network), here in fp32 on the CPU."""
    import copy

    from runtime.engines.sadtalker.renderer import rewrite_dense_motion

    g = torch.Generator().manual_seed(12)
    plain = nets.generator.dense_motion_network
    rewritten = copy.deepcopy(plain)
    rewrite_dense_motion(rewritten, 256, spectral_dtype=torch.float32)
    volume = torch.randn(1, 32, 16, 64, 64, generator=g)
    kp_source = torch.rand(2, 15, 3, generator=g) * 1.6 - 0.8
    kp_driving = kp_source + torch.randn(2, 15, 3, generator=g) * 0.05
    with torch.inference_mode():
        compressed = plain.compress_source(volume)
        assert (rewritten.compress_source(volume) - compressed).abs().max() < 1e-5
        expected = plain(compressed, kp_driving, kp_source)
        got = rewritten(compressed, kp_driving, kp_source)
    for ours, theirs in zip(got, expected):
        assert theirs.std() > 1e-4
        assert (ours - theirs).abs().max() < 1e-4


@pytest.mark.slow  # bf16 convs on a CPU without bf16 units: ~30 s of CPU for one 256 px frame
def test_cpu_mixed_precision_stays_close_to_fp32(nets):
    """The CPU fast path (decoder and hourglass in bf16, sampling and keypoints in fp32) against
    fp32. Measured on these random weights: mean abs 4.3e-3 (about 1/255), max 3.3e-2."""
    import copy

    from runtime.engines.sadtalker.renderer import FaceRenderer

    g = torch.Generator().manual_seed(12)
    image = torch.rand(1, 3, 256, 256, generator=g)
    source_window = torch.randn(1, 73, 27, generator=g) * 0.3
    target = source_window + torch.randn(1, 73, 27, generator=g) * 0.1
    outputs = []
    for conv_dtype in (None, torch.bfloat16):
        renderer = FaceRenderer(copy.deepcopy(nets), torch.device("cpu"), torch.float32, conv_dtype=conv_dtype)
        outputs.append(renderer.render_batch(renderer.prepare_source(image, source_window), target))
    error = (outputs[1] - outputs[0]).abs()
    assert outputs[0].std() > 1e-2
    assert error.mean().item() < 8e-3, error.mean().item()
    assert error.max().item() < 8e-2, error.max().item()
