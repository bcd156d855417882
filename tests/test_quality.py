"""A user scores videos: the weight-free metrics tell a synced clip from a late one and a still face,
on what the service really returns; `avatar score` prints the same report."""
from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from runtime.quality import QualityScorer

from .quality_clips import decoded, shifted, write_clip
from .server import REPO, png_base64, save_mp4

pytestmark = pytest.mark.service

TEXT = "The quick brown fox jumps over the lazy dog, then it runs into the quiet forest to rest."


@pytest.fixture(scope="module")
def service_clip(default_server, astronaut, tmp_path_factory):
    response = httpx.post(f"{default_server.url}/generate", json={"text": TEXT, "image": png_base64(astronaut)},
                          timeout=120)
    return save_mp4(response, tmp_path_factory.mktemp("service"), "synced.mp4")


def test_metrics_rank_the_services_synced_clip_above_a_late_one_and_a_still_face(
        service_clip, astronaut, face_locator, tmp_path):
    frames, speech, fps = decoded(service_clip)
    late = write_clip(shifted(frames, 5), speech, int(fps), tmp_path / "late.mp4")
    still = write_clip([frames[0]] * len(frames), speech, int(fps), tmp_path / "still.mp4")
    scorer = QualityScorer(face_locator)
    synced_report, late_report, still_report = (scorer.score(path, astronaut) for path in (service_clip, late, still))
    print({name: {key: report[key] for key in ("lip_sync", "av_sync", "jitter", "identity", "sharpness")}
           for name, report in (("synced", synced_report), ("late", late_report), ("still", still_report))})

    assert synced_report["lip_sync"]["score"] >= 0.5
    assert synced_report["lip_sync"]["score"] > late_report["lip_sync"]["score"] + 0.3
    assert synced_report["lip_sync"]["score"] > still_report["lip_sync"]["score"]
    assert abs(synced_report["av_sync"]["offset_frames"]) <= 1
    assert late_report["av_sync"]["offset_frames"] == pytest.approx(5, abs=1)  # and it finds the lag
    assert still_report["lip_sync"]["note"] == "the mouth does not move"
    assert still_report["jitter"]["mean_per_mille"] < synced_report["jitter"]["mean_per_mille"]

    clip = synced_report["clip"]
    assert clip["face_frames"] == clip["frames"] == len(frames)
    assert abs(synced_report["av_sync"]["duration_difference_s"]) < 0.05
    assert synced_report["identity"]["reference"] == "portrait"
    assert synced_report["identity"]["similarity_mean"] > 0.9
    assert 0.5 < synced_report["sharpness"]["ratio_to_portrait"] < 2
    assert synced_report["syncnet"]["available"] is False and synced_report["syncnet"]["reason"]


def test_avatar_score_prints_the_report_and_explains_bad_input(service_clip, tmp_path):
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "score", str(service_clip),
                             "--portrait", str(REPO / "runtime" / "assets" / "default_avatar.png"),
                             "--models-dir", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["lip_sync"]["score"] >= 0.5 and report["identity"]["reference"] == "portrait"

    garbage = tmp_path / "not-a-video.mp4"
    garbage.write_bytes(b"this is not an mp4")
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "score", str(garbage)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 2
    error_line = next(line for line in result.stderr.splitlines() if line.startswith("{"))  # mediapipe logs too
    assert json.loads(error_line)["error"] == "invalid_video"
