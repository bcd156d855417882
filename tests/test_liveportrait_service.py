"""A user's story on the cpu: the service started with AVATAR_BACKEND=liveportrait and a MODELS_DIR
holding (random-weight) official checkpoints serves LivePortrait and returns a right-length mp4.

The full 512 px decoder costs ~20 s a frame on two cpu cores, so the request is a short text at
2 frames/s: a couple of rendered frames, enough to run the whole path end to end."""
from __future__ import annotations

import pytest

from runtime.media.lipsync import read_audio, video_duration

from testkit.liveportrait_checkpoints import shared_random_models_dir
from .portrait_frames import assert_each_clip_shows_its_own_portrait
from .server import save_mp4, start_server

pytestmark = [pytest.mark.service, pytest.mark.slow]  # the 512 px decoder: ~20 s a frame on 2 cores

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def liveportrait_server():
    with start_server(startup_timeout=300, AVATAR_BACKEND="liveportrait", DEVICE="cpu",
                      RENDER_CAPACITY_FPS="50", MODELS_DIR=str(shared_random_models_dir(seed=0))) as server:
        yield server


def test_two_portraits_at_once_each_come_back_in_their_own_frames(liveportrait_server, astronaut):
    # RENDER_CAPACITY_FPS=50: both requests are admitted before the first batch measures the cpu's
    # capacity, so the render scheduler has frames of both portraits to batch together.
    assert_each_clip_shows_its_own_portrait(liveportrait_server, astronaut, {"text": "Hi.", "fps": 2})
    rendering = liveportrait_server.health()["detail"]["rendering"]
    assert rendering["mode"] == "render scheduler" and rendering["streams"] == 0


def test_health_reports_liveportrait(liveportrait_server):
    liveportrait_server.assert_serves("liveportrait")


def test_generate_returns_an_mp4_as_long_as_the_speech(liveportrait_server, tmp_path):
    with liveportrait_server.client(timeout=600) as client:
        response = client.post("/generate", json={"text": "Hi.", "fps": 2})
    path = save_mp4(response, tmp_path)
    _, _, audio_seconds = read_audio(path)
    assert audio_seconds > 0.2
    assert abs(video_duration(path) - audio_seconds) <= 0.5  # one frame at 2 fps
    assert response.headers["x-avatar-backend"] == "liveportrait"

