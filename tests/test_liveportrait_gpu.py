"""Half-precision rendering on CUDA against fp32 (skipped without a GPU).

Stated tolerance: on the 512x512 render in [0, 1], mean absolute error <= 2e-3 and maximum
<= 5e-2 for fp16 and bf16 alike (bf16's 8-bit mantissa dominates the maximum)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from runtime.engines.liveportrait import crop as crop_ops
from runtime.engines.liveportrait.checkpoints import load_networks
from runtime.engines.liveportrait.engine import CUDA_DEFAULTS, LivePortraitEngine, PreparedSource, warm_up
from runtime.engines.liveportrait.keypoints import SourceMotion

from testkit.liveportrait_checkpoints import EVERY_REWRITE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

MEAN_TOLERANCE = 2e-3
MAX_TOLERANCE = 5e-2


@pytest.fixture(scope="module")
def networks():
    from testkit.liveportrait_checkpoints import shared_random_models_dir

    return load_networks(shared_random_models_dir(seed=0) / "liveportrait")


def _render(networks, precision: str, **options) -> torch.Tensor:
    flags = {**{name: False for name in CUDA_DEFAULTS}, **options}  # each flag explicit: not CUDA_DEFAULTS
    engine = LivePortraitEngine(copy.deepcopy(networks), torch.device("cuda"), precision=precision, batch_size=4,
                                **flags)
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 32, 16, 64, 64, generator=generator).cuda()
    image = torch.rand(1, 3, 256, 256, generator=generator).cuda()
    with torch.no_grad():
        motion = SourceMotion.from_network(engine.networks.motion(image))
    transform = crop_ops.CropTransform(np.eye(3), np.eye(3))
    source = PreparedSource(portrait, transform, feature, motion, motion.keypoints(), 0.05,
                            np.array([0.3, 0.3], np.float32), engine._paste_back(portrait, transform))
    kp_driving = source.kp_source + 0.03 * torch.randn(4, 21, 3, generator=generator).cuda()
    if engine.options["cuda_graph"]:
        warm_up(engine)  # captures the CUDA graph the service replays
        assert type(engine._render_batch).__name__ == "CapturedBatch"
    crops = engine.render_crops(source, kp_driving).float()
    if engine.compiled:
        torch._dynamo.reset()  # the compiled graph holds the engine
    return crops


VARIANTS = {
    "fp16": ("fp16", {}),
    "bf16": ("bf16", {}),
    "fp16-every-rewrite": ("fp16", EVERY_REWRITE),
    "bf16-every-rewrite": ("bf16", EVERY_REWRITE),
    "fp16-defaults": ("fp16", CUDA_DEFAULTS),  # what the service runs: compiled, every default rewrite
}


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One inductor cache for the module: the second compile of the same graph is a cache hit."""
    return tmp_path_factory.mktemp("inductor")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_half_precision_render_matches_fp32(networks, variant, compile_cache):
    precision, options = VARIANTS[variant]
    if options.get("compile"):
        options = {**options, "compile_cache_dir": compile_cache}
    reference = _render(networks, "fp32")
    half = _render(networks, precision, **options)
    error = (half - reference).abs()
    print(f"{variant} vs fp32: mean abs {error.mean().item():.2e}, max abs {error.max().item():.2e}")
    assert reference.std() > 1e-3
    assert error.mean().item() <= MEAN_TOLERANCE, error.mean().item()
    assert error.max().item() <= MAX_TOLERANCE, error.max().item()


def test_compiled_render_matches_eager_at_the_same_precision(networks, compile_cache):
    """torch.compile changes only how the elementwise work is fused: same tolerance as above."""
    options = {**CUDA_DEFAULTS, "compile": False}
    eager = _render(networks, "fp16", **options)
    compiled = _render(networks, "fp16", **{**options, "compile": True}, compile_cache_dir=compile_cache)
    error = (compiled - eager).abs()
    print(f"compiled vs eager fp16: mean abs {error.mean().item():.2e}, max abs {error.max().item():.2e}")
    assert torch.isfinite(compiled).all()
    assert error.mean().item() <= MEAN_TOLERANCE, error.mean().item()
    assert error.max().item() <= MAX_TOLERANCE, error.max().item()


def _synthetic_source(engine: LivePortraitEngine, seed: int, size: tuple[int, int]) -> PreparedSource:
    """A prepared portrait of random content (feature volume and keypoints from M on a random
    crop), with an identity crop transform into a random portrait of `size` (H, W)."""
    rng = np.random.default_rng(seed)
    portrait = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    generator = torch.Generator().manual_seed(seed)
    feature = torch.randn(1, 32, 16, 64, 64, generator=generator).cuda()
    image = torch.rand(1, 3, 256, 256, generator=generator).cuda()
    with torch.no_grad():
        motion = SourceMotion.from_network(engine.networks.motion(image))
    transform = crop_ops.CropTransform(np.eye(3), np.eye(3))
    return PreparedSource(portrait, transform, feature, motion, motion.keypoints(), 0.05,
                          np.array([0.3, 0.3], np.float32), engine._paste_back(portrait, transform))


def test_mixed_batch_on_the_compiled_graph_equals_each_portrait_rendered_alone(networks, compile_cache):
    """What the service runs (compiled, CUDA graphs): frames of two portraits interleaved in one
    padded mixed batch equal each portrait's frames rendered through its own path, within the fp16
    tolerance; the mixed batch replays its own graph and compiles nothing per call."""
    from runtime.engines.batched_render import CapturedBatch
    from runtime.engines.liveportrait.mixed_batch import paste_mixed, render_mixed_crops

    engine = LivePortraitEngine(copy.deepcopy(networks), torch.device("cuda"), batch_size=8,
                                compile_cache_dir=compile_cache)
    warm_up(engine)
    assert isinstance(engine._render_batch, CapturedBatch) and isinstance(engine._render_gathered, CapturedBatch)
    assert engine.render_rate is not None and engine.render_rate > 0
    sources = [_synthetic_source(engine, seed, size) for seed, size in ((1, (512, 512)), (2, (600, 540)))]
    generator = torch.Generator().manual_seed(3)
    kp_driving = [source.kp_source + 0.03 * torch.randn(3, 21, 3, generator=generator).cuda() for source in sources]
    alone = [engine.render_crops(source, torch.cat([kp, kp[-1:].expand(engine.batch_size - 3, -1, -1)]))[:3].float()
             for source, kp in zip(sources, kp_driving)]
    alone_frames = [list(engine.render(source, kp)) for source, kp in zip(sources, kp_driving)]

    order = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2)]  # 5 frames: padded to the batch of 8
    index = [portrait for portrait, _ in order]
    compiles = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    crops = render_mixed_crops(engine, sources, index, torch.stack([kp_driving[p][f] for p, f in order]))
    frames = paste_mixed(engine, sources, index, crops)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == compiles
    assert crops.shape[0] == len(frames) == len(order)
    for row, (portrait, frame) in enumerate(order):
        error = (crops[row].float() - alone[portrait][frame]).abs()
        assert error.mean().item() <= MEAN_TOLERANCE and error.max().item() <= MAX_TOLERANCE, (row, error.max().item())
        expected = alone_frames[portrait][frame].astype(np.int16)
        assert frames[row].shape == expected.shape
        assert np.abs(frames[row].astype(np.int16) - expected).mean() <= MEAN_TOLERANCE * 255
    torch._dynamo.reset()
