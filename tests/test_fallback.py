"""A backend that cannot load falls back along liveportrait -> sadtalker -> meshwarp, and says so."""
from __future__ import annotations

import subprocess
import sys

import pytest

from runtime.config import ENV_FILE_VARIABLE

from .server import REPO, save_mp4, start_server

pytestmark = pytest.mark.service


def test_liveportrait_without_weights_falls_back_and_still_generates(tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    with start_server(AVATAR_BACKEND="liveportrait", MODELS_DIR=str(empty)) as server:
        log = server.log()
        health = server.health()
        with server.client() as client:
            response = client.post("/generate", json={"text": "The fallback still talks."})
    assert "ERROR - Failed to load LivePortrait" in log
    assert "INFO - Falling back to SadTalker..." in log
    assert "INFO - Falling back to MeshWarp..." in log
    assert health["avatar_backend"] == "meshwarp"
    avatar = health["detail"]["avatar"]
    assert avatar["requested"] == "liveportrait" and avatar["fell_back"] is True
    assert set(avatar["failures"]) == {"liveportrait", "sadtalker"}
    assert save_mp4(response, tmp_path).stat().st_size > 10_000
    assert response.headers["x-avatar-backend"] == "meshwarp"


def test_invalid_setting_fails_at_startup_naming_the_valid_values():
    result = subprocess.run(
        [sys.executable, "-m", "runtime.gpu_service"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", ENV_FILE_VARIABLE: "", "AVATAR_BACKEND": "wav2lip", "PORT": "1"},
    )
    assert result.returncode != 0
    for valid in ("auto", "liveportrait", "sadtalker", "meshwarp"):
        assert valid in result.stderr
    assert "avatar_backend" in result.stderr


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has the device the test forces to be missing")
def test_forcing_a_missing_device_fails_at_startup():
    result = subprocess.run(
        [sys.executable, "-m", "runtime.gpu_service"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", ENV_FILE_VARIABLE: "", "DEVICE": "cuda", "PORT": "1"},
    )
    assert result.returncode != 0
    assert "DEVICE=cuda was requested but is not available" in result.stderr
