"""Users of the running service: the lip refiner after the backend (LIP_REFINER, per-request
`lip_refine`), /health saying whether it is on, and POST /evaluate scoring an mp4."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from scipy.io import wavfile

from .quality_clips import decoded, speak
from testkit.quality_references import write_wav2lip_checkpoint
from .server import png_base64, save_mp4, start_server

pytestmark = pytest.mark.service

TEXT = "Hello, nice to meet you."


@pytest.fixture(scope="module")
def refiner_server(tmp_path_factory):
    """The embedded default with LIP_REFINER=wav2lip on a random-weight official checkpoint."""
    models = tmp_path_factory.mktemp("models")
    write_wav2lip_checkpoint(models / "wav2lip" / "wav2lip_gan.pth", seed=11)
    with start_server(MODELS_DIR=str(models), LIP_REFINER="wav2lip") as server:
        yield server


@pytest.mark.slow  # refiner_server: ~8% of the fast tier's CPU; test_wav2lip.py keeps the refiner there
def test_refiner_runs_after_the_backend_and_a_request_can_turn_it_off(refiner_server, astronaut, tmp_path):
    refiner = refiner_server.health()["detail"]["lip_refiner"]
    assert refiner["active"] is True and refiner["checkpoint"] == "wav2lip_gan.pth"

    # The same speech for both requests (Piper samples its durations afresh each time).
    speech = speak(TEXT)
    wav = io.BytesIO()
    wavfile.write(wav, speech.sample_rate, (speech.samples * 32767).astype(np.int16))
    body = {"audio": base64.b64encode(wav.getvalue()).decode(), "image": png_base64(astronaut)}
    with refiner_server.client() as client:
        refined_response = client.post("/generate", json=body)
        plain_response = client.post("/generate", json={**body, "lip_refine": False})
    assert refined_response.headers["x-lip-refiner"] == "wav2lip" and plain_response.headers["x-lip-refiner"] == "none"
    refined_frames, refined_speech, _ = decoded(save_mp4(refined_response, tmp_path, "refined.mp4"))
    plain_frames, plain_speech, _ = decoded(save_mp4(plain_response, tmp_path, "plain.mp4"))
    assert len(refined_frames) == len(plain_frames) == int(refined_response.headers["x-video-frames"]) > 10
    assert abs(refined_speech.duration - plain_speech.duration) < 0.03
    assert abs(refined_speech.duration - len(refined_frames) / 25) < 0.05
    difference = np.mean([np.abs(a.astype(int) - b).mean(axis=2) for a, b in zip(refined_frames, plain_frames)], axis=0)
    # The face box's lower part was redrawn (random weights: grey); the eyes, the hair and the
    # background are the backend's (up to the encoder's noise).
    assert difference[150:190, 190:260].mean() > 20
    assert difference[:110].mean() < 2 and difference[300:].mean() < 2
    # /health counts what the refiner did: it found the face, tracked rather than detected on every frame
    done = refiner_server.health()["detail"]["lip_refiner"]["since_start"]
    assert done["refined"] >= len(refined_frames) and done["no_face"] == 0
    assert done["detection_hit_rate"] == 1.0 and done["detections"] < done["frames"] / 4


@pytest.mark.slow  # refiner_server: ~8% of the fast tier's CPU; test_wav2lip.py keeps the refiner there
def test_the_stream_is_refined_too(refiner_server, astronaut, tmp_path):
    speech = speak(TEXT)
    wav = io.BytesIO()
    wavfile.write(wav, speech.sample_rate, (speech.samples * 32767).astype(np.int16))
    body = {"audio": base64.b64encode(wav.getvalue()).decode(), "image": png_base64(astronaut)}
    streams = {}
    with refiner_server.client() as client:
        for lip_refine in (True, False):
            response = client.post("/generate/stream", json={**body, "lip_refine": lip_refine})
            assert response.status_code == 200, response.text
            assert response.headers["x-lip-refiner"] == ("wav2lip" if lip_refine else "none")
            path = tmp_path / f"stream-{lip_refine}.mp4"
            path.write_bytes(response.content)
            streams[lip_refine] = decoded(path)[0]
    refined, plain = streams[True], streams[False]
    assert len(refined) == len(plain) > 10  # the refiner's look-ahead holds frames back, never drops them
    difference = np.mean([np.abs(a.astype(int) - b).mean(axis=2) for a, b in zip(refined, plain)], axis=0)
    assert difference[150:190, 190:260].mean() > 20
    assert difference[:110].mean() < 2 and difference[300:].mean() < 2


def test_without_weights_the_service_starts_with_the_refiner_off_and_says_why(tmp_path, astronaut):
    with start_server(MODELS_DIR=str(tmp_path), LIP_REFINER="wav2lip") as server:
        refiner = server.health()["detail"]["lip_refiner"]
        assert refiner["active"] is False and "wav2lip_gan.pth or wav2lip.pth" in refiner["reason"]
        assert "Lip refiner wav2lip is off" in server.log()
        with server.client() as client:
            assert client.post("/generate", json={"text": TEXT}).status_code == 200
            response = client.post("/generate", json={"text": TEXT, "lip_refine": True})
    assert response.status_code == 409
    assert response.json()["error"] == "lip_refiner_unavailable" and "wav2lip" in response.json()["detail"]


def test_evaluate_scores_an_mp4_sent_as_multipart_or_json(default_server, astronaut, tmp_path):
    with default_server.client() as client:
        clip = client.post("/generate", json={"text": "The quick brown fox jumps over the lazy dog.",
                                              "image": png_base64(astronaut)}).content
        portrait = base64.b64decode(png_base64(astronaut))
        multipart = client.post("/evaluate", files={"video": ("clip.mp4", clip, "video/mp4"),
                                                    "portrait": ("face.png", portrait, "image/png")})
        as_json = client.post("/evaluate", json={"video": base64.b64encode(clip).decode()})
    assert multipart.status_code == 200, multipart.text
    report = multipart.json()
    assert report["lip_sync"]["score"] >= 0.4 and report["identity"]["reference"] == "portrait"
    assert report["syncnet"]["available"] is False and "syncnet_v2.model" in report["syncnet"]["reason"]
    assert as_json.status_code == 200 and as_json.json()["identity"]["reference"] == "first_frame"
    assert as_json.json()["clip"]["frames"] == report["clip"]["frames"]


@pytest.mark.parametrize("send, status, error", [
    (lambda c: c.post("/evaluate", files={"video": ("x.mp4", b"not a video at all", "video/mp4")}), 422, "invalid_video"),
    (lambda c: c.post("/evaluate", json={"video": "%%% not base64"}), 422, "invalid_video"),
    (lambda c: c.post("/evaluate", json={}), 422, "invalid_request"),
    (lambda c: c.post("/evaluate", json={"video": base64.b64encode(b"x" * 100).decode(), "nonsense": 1}),
     422, "invalid_request"),
])
def test_evaluate_answers_bad_input_with_a_clear_4xx(default_server, send, status, error):
    with default_server.client() as client:
        response = send(client)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["detail"] and body["request_id"]
