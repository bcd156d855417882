"""SadTalker across requests, on the CPU with random weights: what one request leaves for the next.

A portrait's preparation (face mesh, crop, 3DMM reconstruction, source volumes, paste plan) is
done once per image; a compiled renderer serves clips of any length without compiling again."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runtime.config import load_settings  # noqa: E402
from runtime.device import DeviceChoice  # noqa: E402
from runtime.engines.sadtalker.coefficients import MotionRequest  # noqa: E402
from runtime.engines.sadtalker.engine import SadTalkerEngine, warm_up  # noqa: E402
from runtime.media.audio import Speech, frame_count  # noqa: E402
from runtime.media.portrait import load_portrait_file  # noqa: E402

from testkit.sadtalker_checkpoints import random_models_dir, synthetic_landmarks  # noqa: E402

# The CPU renders seconds a frame: a handful of frames, but each test takes a minute or more.
pytestmark = [pytest.mark.unit, pytest.mark.slow]


def _speech(seconds: float, seed: int) -> Speech:
    rng = np.random.default_rng(seed)
    return Speech(samples=(0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), sample_rate=16000)


@pytest.fixture(scope="module")
def backend():
    from runtime.models.sadtalker_model import SadTalkerBackend

    settings = load_settings(models_dir=random_models_dir(), sadtalker_compile=False)
    return SadTalkerBackend.load(settings, DeviceChoice("cpu", "test", True))


def _animate(backend, portrait: np.ndarray, speech: Speech, fps: int = 5):
    return backend.animate(portrait, speech, fps, frame_count(speech.duration, fps))


def test_a_second_request_with_the_same_portrait_does_not_prepare_it_again(backend):
    portrait = load_portrait_file(load_settings().default_avatar)
    first = list(_animate(backend, portrait, _speech(0.4, seed=1)))
    assert len(first) == 2
    assert backend.describe()["portraits_prepared"] == 1

    second = _animate(backend, portrait.copy(), _speech(0.6, seed=2))  # same pixels, new array
    assert next(iter(second)).shape == portrait.shape
    assert backend.describe()["portraits_prepared"] == 1
    assert backend.describe()["cached_portraits"] == 1

    mirrored = np.ascontiguousarray(portrait[:, ::-1])
    _animate(backend, mirrored, _speech(0.4, seed=3))
    assert backend.describe()["portraits_prepared"] == 2


def test_clips_of_different_lengths_do_not_recompile_the_renderer():
    """torch.compile on the CPU (inductor's C++ backend): minutes on a 2-core machine."""
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]  # process-wide: other tests may have compiled
    engine = SadTalkerEngine.load(random_models_dir() / "sadtalker", "cpu", sizes=(256,), batch_size=2,
                                  compile_renderer=True)
    warm_up(engine)
    assert engine.compiled
    graphs_after_warm_up = counters["stats"]["unique_graphs"]
    assert graphs_after_warm_up > graphs_before, "warm_up compiled nothing"

    portrait = (np.random.default_rng(0).random((320, 320, 3)) * 255).astype(np.uint8)
    prepared = engine.prepare_portrait(portrait, synthetic_landmarks(320, 320))
    for frames in (3, 4, 1):  # a short last batch, full batches only, a clip shorter than a batch
        samples = (0.1 * np.random.default_rng(frames).standard_normal(640 * frames)).astype(np.float32)
        rendered = list(engine.animate(prepared, samples, 25, frames, MotionRequest()))
        assert len(rendered) == frames
    assert counters["stats"]["unique_graphs"] == graphs_after_warm_up
    assert engine.compiled  # still the compiled batch, not a fallback to eager
