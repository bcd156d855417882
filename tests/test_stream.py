"""Watching the avatar while it renders: POST /generate/stream against a real server."""
from __future__ import annotations

import time

import pytest

from runtime.media.fmp4 import FragmentReader, iter_boxes
from runtime.media.lipsync import measure_lip_sync

from testkit.mp4 import first_video_frame
from testkit.service import PeakRss, rss_bytes

from .test_service_e2e import SPEECH, assert_lip_synced_video

PARAGRAPH = (
    "Good morning, and welcome to the show. Today we are going to talk about the mountains of the north, "
    "the rivers that run down from them, and the small towns along their banks, where people still bake bread "
    "the way their grandparents did. "
)
SIXTY_SECONDS = PARAGRAPH * 5

pytestmark = pytest.mark.service


def test_first_frame_plays_before_the_stream_ends_and_the_whole_body_is_a_synced_mp4(default_server, tmp_path):
    body = bytearray()
    first_frame_at = None  # bytes received when the first frame decoded
    with default_server.client() as client, client.stream("POST", "/generate/stream", json={"text": SPEECH}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "video/mp4"
        assert response.headers["x-avatar-backend"] == "meshwarp"
        assert response.headers["x-tts-engine"] == "piper"
        assert len(response.headers["x-request-id"]) >= 8
        assert response.headers.get("transfer-encoding") == "chunked"
        for chunk in response.iter_raw():
            body.extend(chunk)
            if first_frame_at is None:
                frame = first_video_frame(bytes(body))
                if frame is not None:
                    first_frame_at = len(body)
                    assert frame.width == 512 and frame.height == 512
    assert first_frame_at is not None and first_frame_at < len(body) / 3, "the first frame came with the first fragments"
    boxes = [kind for kind, _, _ in iter_boxes(bytes(body))]
    if boxes[-1] == b"mfra":  # the muxer's random-access index closes the stream
        boxes.pop()
    assert boxes[:2] == [b"ftyp", b"moov"] and boxes[2:] == [b"moof", b"mdat"] * ((len(boxes) - 2) // 2)
    fragments = FragmentReader().feed(bytes(body))
    assert all(f.runs["video"].starts_with_keyframe for f in fragments)
    durations = [f.end_seconds() - f.start_seconds() for f in fragments]
    # A short first fragment so that playback starts soon, then fragments growing to the regular ~0.5 s.
    assert durations[0] <= 0.2 and durations[:3] == sorted(durations[:3])
    assert all(0.4 <= duration <= 1.0 for duration in durations[2:-1])
    path = tmp_path / "stream.mp4"
    path.write_bytes(body)
    report = measure_lip_sync(path)
    assert report.video_duration > 5
    assert_lip_synced_video(report, fps=25)


def test_stream_refuses_bad_input_before_any_byte_with_a_json_error(default_server):
    from skimage.data import chelsea  # a cat

    from .server import png_base64

    cat_image = chelsea()
    with default_server.client() as client:
        empty = client.post("/generate/stream", json={"text": "  "})
        no_face = client.post("/generate/stream", json={"text": "Hello.", "image": png_base64(cat_image)})
        bad_voice = client.post("/generate/stream", json={"text": "Hello.", "voice": "nobody"})
    for response, error in ((empty, "invalid_text"), (no_face, "no_face"), (bad_voice, "unknown_voice")):
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == error and body["detail"] and body["request_id"] == response.headers["x-request-id"]


@pytest.mark.slow
def test_sixty_seconds_of_speech_stream_in_bounded_memory_and_start_before_tts_could_finish(default_server):
    from runtime.config import Settings
    from runtime.device import DeviceChoice
    from runtime.tts.piper_engine import PiperEngine

    # How long the whole text takes to synthesize in one piece, on this machine, now.
    engine = PiperEngine.load(Settings(), DeviceChoice("cpu", "test", False))
    started = time.perf_counter()
    whole_tts_seconds = engine.synthesize(SIXTY_SECONDS).duration and time.perf_counter() - started
    del engine

    pid = default_server.process.pid
    with default_server.client() as client:
        client.post("/generate", json={"text": "Warm up."}).raise_for_status()
    idle = rss_bytes(pid)
    reader, media_seconds = FragmentReader(), 0.0
    with PeakRss(pid) as memory, default_server.client() as client:
        started = time.perf_counter()
        with client.stream("POST", "/generate/stream", json={"text": SIXTY_SECONDS}) as response:
            first_fragment = None
            for chunk in response.iter_raw():
                for fragment in reader.feed(chunk):
                    first_fragment = first_fragment or time.perf_counter() - started
                    media_seconds = fragment.end_seconds()
    assert media_seconds > 50
    assert first_fragment < whole_tts_seconds, (first_fragment, whole_tts_seconds)
    growth_mb = (memory.peak_bytes - idle) / 2**20
    assert growth_mb < 300, f"RSS grew from {idle / 2**20:.0f} MB by {growth_mb:.0f} MB"


def test_client_that_disconnects_stops_rendering(default_server):
    cancelled_before = default_server.health()["detail"]["requests"]["cancelled"]  # the server is shared
    with default_server.client() as client:
        with client.stream("POST", "/generate/stream", json={"text": SIXTY_SECONDS}) as response:
            request_id = response.headers["x-request-id"]
            for _ in response.iter_raw():
                break  # the first bytes are here: hang up
    match = default_server.wait_for_log(
        rf"request {request_id} cancelled after (\d+) frames \(.*; stopped ([0-9.]+) s after the cancel\)", timeout=10)
    frames, stopped_after = int(match.group(1)), float(match.group(2))
    assert frames < 60 * 25 / 2, "most of the speech was never rendered"
    assert stopped_after < 1.0
    deadline = time.monotonic() + 5  # the count moves just after the log line, in the request's thread
    while default_server.health()["detail"]["requests"]["cancelled"] == cancelled_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert default_server.health()["detail"]["requests"]["cancelled"] == cancelled_before + 1
