"""A user's first day: start the service on the embedded default, ask for a video, check the video."""
from __future__ import annotations

import base64
import io
import uuid
import wave

import av
import numpy as np
import pytest

from runtime.media.lipsync import LipSyncReport, measure_lip_sync

from .server import png_base64, save_mp4

pytestmark = pytest.mark.service

SPEECH = (
    "Hello there! I am a talking head, made from a single photograph. "
    "Today we will talk about mountains, oceans and the moon. How does that sound to you?"
)


def assert_lip_synced_video(report: LipSyncReport, fps: int) -> None:
    """The contract every backend's video meets (DESIGN.md): sync, duration, face, lips follow the sound."""
    assert abs(report.video_duration - report.audio_duration) <= 0.1, report.summary()
    assert report.frames == round(fps * report.video_duration), report.summary()
    assert report.face_frames == report.frames, f"MediaPipe lost the face: {report.summary()}"
    near_zero = {lag: report.correlations[lag] for lag in (-1, 0, 1)}
    assert max(near_zero.values()) >= 0.5, f"lips do not follow the speech: {report.correlations}"
    assert report.best_lag in (-1, 0, 1), f"lips are out of sync: {report.correlations}"


@pytest.fixture(scope="module")
def text_only_video(default_server, tmp_path_factory):
    with default_server.client() as client:
        response = client.post("/generate", json={"text": SPEECH})
    return response, save_mp4(response, tmp_path_factory.mktemp("video"))


def test_health_has_the_seed_shape_and_says_why_meshwarp_was_chosen(default_server):
    health = default_server.health()
    assert health["status"] == "healthy"
    assert health["device"] == "cpu"
    assert health["avatar_backend"] == "meshwarp"
    assert health["models"] == {"tts": True, "avatar": True, "avatar_backend": "meshwarp"}
    avatar = health["detail"]["avatar"]
    assert avatar["requested"] == "auto" and avatar["first_choice"] == "sadtalker"
    assert avatar["loaded"] == "meshwarp" and avatar["fell_back"] is False and avatar["failures"] == {}
    assert avatar["skipped"] == {"sadtalker": "weights not found in MODELS_DIR"}
    assert health["detail"]["tts"]["engine"] == "piper"
    assert health["detail"]["tts"]["voice"] == "en_US-joe-medium"


def test_text_only_request_returns_a_lip_synced_mp4(text_only_video):
    response, path = text_only_video
    assert response.headers["x-avatar-backend"] == "meshwarp"
    assert len(response.headers["x-request-id"]) >= 8
    seconds = {stage: float(response.headers[f"x-{stage}-seconds"])
               for stage in ("tts", "queue", "animation", "encoding", "total")}
    assert min(seconds[stage] for stage in ("tts", "animation", "encoding")) > 0, seconds
    # The stages account for the whole request (each header is rounded to a millisecond).
    assert abs(seconds["total"] - sum(seconds[stage] for stage in ("tts", "queue", "animation", "encoding"))) < 0.01, seconds
    report = measure_lip_sync(path)
    assert report.video_duration > 5, "the text makes well over five seconds of speech"
    assert_lip_synced_video(report, fps=25)


def test_video_is_h264_aac_faststart_at_the_portrait_size(text_only_video):
    _, path = text_only_video
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert (container.streams.video[0].width, container.streams.video[0].height) == (512, 512)
    head = path.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))


def test_frames_move_the_mouth_not_just_the_pixels(text_only_video, astronaut):
    """Frames differ from the source and from each other, and the whole portrait is kept."""
    _, path = text_only_video
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
    changes = [np.abs(frames[i] - frames[i - 1]).mean() for i in range(1, len(frames))]
    assert np.median(changes) > 0.05
    # Far from the face (top-left corner) the frame is the portrait itself, up to compression.
    assert np.abs(frames[40][:80, :80] - astronaut[:80, :80]).mean() < 4


def test_multipart_with_a_portrait_file(default_server, astronaut, tmp_path):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG", quality=92)
    with default_server.client() as client:
        response = client.post(
            "/generate", data={"text": "A portrait sent as a file part.", "fps": "20"},
            files={"image": ("me.jpg", buffer.getvalue(), "image/jpeg")},
        )
    report = measure_lip_sync(save_mp4(response, tmp_path))
    assert report.fps == 20
    assert report.frames == round(20 * report.video_duration)
    assert report.face_frames == report.frames


def _piper_wav(text: str) -> bytes:
    """Speech made with the project's own TTS, as a wav file."""
    from runtime.config import Settings
    from runtime.device import DeviceChoice
    from runtime.media.audio import wav_bytes
    from runtime.tts.piper_engine import PiperEngine

    engine = PiperEngine.load(Settings(), DeviceChoice("cpu", "test", False))
    return wav_bytes(engine.synthesize(text))


def test_audio_replaces_tts(default_server, tmp_path):
    audio = _piper_wav("This sentence was spoken before the request was sent.")
    with wave.open(io.BytesIO(audio)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    with default_server.client() as client:
        response = client.post("/generate", json={"audio": base64.b64encode(audio).decode(), "image": None})
    report = measure_lip_sync(save_mp4(response, tmp_path))
    assert float(response.headers["x-tts-seconds"]) < 0.5
    assert report.frames == int(np.ceil(round(seconds * 25, 6)))
    assert abs(report.audio_duration - report.video_duration) <= 0.1


def test_docs_and_openapi_describe_generate(default_server):
    with default_server.client() as client:
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
    body = spec["paths"]["/generate"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "text" in body["application/json"]["schema"]["properties"]


def test_same_portrait_twice_reuses_its_preparation(default_server, astronaut):
    # A portrait no other request of this server has sent: mirrored, with a few pixels set by a fresh id.
    unique = astronaut[:, ::-1].copy()
    unique[0, :16] = np.frombuffer(uuid.uuid4().bytes, np.uint8)[:, None]
    mirrored = png_base64(unique)
    with default_server.client() as client:
        cached_at_first = client.get("/health").json()["detail"]["avatar"]["cached_portraits"]
        first = client.post("/generate", json={"text": "Hi.", "image": mirrored})
        cached_before = client.get("/health").json()["detail"]["avatar"]["cached_portraits"]
        second = client.post("/generate", json={"text": "Hi again.", "image": mirrored})
        cached_after = client.get("/health").json()["detail"]["avatar"]["cached_portraits"]
    assert first.status_code == second.status_code == 200
    assert cached_before == min(cached_at_first + 1, 16)  # the new portrait was prepared and kept (16 at most)
    assert cached_after == cached_before
