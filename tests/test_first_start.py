"""A newcomer's first start: the light install (no torch), no weights downloaded. The embedded
default is chosen quietly, with a hint; real failures still say so loudly, in the seed's words."""
from __future__ import annotations

import re

import pytest

from .server import start_server

pytestmark = pytest.mark.service

# Lines native libraries print on their own when MediaPipe starts (absl/glog, TFLite), and
# third-party INFO lines: none may reach the log of a default start.
NATIVE_NOISE = re.compile(r"^[IW]\d{4} |inference_feedback_manager|XNNPACK|absl::InitializeLog|font_?manager", re.M)


def _log_lines(log: str, level: str) -> list[str]:
    return [line for line in log.splitlines() if f" - {level} - " in line]


def test_light_install_without_weights_starts_meshwarp_quietly_with_a_hint(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with start_server(without=("torch",), MODELS_DIR=str(models)) as server:
        health = server.health()
        with server.client() as client:
            response = client.post("/generate", json={"text": "Hello, first day."})
        log = server.log()
    assert response.status_code == 200, response.text
    assert _log_lines(log, "ERROR") == [] and "Traceback" not in log, log
    assert "INFO - SadTalker weights not found in MODELS_DIR; using meshwarp. Run scripts/setup_sadtalker.sh" in log
    assert "Falling back" not in log
    assert not NATIVE_NOISE.search(log), log
    avatar = health["detail"]["avatar"]
    assert health["avatar_backend"] == "meshwarp" and avatar["loaded"] == "meshwarp"
    assert avatar["fell_back"] is False and avatar["failures"] == {}
    assert health["detail"]["device"] == {
        "selected": "cpu", "reason": "torch not installed (light install)", "requested": None,
        "torch_available": False, "cuda_available": False, "cuda_allowed": True}
    # One line for the request, naming it, its backend, its frames and its seconds.
    request_id = response.headers["x-request-id"]
    request_lines = [line for line in log.splitlines() if request_id in line]
    assert len(request_lines) == 1, request_lines
    assert f"request {request_id}: meshwarp, {response.headers['x-video-frames']} frames" in request_lines[0]
    assert re.search(r" in \d+\.\d\d s \(tts", request_lines[0])


def test_weights_present_but_torch_missing_is_a_real_failure_and_falls_back(tmp_path):
    sadtalker = tmp_path / "models" / "sadtalker"
    sadtalker.mkdir(parents=True)
    for name in ("SadTalker_V0.0.2_256.safetensors", "mapping_00109-model.pth.tar"):
        (sadtalker / name).write_bytes(b"not loaded: torch is missing")
    with start_server(without=("torch",), MODELS_DIR=str(tmp_path / "models")) as server:
        health = server.health()
        log = server.log()
    assert "ERROR - Failed to load SadTalker: torch is not installed" in log
    assert "INFO - Falling back to MeshWarp..." in log
    assert "weights not found" not in log
    avatar = health["detail"]["avatar"]
    assert avatar["loaded"] == "meshwarp" and avatar["fell_back"] is True and set(avatar["failures"]) == {"sadtalker"}


def test_a_named_backend_without_weights_logs_the_seeds_two_lines(tmp_path):
    pytest.importorskip("torch")  # the failure to show is the missing weights, not a missing torch
    models = tmp_path / "models"
    models.mkdir()
    with start_server(AVATAR_BACKEND="sadtalker", MODELS_DIR=str(models)) as server:
        health = server.health()
        log = server.log()
    failed = _log_lines(log, "ERROR")
    assert len(failed) == 1 and "ERROR - Failed to load SadTalker: missing SadTalker checkpoint file(s)" in failed[0], log
    assert "(run scripts/setup_sadtalker.sh)" in failed[0]
    assert "INFO - Falling back to MeshWarp..." in log
    avatar = health["detail"]["avatar"]
    assert avatar["requested"] == "sadtalker" and avatar["skipped"] == {}
    assert avatar["loaded"] == "meshwarp" and avatar["fell_back"] is True
