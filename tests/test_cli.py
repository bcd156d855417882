"""The `avatar` command: a video from the command line, in-process or through a running service."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import av
import pytest

from .server import REPO

pytestmark = pytest.mark.service


def _avatar(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def _assert_valid_mp4(path, fps: int = 25) -> None:
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        video_seconds = frames / fps
        audio_seconds = float(audio.duration * audio.time_base)
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
    assert frames > 25
    assert abs(video_seconds - audio_seconds) <= 0.1


@pytest.mark.unit
def test_pyproject_installs_the_avatar_command():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["avatar"] == "runtime.cli:main"


@pytest.mark.slow
def test_say_in_process_writes_an_mp4_and_shows_progress(tmp_path, astronaut):
    from PIL import Image

    image = tmp_path / "me.png"
    Image.fromarray(astronaut).save(image)
    out = tmp_path / "hello.mp4"
    done = _avatar("say", "Hello from the command line. This runs in one process.", "--image", str(image),
                   "-o", str(out), AVATAR_BACKEND="meshwarp", MODELS_DIR=str(tmp_path / "no-models"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rendering (meshwarp)" in done.stderr and "frame" in done.stderr
    frames = int(done.stdout.split(":")[1].split()[0])
    assert f"{frames}/{frames}" in done.stderr, "the bar ends at frames rendered of the total"
    _assert_valid_mp4(out)


def test_say_through_a_server_and_health(default_server, tmp_path):
    out = tmp_path / "served.mp4"
    done = _avatar("say", "Hello through the server.", "--server", default_server.url, "-o", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "receiving (meshwarp)" in done.stderr
    _assert_valid_mp4(out)
    health = _avatar("health", "--server", default_server.url)
    assert health.returncode == 0 and json.loads(health.stdout)["avatar_backend"] == "meshwarp"


def test_bad_input_is_a_clear_error_not_a_traceback(default_server, tmp_path):
    done = _avatar("say", "   ", "--server", default_server.url, "-o", str(tmp_path / "x.mp4"))
    assert done.returncode == 2 and "invalid_text" in done.stderr and "Traceback" not in done.stderr
