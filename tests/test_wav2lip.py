"""The Wav2Lip lip refiner: our network and front end against upstream's, the official checkpoint
layout, and what the refiner does to a real meshwarp clip."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.engines.checkpoints import CheckpointError
from runtime.engines.wav2lip import mel as wav2lip_mel
from runtime.engines.wav2lip.checkpoint import load_wav2lip
from runtime.engines.wav2lip.network import Wav2Lip
from runtime.engines.wav2lip.refiner import LipRefiner, RefineStats, feather_mask
from runtime.media.audio import resample

from .quality_clips import decoded, meshwarp_frames, speak, write_clip
from testkit.quality_references import randomize, upstream_wav2lip, upstream_wav2lip_audio, write_wav2lip_checkpoint

pytestmark = pytest.mark.equivalence


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    write_wav2lip_checkpoint(models / "wav2lip" / "wav2lip_gan.pth", seed=7)
    return models


def test_our_wav2lip_equals_upstream_network_on_shared_random_weights():
    upstream = upstream_wav2lip()
    if upstream is None:
        pytest.skip("lipsync (test-only reference: pip install --no-deps lipsync) is not installed")
    ours = randomize(Wav2Lip(), seed=1)
    reference = upstream.Wav2Lip().eval()
    reference.load_state_dict(ours.state_dict(), strict=True)  # same names, same shapes
    generator = torch.Generator().manual_seed(2)
    mel = torch.randn(3, 1, 80, 16, generator=generator) * 2
    faces = torch.rand(3, 6, 96, 96, generator=generator)
    with torch.no_grad():
        expected, got = reference(mel, faces), ours(mel, faces)
    assert got.shape == (3, 3, 96, 96)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert expected.std() > 1e-3  # the comparison saw a picture, not a constant


def test_official_layout_checkpoint_loads_strictly(checkpoint_dir, tmp_path):
    state = write_wav2lip_checkpoint(tmp_path / "wav2lip.pth", seed=3)
    saved = torch.load(tmp_path / "wav2lip.pth", weights_only=True)
    assert set(saved) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    assert all(key.startswith("module.") for key in saved["state_dict"])
    network = load_wav2lip(tmp_path / "wav2lip.pth")
    for key, value in network.state_dict().items():
        assert torch.equal(value, state[key]), key

    del saved["state_dict"]["module.output_block.1.bias"]
    torch.save(saved, tmp_path / "incomplete.pth")
    with pytest.raises(CheckpointError, match="output_block.1.bias"):
        load_wav2lip(tmp_path / "incomplete.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "wav2lip.pth").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_wav2lip(tmp_path / "truncated.pth")


def test_mel_front_end_matches_upstream_audio_py(monkeypatch):
    reference = upstream_wav2lip_audio()
    if reference is None:
        pytest.skip("lipsync + librosa (test-only references) are not installed")
    import librosa

    # Upstream pins librosa 0.7, whose stft reflect-pads; newer librosa zero-pads by default.
    monkeypatch.setattr(reference.librosa, "stft", functools.partial(librosa.stft, pad_mode="reflect"))
    speech = speak("Hello there, this is a test of the mel front end.")
    samples = resample(speech, 16000).samples
    ours, theirs = wav2lip_mel.melspectrogram(samples), reference.melspectrogram(samples)
    assert ours.shape == theirs.shape == (80, len(samples) // 200 + 1)
    assert np.abs(ours - theirs).max() < 1e-4
    assert ours.min() == -4.0 and ours.max() > 0  # silence floors at -4, speech rises above 0


def test_mel_windows_use_upstreams_index_formula():
    mel = np.arange(80 * 100, dtype=np.float32).reshape(80, 100)
    windows = wav2lip_mel.mel_windows(mel, 25, [0, 1, 2, 5, 29, 40])
    # upstream: start = int(i * 80 / fps), and the last full window once that runs past the end
    starts = [0, 3, 6, 16, 84, 84]
    assert windows.shape == (6, 1, 80, 16)
    for window, start in zip(windows, starts):
        assert np.array_equal(window[0], mel[:, start:start + 16])


def test_refiner_on_meshwarp_output_keeps_frames_sync_identity_and_changes_only_masked_pixels(
        checkpoint_dir, astronaut, face_locator, tmp_path):
    from runtime.quality import QualityScorer

    speech = speak("Good morning, how are you?")
    frames = meshwarp_frames(astronaut, speech)
    refiner = LipRefiner.load(checkpoint_dir, "cpu", face_locator, batch_size=16)
    assert refiner.describe()["checkpoint"] == "wav2lip_gan.pth"
    boxes = []  # the face boxes the refiner used, frame by frame
    refine_batch = refiner.refine_batch
    refiner.refine_batch = lambda batch, windows, batch_boxes: boxes.extend(batch_boxes) or refine_batch(
        batch, windows, batch_boxes)
    stats = RefineStats()
    refined = list(refiner.refine(iter(frames), speech, 25, stats))

    assert len(refined) == len(frames) == len(boxes) and stats.refined == len(frames) and stats.no_face == 0
    changed_somewhere = False
    for before, after, (x0, y0, x1, y1) in zip(frames, refined, boxes):
        changed = np.any(before != after, axis=2)
        inside = np.zeros(changed.shape, bool)
        inside[y0:y1, x0:x1] = feather_mask(y1 - y0, x1 - x0)[:, :, 0] > 0
        assert not np.any(changed & ~inside)  # nothing outside the feathered mask moved
        changed_somewhere |= changed.any()
    assert changed_somewhere  # and inside it the network drew something

    original = write_clip(frames, speech, 25, tmp_path / "meshwarp.mp4")
    path = write_clip(refined, speech, 25, tmp_path / "refined.mp4")
    scorer = QualityScorer(face_locator)
    report, before = scorer.score(path, astronaut), scorer.score(original, astronaut)
    assert report["clip"]["frames"] == before["clip"]["frames"] == len(frames)
    assert report["av_sync"]["duration_difference_s"] == before["av_sync"]["duration_difference_s"] == 0
    assert report["av_sync"]["audio_start_offset_ms"] == before["av_sync"]["audio_start_offset_ms"]
    # random weights paint a grey mouth; the upper face, the identity, stays the portrait's
    assert report["identity"]["similarity_mean"] > 0.95
    # (the grey mouth moves the mesh fit of the upper face a little, so the alignment; real weights draw a mouth)
    assert report["identity"]["similarity_mean"] > before["identity"]["similarity_mean"] - 0.04
    decoded_frames, _, fps = decoded(path)
    assert len(decoded_frames) == len(frames) and fps == 25


def test_refiner_without_weights_says_what_is_missing(tmp_path):
    with pytest.raises(CheckpointError, match="wav2lip_gan.pth or wav2lip.pth"):
        LipRefiner.load(tmp_path, "cpu", locator=object())


def test_a_stream_session_gives_every_frame_the_window_the_whole_clip_gives(monkeypatch, tmp_path):
    """Speech and frames arriving piece by piece (the stream, /ws) get the same mel windows as one clip,
    and come out in order, none before its speech, each at the latest one call after it was ready."""
    from runtime.engines.wav2lip.tracking import FaceTracker
    from runtime.media.audio import Speech

    rng = np.random.default_rng(3)
    samples = (0.2 * rng.standard_normal(16_000 * 3)).astype(np.float32)  # 3 s at 16 kHz: no resampling
    fps, frame_total = 25, 75
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(frame_total)]
    seen: dict[int, np.ndarray] = {}

    def record(self, batch, windows, boxes):
        for frame, window in zip(batch, windows):
            seen[int(frame[0, 0, 0])] = window
        return batch

    monkeypatch.setattr(LipRefiner, "refine_batch", record)
    monkeypatch.setattr(FaceTracker, "track", lambda self, batch: [None] * len(batch))
    write_wav2lip_checkpoint(tmp_path / "wav2lip" / "wav2lip.pth")
    refiner = LipRefiner.load(tmp_path, "cpu", locator=object(), batch_size=16)
    session = refiner.session(fps)
    out, ready_before = [], 0
    for step in range(10):  # 0.3 s of speech and 7-8 frames at a time
        out += session.add_frames(frames[step * frame_total // 10:(step + 1) * frame_total // 10])
        # a frame is ready once its window's speech (0.2 s from the frame on, + 25 ms) has arrived
        heard, given = step * 4800, (step + 1) * frame_total // 10
        ready = sum(1 for i in range(given) if (int(i * 3.2) + 15) * 200 + 400 <= heard)
        assert ready_before <= len(out) <= ready
        assert [int(f[0, 0, 0]) for f in out] == list(range(len(out)))
        ready_before = ready
        session.add_speech(Speech(samples[step * 4800:(step + 1) * 4800], 16_000))
    out += session.finish()
    assert [int(f[0, 0, 0]) for f in out] == list(range(frame_total))
    assert len(session._samples) < 16_000  # the session forgot speech it no longer needs

    whole = wav2lip_mel.mel_windows(wav2lip_mel.melspectrogram(samples), fps, range(frame_total))
    for index in range(frame_total):
        assert np.allclose(seen[index], whole[index], atol=1e-5), index


def test_tracker_detects_every_few_frames_and_every_frame_where_the_face_jumps(astronaut, face_locator):
    """A head that sways is detected on every 8th frame and interpolated between; where it jumps (a
    fast turn, a cut) the neighbouring detections disagree and each frame between is detected on its
    own; a frame where the detector finds nothing keeps its neighbours' boxes."""
    import cv2

    from runtime.engines.wav2lip.tracking import FaceTracker

    canvas = np.pad(astronaut, ((64, 64), (64, 192), (0, 0)), mode="edge")  # room to move right

    def shifted(dx: int) -> np.ndarray:
        return cv2.warpAffine(canvas, np.float32([[1, 0, dx], [0, 1, 0]]), canvas.shape[1::-1],
                              borderMode=cv2.BORDER_REPLICATE)

    offsets = [i + (100 if i >= 44 else 0) for i in range(64)]  # 1 px a frame, and a 100 px jump at 44
    frames = [shifted(dx) for dx in offsets]
    truth = [np.array(face_locator.detect_box(frame), float) for frame in frames]
    frames[23] = np.full_like(frames[23], 128)  # a frame the tracker looks at, without a face

    tracker = FaceTracker(face_locator, detect_every=8)
    boxes, detections = [], []
    for start in range(0, len(frames), 16):  # the refiner's batches
        before = tracker.stats.detections
        boxes += tracker.track(frames[start:start + 16])
        detections.append(tracker.stats.detections - before)

    side = truth[0][2] - truth[0][0]
    errors = [np.abs(np.array(box, float) - expected).max() / side for box, expected in zip(boxes, truth)]
    assert max(errors) < 0.12, np.round(errors, 3)  # every frame's box on its face, the jump included
    # the stream's first frame (whole, then around that box), the 8th, and the batch's last (7 past it)
    assert detections[0] == 2 + 1 + 1
    assert detections[1] == 2 + 1  # the faceless frame looked for near its last box and in the whole frame
    # frames 39 and 47, and each frame between on its own; 47 and 44 (where the face jumped) are
    # not near the last box: looked for there, in the whole frame, then around what that found
    assert tracker.stats.drift_frames == 7 and detections[2] == 1 + 3 + 6 + 3
    assert detections[3] == 2  # swaying again: one detection per 8 frames (55, 63)
    assert tracker.stats.found == tracker.stats.detections - 4  # the faceless frame twice, the jump's near looks
