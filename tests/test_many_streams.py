"""Many streams on one server: each admitted stream is served whole, and one past capacity is told
to come back later (503 with Retry-After) instead of making every stream fall behind."""
from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import av
import pytest
from websockets.sync.client import connect

from runtime.media.fmp4 import FragmentReader

from .server import start_server

pytestmark = pytest.mark.service

TEXTS = [
    "The first stream tells a short story about a lighthouse keeper and his cat.",
    "The second stream reads the weather for the mountains, the coast and the valleys.",
]


def _stream(server, text: str) -> tuple[int, dict, bytes]:
    with server.client() as client, client.stream("POST", "/generate/stream", json={"text": text}) as response:
        return response.status_code, dict(response.headers), response.read()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_two_concurrent_streams_both_deliver_complete_valid_streams(default_server):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda text: _stream(default_server, text), TEXTS))
    for status, headers, body in results:
        assert status == 200, body[:500]
        fragments = FragmentReader().feed(body)
        assert fragments and all(f.runs["video"].starts_with_keyframe for f in fragments)
        with av.open(io.BytesIO(body)) as container:
            frames = sum(1 for _ in container.decode(video=0))
            audio = container.streams.audio[0]
            audio_seconds = (float(audio.duration * audio.time_base) if audio.duration
                             else fragments[-1].end_seconds("audio"))
        video_seconds = fragments[-1].end_seconds("video")
        assert frames == round(video_seconds * 25) > 50  # every frame of the clip is there and decodes
        assert abs(video_seconds - audio_seconds) <= 0.1
    assert results[0][2] != results[1][2]  # each client got its own clip
    with default_server.client() as client:
        metrics = client.get("/metrics").text
        rendering = client.get("/health").json()["detail"]["rendering"]
    assert _metric(metrics, "avatar_render_frames_per_second") >= 0
    assert _metric(metrics, "avatar_render_streams_active") == 0  # both gave their share back
    assert rendering["mode"] == "parallel" and rendering["capacity_frames_per_second"] > 0
    assert rendering["streams"] == 0


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """Room for exactly one 25 fps stream: 30 frames/s at a headroom of 0.9."""
    with start_server(MODELS_DIR=str(tmp_path_factory.mktemp("no-models")), RENDER_CAPACITY_FPS="30",
                      BUSY_RETRY_AFTER_S="7") as server:
        yield server


def test_a_stream_past_capacity_gets_503_with_retry_after_and_a_later_one_is_admitted(small_server):
    ws_url = small_server.url.replace("http://", "ws://") + "/ws"
    # A conversation holds the only place for as long as its socket is open.
    with connect(ws_url, open_timeout=30) as holder:
        holder.send(json.dumps({"type": "start"}))
        assert json.loads(holder.recv(timeout=60))["event"] == "ready"
        with small_server.client() as client:
            refused = client.post("/generate/stream", json={"text": TEXTS[1]})
            rendering = client.get("/health").json()["detail"]["rendering"]
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "7"
        body = refused.json()
        assert body["error"] == "busy" and "capacity" in body["detail"]
        assert body["request_id"] == refused.headers["x-request-id"]
        assert rendering["capacity_frames_per_second"] == 30 and rendering["streams"] == 1

        with connect(ws_url, open_timeout=30) as second:  # a second conversation is refused the same way
            second.send(json.dumps({"type": "start"}))
            answer = json.loads(second.recv(timeout=60))
        assert answer["error"] == "busy" and answer["retry_after_s"] == 7

    deadline = time.monotonic() + 30  # the server sees the socket close and gives the place back
    while small_server.health()["detail"]["rendering"]["streams"] and time.monotonic() < deadline:
        time.sleep(0.1)
    status, _, body = _stream(small_server, TEXTS[1])
    assert status == 200 and FragmentReader().feed(body)
    with small_server.client() as client:
        metrics = client.get("/metrics").text
    assert _metric(metrics, "avatar_render_streams_refused_total") == 2
    assert _metric(metrics, "avatar_render_capacity_frames_per_second") == 30
