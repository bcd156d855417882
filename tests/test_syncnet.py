"""SyncNet LSE-C / LSE-D: our network and MFCC against upstream's, the official weight file's
layout, the offset search, and the scores on a real clip."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from runtime.engines.checkpoints import CheckpointError
from runtime.engines.syncnet.checkpoint import load_syncnet
from runtime.engines.syncnet.mfcc import mfcc
from runtime.engines.syncnet.network import SyncNet
from runtime.quality.lse import search_offset

from .quality_references import _bare_package, randomize, upstream_syncnet, write_syncnet_checkpoint

pytestmark = pytest.mark.equivalence


def test_our_syncnet_equals_upstream_network_on_shared_random_weights():
    upstream = upstream_syncnet()
    if upstream is None:
        pytest.skip("syncnet-python (test-only reference: pip install --no-deps syncnet-python) is not installed")
    ours = randomize(SyncNet(), seed=4)
    reference = upstream.S(num_layers_in_fc_layers=1024).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(5)
    mfcc_windows = torch.randn(2, 1, 13, 20, generator=generator) * 10
    crops = torch.rand(2, 3, 5, 224, 224, generator=generator) * 255  # BGR 0-255, as upstream feeds them
    with torch.no_grad():
        audio, lips = ours.embed_audio(mfcc_windows), ours.embed_lips(crops)
        assert torch.allclose(audio, reference.forward_aud(mfcc_windows), atol=1e-4, rtol=0)
        assert torch.allclose(lips, reference.forward_lip(crops), atol=1e-4, rtol=0)
    assert audio.shape == lips.shape == (2, 1024) and audio.std() > 1e-3 and lips.std() > 1e-3


def test_our_mfcc_equals_python_speech_features():
    try:
        import python_speech_features
    except ImportError:
        pytest.skip("python_speech_features (test-only reference) is not installed")
    samples = (np.random.default_rng(0).standard_normal(16_000 + 123) * 3000).astype(np.int16)
    expected = python_speech_features.mfcc(samples, 16_000)
    assert mfcc(samples).shape == expected.shape == (100, 13)
    assert np.allclose(mfcc(samples), expected, atol=1e-6)


def test_official_syncnet_v2_model_layout_loads_strictly(tmp_path):
    path = tmp_path / "syncnet" / "syncnet_v2.model"
    state = write_syncnet_checkpoint(path, seed=6)
    assert all(key.split(".")[0] in {"netcnnaud", "netfcaud", "netcnnlip", "netfclip"} for key in state)
    network = load_syncnet(path)
    for key, value in network.state_dict().items():
        assert torch.equal(value, state[key]), key

    # A file saved before torch 0.4.1 has no num_batches_tracked: it still loads.
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.model")
    load_syncnet(tmp_path / "old.model")
    # Anything else missing is refused, naming it.
    del old["netfclip.3.weight"]
    torch.save(old, tmp_path / "broken.model")
    with pytest.raises(CheckpointError, match="netfclip.3.weight"):
        load_syncnet(tmp_path / "broken.model")
    with pytest.raises(CheckpointError, match="setup_syncnet.sh"):
        load_syncnet(tmp_path / "absent.model")


@pytest.mark.parametrize("lips_after_sound", [-6, 0, 4, 11])
def test_lse_offset_search_finds_a_known_offset_as_upstream_computes_it(lips_after_sound):
    generator = torch.Generator().manual_seed(8)
    trajectory = torch.randn(120, 256, generator=generator)
    # Video window i shows what the audio said at window i - offset.
    video = trajectory[20:100]
    audio = trajectory[20 + lips_after_sound:100 + lips_after_sound] + 0.1 * torch.randn(80, 256, generator=generator)
    score = search_offset(video, audio)
    assert score.offset_frames == lips_after_sound
    assert score.lse_c > 5 and score.lse_d < np.median(score.mean_distances) / 2

    if not _bare_package("syncnet_python"):
        return
    try:
        instance = importlib.import_module("syncnet_python.SyncNetInstance")
    except ImportError:
        return
    distances = torch.mean(torch.stack(instance.calc_pdist(video, audio, vshift=15), 1), 1)
    smallest, index = torch.min(distances, 0)
    assert score.offset_frames == 15 - int(index)
    assert score.lse_d == pytest.approx(float(smallest), abs=1e-4)
    assert score.lse_c == pytest.approx(float(torch.median(distances) - smallest), abs=1e-4)


def test_quality_report_carries_syncnet_scores_when_its_weights_load(tmp_path, astronaut, face_locator):
    from runtime.quality import QualityScorer

    from .quality_clips import meshwarp_frames, speak, write_clip

    write_syncnet_checkpoint(tmp_path / "syncnet" / "syncnet_v2.model", seed=9)
    speech = speak("One two three four five.")
    clip = write_clip(meshwarp_frames(astronaut, speech), speech, 25, tmp_path / "clip.mp4")
    with_weights = QualityScorer.load(tmp_path, locator=face_locator).score(clip)["syncnet"]
    assert with_weights["available"] is True
    assert np.isfinite(with_weights["lse_c"]) and with_weights["lse_d"] > 0
    assert -15 <= with_weights["offset_frames"] <= 15

    without = QualityScorer.load(tmp_path / "empty", locator=face_locator).score(clip)["syncnet"]
    assert without["available"] is False and "syncnet_v2.model" in without["reason"]
    assert without["lse_c"] is None and without["lse_d"] is None
