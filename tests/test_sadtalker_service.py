"""A user's story on the cpu: the service started with AVATAR_BACKEND=sadtalker and a MODELS_DIR
holding (random-weight) official checkpoints serves SadTalker and returns a right-length mp4.

The face renderer costs several seconds a frame on two cpu cores, so the requests are a short
text at a low frame rate: a handful of rendered frames, enough to run the whole path (MediaPipe
crop, recon net, audio nets, batched render, paste back, encode) end to end."""
from __future__ import annotations

import pytest

from runtime.media.lipsync import read_audio, video_duration

from testkit.sadtalker_checkpoints import random_models_dir
from .portrait_frames import assert_each_clip_shows_its_own_portrait
from .server import save_mp4, start_server

pytestmark = [pytest.mark.service, pytest.mark.slow]  # the face renderer: seconds a frame on 2 cores

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def sadtalker_server():
    with start_server(startup_timeout=300, AVATAR_BACKEND="sadtalker", DEVICE="cpu",
                      RENDER_CAPACITY_FPS="50", MODELS_DIR=str(random_models_dir())) as server:
        yield server


def test_two_portraits_at_once_each_come_back_in_their_own_frames(sadtalker_server, astronaut):
    # RENDER_CAPACITY_FPS=50: both requests are admitted before the first batch measures the cpu's
    # capacity, so the render scheduler has frames of both portraits to batch together.
    assert_each_clip_shows_its_own_portrait(sadtalker_server, astronaut, {"text": "Hi.", "fps": 2, "size": 256})
    rendering = sadtalker_server.health()["detail"]["rendering"]
    assert rendering["mode"] == "render scheduler" and rendering["streams"] == 0


def test_health_reports_sadtalker(sadtalker_server):
    sadtalker_server.assert_serves("sadtalker")


def test_generate_returns_an_mp4_as_long_as_the_speech(sadtalker_server, tmp_path):
    with sadtalker_server.client(timeout=900) as client:
        response = client.post("/generate", json={"text": "Hi there.", "fps": 4, "pose_style": 12,
                                                   "expression_scale": 1.5, "size": 256})
    path = save_mp4(response, tmp_path)
    _, _, audio_seconds = read_audio(path)
    assert audio_seconds > 0.3
    assert abs(video_duration(path) - audio_seconds) <= 0.25  # one frame at 4 fps
    assert response.headers["x-avatar-backend"] == "sadtalker"


def test_still_mode_renders_too(sadtalker_server, tmp_path):
    with sadtalker_server.client(timeout=900) as client:
        response = client.post("/generate", json={"text": "Hi.", "fps": 2, "still": True})
    path = save_mp4(response, tmp_path)
    _, _, audio_seconds = read_audio(path)
    assert abs(video_duration(path) - audio_seconds) <= 0.5


def test_a_size_that_is_not_installed_is_a_client_error(sadtalker_server):
    """Sent as a multipart form: `size=512` arrives as text and still means 512."""
    form = {name: (None, value) for name, value in {"text": "Hi.", "fps": "2", "size": "512"}.items()}
    with sadtalker_server.client(timeout=120) as client:
        response = client.post("/generate", files=form)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "size 512 is not available on this server" in body["detail"]

