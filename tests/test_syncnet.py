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

from testkit.quality_references import _bare_package, randomize, upstream_syncnet, write_syncnet_checkpoint

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


class _LoudnessSyncNet(torch.nn.Module):
    """A hand-built two-stream net whose embeddings agree when the mouth's brightness follows the
    sound's loudness: lips -> the lower crop's brightness in each of the 5 frames, audio -> the log
    energy (MFCC c0) of each 4-MFCC-frame step, both standardized. Trained weights cannot be
    downloaded here; this lets the real pipeline (crops, MFCC windows, their alignment, the offset
    search) be checked against an offset built into the clip."""

    @staticmethod
    def _standardized(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=1, keepdim=True)
        return x / (x.norm(dim=1, keepdim=True) + 1e-6)

    def embed_lips(self, crops: torch.Tensor) -> torch.Tensor:  # (N, 3, 5, 224, 224)
        return self._standardized(crops[:, :, :, 140:200, 60:164].mean(dim=(1, 3, 4)))

    def embed_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:  # (N, 1, 13, 20)
        return self._standardized(mfcc_windows[:, 0, 0, :].reshape(-1, 5, 4).mean(dim=2))


@pytest.mark.parametrize("lips_after_sound", [0, 3])
def test_lse_on_a_synthetic_clip_finds_the_offset_built_into_it(lips_after_sound, astronaut, face_locator, tmp_path):
    from runtime.media.audio import Speech
    from runtime.quality import QualityScorer
    from runtime.quality.lse import SyncNetScorer

    from .quality_clips import write_clip

    rng = np.random.default_rng(12)
    frames_total, fps = 100, 25
    loud = rng.random(frames_total + 20) < 0.5  # each 40 ms of sound: a noise burst or near silence
    samples = np.concatenate([rng.standard_normal(640) * (0.3 if on else 0.003) for on in loud[:frames_total]])
    points = face_locator.locate(astronaut).points
    mouth = points[[61, 291, 0, 17]]
    (x0, y0), (x1, y1) = mouth.min(axis=0).astype(int) - 6, mouth.max(axis=0).astype(int) + 6
    frames = []
    for index in range(frames_total):
        frame = astronaut.copy()
        heard = index - lips_after_sound  # the mouth shows the sound of `lips_after_sound` frames ago
        gain = 1.35 if heard >= 0 and loud[heard] else 0.65
        frame[y0:y1, x0:x1] = np.clip(frame[y0:y1, x0:x1] * gain, 0, 255).astype(np.uint8)
        frames.append(frame)
    clip = write_clip(frames, Speech(samples.astype(np.float32), 16_000), fps, tmp_path / "synthetic.mp4")

    scorer = QualityScorer(face_locator, syncnet=SyncNetScorer(_LoudnessSyncNet()))
    result = scorer.score(clip)["syncnet"]
    assert result["available"] is True
    assert result["offset_frames"] == lips_after_sound
    assert result["lse_c"] > 0.3
