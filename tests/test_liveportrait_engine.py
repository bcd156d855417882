"""The LivePortrait pipeline around the networks, on the cpu: crop, ratios, driving, paste-back."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from runtime.engines.liveportrait import crop as crop_ops
from runtime.engines.liveportrait.checkpoints import load_retargeting
from runtime.engines.liveportrait.driving import DrivingTargets, driving_keypoints, driving_targets
from runtime.engines.liveportrait.engine import LivePortraitEngine
from runtime.engines.liveportrait.keypoints import SourceMotion
from runtime.media.audio import Speech
from runtime.media.speech_motion import face_motion

from testkit.liveportrait_checkpoints import EVERY_REWRITE, shared_random_models_dir

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def face_points(astronaut, face_locator) -> np.ndarray:
    return face_locator.locate(astronaut).points


def _as_insightface_106(points: np.ndarray) -> np.ndarray:
    """A 106-point array upstream's crop code reads: its eye-centre and mouth-corner slots hold our
    eye and mouth points, every other slot one of our crop-box points (so the box is ours)."""
    pt106 = np.zeros((106, 2), dtype=np.float32)
    special = {33: 33, 35: 133, 40: 159, 39: 145, 87: 263, 89: 362, 94: 386, 93: 374, 52: 61, 61: 291}
    free = [i for i in range(106) if i not in special]
    for slot, index in zip(free, (crop_ops.CROP_POINTS * 2)[: len(free)]):
        pt106[slot] = points[index]
    for slot, index in special.items():
        pt106[slot] = points[index]
    return pt106


def test_crop_equals_upstreams_crop_of_the_same_points(face_points):
    try:
        from mimic_head.utils import crop as upstream_crop
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("test-only reference missing: pip install --no-deps mimic-head==0.1.5")
    pt106 = _as_insightface_106(face_points)
    original_to_crop, _ = upstream_crop._estimate_similar_transform_from_pts(
        pt106, dsize=512, scale=2.3, vx_ratio=0.0, vy_ratio=-0.125, flag_do_rot=True)
    ours = crop_ops.crop_transform(face_points)
    assert np.abs(ours.original_to_crop[:2] - original_to_crop).max() < 1e-2


def test_crop_frames_the_face_upright_with_forehead_room(astronaut, face_points):
    transform = crop_ops.crop_transform(face_points)
    in_crop = np.c_[face_points, np.ones(len(face_points))] @ transform.original_to_crop[:2].T
    eye_centre = in_crop[[33, 133, 159, 145, 263, 362, 386, 374]].mean(0)
    mouth_centre = in_crop[[61, 291]].mean(0)
    assert abs(eye_centre[0] - mouth_centre[0]) < 0.5  # rotation-aligned: eyes-to-mouth axis vertical
    assert 180 < in_crop[:, 0].mean() < 330  # centred horizontally
    chin_y, brow_y = in_crop[152, 1], in_crop[105, 1]
    assert brow_y > 120 and chin_y < 450  # room above the brows for the forehead, chin inside
    assert crop_ops.warp_to_crop(astronaut, transform).shape == (512, 512, 3)


def test_open_ratios_in_upstreams_sense(face_points):
    eyes = crop_ops.eye_open_ratios(face_points)
    assert eyes.shape == (2,) and np.all((eyes > 0.15) & (eyes < 0.6))  # open eyes
    closed = face_points.copy()
    closed[[145, 374]] = closed[[159, 386]]  # lower lids onto the upper ones
    assert np.all(crop_ops.eye_open_ratios(closed) < 0.01)
    assert 0.0 < crop_ops.lip_open_ratio(face_points) < 0.6  # the astronaut smiles, teeth showing


def test_driving_keypoints_follow_the_lip_target():
    retargeting = load_retargeting(shared_random_models_dir(seed=0) / "liveportrait")
    generator = torch.Generator().manual_seed(0)
    source = SourceMotion(canonical=0.2 * torch.randn(1, 21, 3, generator=generator), pitch=torch.zeros(1),
                          yaw=torch.zeros(1), roll=torch.zeros(1), translation=torch.zeros(1, 3),
                          expression=torch.zeros(1, 21, 3), scale=torch.ones(1, 1))
    frames = 4
    targets = DrivingTargets(lip_ratio=np.array([0.0, 0.1, 0.3, 0.45], np.float32),
                             eye_ratio=np.full(frames, 0.3, np.float32), pitch=np.zeros(frames, np.float32),
                             yaw=np.zeros(frames, np.float32), roll=np.zeros(frames, np.float32))
    kp = driving_keypoints(retargeting, source, source.keypoints(), 0.05, np.array([0.3, 0.3], np.float32), targets)
    assert kp.shape == (frames, 21, 3) and torch.isfinite(kp).all()
    assert (kp[1:] - kp[:1]).abs().amax(dim=(1, 2)).min() > 0  # each lip target moves the keypoints


def test_speech_drives_lips_blinks_and_head():
    sample_rate = 16000
    t = np.arange(2 * sample_rate) / sample_rate
    speech = Speech((0.4 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32),
                    sample_rate)
    targets = driving_targets(face_motion(speech, 25), np.array([0.32, 0.3], np.float32))
    assert len(targets.lip_ratio) == 50
    assert targets.lip_ratio.max() > 0.15 and targets.lip_ratio.min() < 0.05  # opens on sound, closes in gaps
    assert np.all(targets.eye_ratio <= 0.32)
    still = driving_targets(face_motion(speech, 25), np.array([0.32, 0.3], np.float32), still=True)
    assert np.all(still.pitch == 0) and np.all(still.yaw == 0)


def test_paste_back_puts_the_crop_where_it_came_from(astronaut, face_points):
    """Pasting the unchanged crop back must reproduce the portrait; outside the box nothing changes."""
    engine = LivePortraitEngine.__new__(LivePortraitEngine)  # paste-back needs no networks
    engine.device = torch.device("cpu")
    engine._crop_mask = crop_ops.feather_mask()
    transform = crop_ops.crop_transform(face_points)
    paste = engine._paste_back(astronaut, transform)
    source = type("Source", (), {"paste": paste, "portrait": astronaut})()
    crop = torch.from_numpy(crop_ops.warp_to_crop(astronaut, transform)).permute(2, 0, 1)[None].float() / 255
    box = engine._compose_box(source, crop)[0].numpy()
    x0, y0, x1, y1 = paste.box
    frame = astronaut.copy()
    frame[y0:y1, x0:x1] = box
    difference = np.abs(frame.astype(int) - astronaut.astype(int))
    face = (slice(int(face_points[:, 1].min()), int(face_points[:, 1].max())),
            slice(int(face_points[:, 0].min()), int(face_points[:, 0].max())))
    assert difference[face].mean() < 6  # resampled twice, otherwise the same pixels
    assert difference.sum() == difference[y0:y1, x0:x1].sum()


def test_backend_without_checkpoints_names_the_missing_files(tmp_path):
    from runtime.config import load_settings
    from runtime.device import DeviceChoice
    from runtime.errors import BackendUnavailable
    from runtime.models.liveportrait_model import LivePortraitBackend

    settings = load_settings(models_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="spade_generator.pth") as raised:
        LivePortraitBackend.load(settings, DeviceChoice("cpu", "test", True))
    assert "setup_liveportrait.sh" in str(raised.value)


def test_a_checkpoint_that_does_not_fit_is_refused_by_name(tmp_path):
    from runtime.engines.liveportrait.checkpoints import CheckpointError, load_base_model

    source = shared_random_models_dir(seed=0) / "liveportrait"
    state = torch.load(source / "base_models/appearance_feature_extractor.pth", map_location="cpu")
    del state["second.bias"]
    broken = tmp_path / "base_models/appearance_feature_extractor.pth"
    broken.parent.mkdir(parents=True)
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match=r"(?s)appearance_feature_extractor.pth.*Missing.*second.bias"):
        load_base_model(tmp_path, "appearance_feature_extractor")


def _random_render_inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    feature = torch.randn(1, 32, 16, 64, 64, generator=generator)
    kp_source = 0.3 * torch.randn(1, 21, 3, generator=generator)
    kp_driving = kp_source + 0.05 * torch.randn(batch, 21, 3, generator=generator)
    return feature, kp_driving, kp_source


@pytest.mark.slow
def test_aligned_channels_warp_exactly_like_the_original():
    """Zero-padding W's 110/142-channel tensors to 112/144 must not change a single value."""
    from runtime.engines.liveportrait.checkpoints import load_base_model

    warping = load_base_model(shared_random_models_dir(seed=0) / "liveportrait", "warping_module")
    warping.fold_norm()
    aligned = load_base_model(shared_random_models_dir(seed=0) / "liveportrait", "warping_module")
    aligned.fold_norm()
    aligned.dense_motion_network.align_channels()
    motion = aligned.dense_motion_network
    assert motion.hourglass.encoder.down_blocks[0].conv.in_channels == 112
    assert motion.mask.in_channels == 144 and motion.occlusion.in_channels == 144 * 16
    feature, kp_driving, kp_source = _random_render_inputs(2)
    with torch.no_grad():
        expected = warping(feature.expand(2, -1, -1, -1, -1), kp_driving, kp_source.expand(2, -1, -1))
        got = aligned(feature.expand(2, -1, -1, -1, -1), kp_driving, kp_source.expand(2, -1, -1))
    assert expected.abs().max() > 1e-2
    assert (got - expected).abs().max().item() <= 1e-6



@pytest.mark.slow
def test_every_exact_rewrite_renders_like_the_plain_engine():
    """The CUDA speed options (conv_rewrites.py) together, in fp32 on the CPU: same crops."""
    from runtime.engines.liveportrait.checkpoints import load_networks

    directory = shared_random_models_dir(seed=0) / "liveportrait"
    plain = LivePortraitEngine(load_networks(directory), torch.device("cpu"), batch_size=2)
    rewritten = LivePortraitEngine(load_networks(directory), torch.device("cpu"), batch_size=2, **EVERY_REWRITE)
    assert not any(plain.options.values()) and all(rewritten.options[name] for name in EVERY_REWRITE)
    feature, kp_driving, kp_source = _random_render_inputs(2)
    with torch.no_grad():
        expected = plain._render_batch(feature, kp_driving, kp_source)
        got = rewritten._render_batch(feature, kp_driving, kp_source)
    assert expected.std() > 1e-3
    assert (got - expected).abs().max().item() <= 1e-5


def test_speed_options_default_per_device_and_unknown_ones_are_refused():
    from runtime.engines.liveportrait.checkpoints import load_networks
    from runtime.engines.liveportrait.engine import CUDA_DEFAULTS

    directory = shared_random_models_dir(seed=0) / "liveportrait"
    engine = LivePortraitEngine(load_networks(directory), torch.device("cpu"), occlusion_taps=True, compile=None)
    assert set(engine.options) == set(CUDA_DEFAULTS)
    assert engine.options["occlusion_taps"] and not any(v for k, v in engine.options.items() if k != "occlusion_taps")
    with pytest.raises(TypeError, match="spectral_mask_convs"):  # refused before the networks are touched
        LivePortraitEngine(engine.networks, torch.device("cpu"), spectral_mask_convs=True)


def test_aligned_channels_needs_folded_norms():
    from runtime.engines.liveportrait.warping_module import WarpingNetwork

    with pytest.raises(RuntimeError, match="fold_norm"):
        WarpingNetwork().dense_motion_network.align_channels()


@pytest.mark.slow
def test_compile_option_traces_w_and_g_as_one_graph_and_renders_like_eager(monkeypatch, tmp_path):
    """compile=True wires W + G through torch.compile (one graph: fullgraph would raise on a break),
    points inductor's cache at the given folder, compiles in warm_up, and renders what eager renders.
    Inductor's own code generation runs in the GPU test; here the compiled graph runs through
    the aot_eager backend (same trace and decompositions, no C++ build), which keeps this fast."""
    from runtime.engines.liveportrait.checkpoints import load_networks
    from runtime.engines.liveportrait.engine import warm_up

    real_compile = torch.compile
    compile_calls: list[dict] = []

    def compile_with_aot_eager(function, **options):
        compile_calls.append(options)
        return real_compile(function, **{**options, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_with_aot_eager)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before"))  # restored after the test
    directory = shared_random_models_dir(seed=0) / "liveportrait"
    eager = LivePortraitEngine(load_networks(directory), torch.device("cpu"), batch_size=1, **EVERY_REWRITE)
    compiled = LivePortraitEngine(load_networks(directory), torch.device("cpu"), batch_size=1, **EVERY_REWRITE,
                                  compile=True, compile_cache_dir=tmp_path / "inductor")
    assert compile_calls == [{"fullgraph": True, "dynamic": False}]
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "inductor").resolve())
    assert warm_up(compiled) > 0
    feature, kp_driving, kp_source = _random_render_inputs(1)
    with torch.no_grad():
        expected = eager._render_batch(feature, kp_driving, kp_source)
        got = compiled._render_batch(feature, kp_driving, kp_source)
    torch._dynamo.reset()
    assert expected.std() > 1e-3
    assert (got - expected).abs().max().item() <= 1e-5


def test_compile_problems_name_a_missing_compiler(monkeypatch, tmp_path):
    from runtime.engines.liveportrait.engine import compile_problems

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cc, gcc or clang
    assert any("C compiler" in problem for problem in compile_problems())


def test_backend_refuses_compile_it_cannot_do_by_name(monkeypatch):
    """LIVEPORTRAIT_COMPILE on a machine without Triton's build tools: a clear BackendUnavailable
    at load time, before any checkpoint is read, instead of a crash in the first warm-up."""
    from types import SimpleNamespace

    from runtime.device import DeviceChoice
    from runtime.engines.liveportrait import engine as engine_module
    from runtime.errors import BackendUnavailable
    from runtime.models.liveportrait_model import LivePortraitBackend

    monkeypatch.setattr(engine_module, "compile_problems", lambda: ["no C compiler (cc, gcc or clang, or $CC) on PATH"])
    settings = SimpleNamespace(models_dir=shared_random_models_dir(seed=0), min_face_side=48, liveportrait_compile=True,
                               liveportrait_compile_cache_dir=None)
    with pytest.raises(BackendUnavailable, match="no C compiler.*LIVEPORTRAIT_COMPILE=false"):
        LivePortraitBackend.load(settings, DeviceChoice("cuda", "test", True))


def test_default_compile_without_build_tools_renders_eagerly(monkeypatch, caplog):
    """Compiling is the CUDA default; where Triton cannot build, LivePortrait still loads, eagerly,
    and says so, rather than falling back to another backend."""
    from types import SimpleNamespace

    from runtime.device import DeviceChoice
    from runtime.engines.liveportrait import engine as engine_module
    from runtime.engines.liveportrait.checkpoints import CheckpointError
    from runtime.errors import BackendUnavailable
    from runtime.models.liveportrait_model import LivePortraitBackend

    asked: dict = {}

    def record_and_stop(*args, **options):
        asked.update(options)
        raise CheckpointError("stopped after choosing the options")  # a cpu cannot load onto cuda

    assert engine_module.CUDA_DEFAULTS["compile"] is True
    monkeypatch.setattr(engine_module, "compile_problems", lambda: ["no C compiler (cc, gcc or clang, or $CC) on PATH"])
    monkeypatch.setattr(engine_module.LivePortraitEngine, "load", record_and_stop)
    settings = SimpleNamespace(models_dir=shared_random_models_dir(seed=0), min_face_side=48, liveportrait_compile=None,
                               liveportrait_compile_cache_dir=None)
    with pytest.raises(BackendUnavailable, match="stopped after choosing"):
        LivePortraitBackend.load(settings, DeviceChoice("cuda", "test", True))
    assert asked["compile"] is False
    assert "renders eagerly" in caplog.text
