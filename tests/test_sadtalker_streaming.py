"""A SadTalker stream rendered unit by unit moves its head on where the last unit left it: no
seam every few seconds. CPU, random-weight checkpoints in the official layout."""
from __future__ import annotations

import numpy as np
import pytest

from testkit.sadtalker_checkpoints import random_models_dir, synthetic_landmarks

pytestmark = pytest.mark.unit

FPS = 25
SAMPLES_PER_FRAME = 16000 // FPS


@pytest.fixture(scope="module")
def engine_and_portrait():
    from runtime.engines.sadtalker.engine import SadTalkerEngine

    engine = SadTalkerEngine.load(random_models_dir() / "sadtalker", "cpu", sizes=(256,))
    image = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
    return engine, engine.prepare_portrait(image, synthetic_landmarks(400, 300))


def _speech(seconds: float) -> np.ndarray:
    """A voiced buzz whose loudness rises and falls three times a second, at 16 kHz."""
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.4 * np.sin(2 * np.pi * 200 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _pose_steps(windows: np.ndarray) -> np.ndarray:
    """(T, C, 27) mapping-net windows -> (T - 1,) size of each frame-to-frame change of the head
    pose (3 angles + 3 translations, each frame's own: the window's centre)."""
    pose = windows[:, 64:70, windows.shape[2] // 2]
    return np.linalg.norm(np.diff(pose, axis=0), axis=1)


def test_the_head_pose_does_not_jump_where_one_render_unit_ends_and_the_next_begins(engine_and_portrait):
    from runtime.engines.sadtalker.coefficients import MotionRequest

    engine, portrait = engine_and_portrait
    request = MotionRequest(pose_style=3)
    speech = _speech(6.0)
    total = len(speech) // SAMPLES_PER_FRAME
    units = [(start, min(40, total - start)) for start in range(0, total, 40)]  # 40-frame units, the last shorter
    boundaries = [start - 1 for start, _ in units[1:]]  # step i goes from frame i to frame i + 1

    def speech_of(start: int, count: int) -> np.ndarray:
        return speech[start * SAMPLES_PER_FRAME:(start + count) * SAMPLES_PER_FRAME]

    stream = engine.driving_stream(portrait, FPS, request)
    streamed = np.concatenate([stream.windows(speech_of(start, count), start, count) for start, count in units])
    assert streamed.shape == (total, engine.coeff_channels, 27)
    steps = _pose_steps(streamed)
    assert steps.max() > 0  # the head moves
    assert steps[boundaries].max() <= np.delete(steps, boundaries).max(), (steps[boundaries], steps.max())

    # What the streaming sessions did before: each unit on its own restarts the pose at the source's.
    alone = np.concatenate([engine.driving_windows(portrait, speech_of(start, count), FPS, count, request)
                            for start, count in units])
    alone_steps = _pose_steps(alone)
    assert alone_steps[boundaries].max() > np.delete(alone_steps, boundaries).max()


def test_a_stream_refuses_a_piece_that_does_not_follow_the_last(engine_and_portrait):
    from runtime.engines.sadtalker.coefficients import MotionRequest

    engine, portrait = engine_and_portrait
    stream = engine.driving_stream(portrait, FPS, MotionRequest())
    stream.windows(_speech(0.4), 0, 10)
    with pytest.raises(ValueError, match="at frame 10"):
        stream.windows(_speech(0.4), 12, 10)


def test_a_short_unit_pads_to_the_quickest_batch_shape_that_holds_it(engine_and_portrait):
    """Where warm-up timed batch shapes (CUDA), a short last batch pads to the quickest that holds
    it, not always to the full batch: a stream's 4-frame first unit must not cost 64 frames."""
    import torch

    from runtime.engines.batched_render import padded_batches

    engine, _ = engine_and_portrait
    timed = {8: 0.02, 16: 0.09, 32: 0.06, 64: 0.2}  # seconds per batch, as warm-up would measure them
    saved = dict(engine.batch_seconds)
    engine.batch_seconds[256] = timed
    try:
        padded_size = engine.padded_batch_size(256)
        assert [padded_size(count) for count in (3, 8, 12, 20, 40)] == [8, 8, 32, 32, 64]
        rows = torch.arange(70.0)[:, None]
        shapes = [(chunk.shape[0], count) for chunk, count in padded_batches(rows, 64, True, padded_size)]
        assert shapes == [(64, 64), (8, 6)]
    finally:
        engine.batch_seconds.clear()
        engine.batch_seconds.update(saved)
