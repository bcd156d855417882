"""Frames of two portraits rendered in one mixed batch equal the same frames rendered portrait by
portrait: what lets the render scheduler (runtime/scheduling) batch frames across streams.
CPU, random-weight checkpoints in the official layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from testkit.liveportrait_checkpoints import shared_random_models_dir
from testkit.sadtalker_checkpoints import random_models_dir

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_portraits(astronaut, face_locator):
    """The bundled portrait and its mirror image (a different crop, different features), with their face points."""
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    return [(image, face_locator.locate(image).points) for image in (astronaut, mirrored)]


def pasted(portrait: np.ndarray, box: tuple[int, int, int, int], boxes: torch.Tensor) -> list[np.ndarray]:
    """Full frames: the portrait with each rendered box (B, h, w, 3) uint8 put at `box`."""
    x0, y0, x1, y1 = box
    frames = []
    for rendered in boxes.cpu().numpy():
        frame = portrait.copy()
        frame[y0:y1, x0:x1] = rendered
        frames.append(frame)
    return frames


# Frame order of the mixed batch: the two portraits interleaved, so a frame handed to the wrong
# portrait or slot cannot pass.
MIXED_ORDER = [(0, 0), (1, 0), (1, 1), (0, 1)]  # (portrait, its frame)


def test_liveportrait_mixed_batch_equals_each_portrait_rendered_alone(two_portraits):
    from runtime.engines.liveportrait.checkpoints import load_networks
    from runtime.engines.liveportrait.engine import LivePortraitEngine
    from runtime.engines.liveportrait.mixed_batch import paste_mixed, render_mixed_crops

    engine = LivePortraitEngine(load_networks(shared_random_models_dir(seed=0) / "liveportrait"),
                                torch.device("cpu"), batch_size=4)
    sources = [engine.prepare_source(image, points) for image, points in two_portraits]
    generator = torch.Generator().manual_seed(3)
    kp_driving = [source.kp_source + 0.03 * torch.randn(2, 21, 3, generator=generator) for source in sources]

    alone_crops = [engine.render_crops(source, kp) for source, kp in zip(sources, kp_driving)]
    # engine.render's paste-back, without rendering again (a W + G batch takes a minute here).
    alone_frames = [pasted(source.portrait, source.paste.box, engine._compose_box(source, crops))
                    for source, crops in zip(sources, alone_crops)]
    index = [portrait for portrait, _ in MIXED_ORDER]
    mixed_kp = torch.stack([kp_driving[portrait][frame] for portrait, frame in MIXED_ORDER])
    mixed_crops = render_mixed_crops(engine, sources, index, mixed_kp)
    mixed_frames = paste_mixed(engine, sources, index, mixed_crops)

    assert (alone_crops[0] - alone_crops[1]).abs().max() > 0.05  # the portraits render differently
    for row, (portrait, frame) in enumerate(MIXED_ORDER):
        # The engine's stated tolerance for exact rewrites in fp32: 1e-5 on the crops.
        assert (mixed_crops[row] - alone_crops[portrait][frame]).abs().max().item() <= 1e-5
        assert mixed_frames[row].shape == two_portraits[portrait][0].shape
        difference = np.abs(mixed_frames[row].astype(int) - alone_frames[portrait][frame].astype(int))
        assert difference.max() <= 1  # uint8 rounding of equal crops


def test_sadtalker_mixed_batch_equals_each_portrait_rendered_alone(two_portraits):
    from runtime.engines.sadtalker.engine import SadTalkerEngine
    from runtime.engines.sadtalker.mixed_batch import paste_mixed, render_mixed_faces
    from runtime.engines.sadtalker.paste import paste_boxes

    # fp32 convs: the bf16 default on some CPUs would make the comparison one of rounding.
    engine = SadTalkerEngine.load(random_models_dir() / "sadtalker", "cpu", sizes=(256,), batch_size=4,
                                  conv_dtype=torch.float32)
    renderer = engine.renderers[256]
    portraits = [engine.prepare_portrait(image, points) for image, points in two_portraits]
    generator = torch.Generator().manual_seed(5)
    windows = [0.3 * torch.randn(2, engine.coeff_channels, 27, generator=generator) for _ in portraits]

    alone_faces = [renderer.render_batch(portrait.source, w) for portrait, w in zip(portraits, windows)]
    alone_frames = [pasted(portrait.portrait, portrait.paste.region, paste_boxes(faces, portrait.paste))
                    for faces, portrait in zip(alone_faces, portraits)]
    index = [portrait for portrait, _ in MIXED_ORDER]
    mixed_windows = torch.stack([windows[portrait][frame] for portrait, frame in MIXED_ORDER])
    mixed_faces = render_mixed_faces(engine, portraits, index, mixed_windows)
    mixed_frames = paste_mixed(portraits, index, mixed_faces)

    assert (alone_faces[0] - alone_faces[1]).abs().max() > 0.05  # the portraits render differently
    for row, (portrait, frame) in enumerate(MIXED_ORDER):
        assert (mixed_faces[row] - alone_faces[portrait][frame]).abs().max().item() <= 1e-5
        difference = np.abs(mixed_frames[row].astype(int) - alone_frames[portrait][frame].astype(int))
        assert difference.max() <= 1


def test_a_mixed_batch_refuses_indices_that_name_no_portrait(two_portraits):
    from runtime.engines.liveportrait.checkpoints import load_networks
    from runtime.engines.liveportrait.engine import LivePortraitEngine
    from runtime.engines.liveportrait.mixed_batch import render_mixed_crops

    engine = LivePortraitEngine(load_networks(shared_random_models_dir(seed=0) / "liveportrait"),
                                torch.device("cpu"), batch_size=2)
    source = engine.prepare_source(*two_portraits[0])
    kp = source.kp_source.expand(2, -1, -1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        render_mixed_crops(engine, [source], [0, 1], kp)
    with pytest.raises(ValueError, match="3 portrait indices for 2 frames"):
        render_mixed_crops(engine, [source], [0, 0, 0], kp)
    with pytest.raises(ValueError, match="batch size"):
        render_mixed_crops(engine, [source], [0, 0, 0], source.kp_source.expand(3, -1, -1))
