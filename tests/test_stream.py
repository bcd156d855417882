"""Watching the avatar while it renders: POST /generate/stream against a real server."""
from __future__ import annotations

import io
import re
import threading
import time

import av
import pytest

from runtime.media.fmp4 import FragmentReader, iter_boxes
from runtime.media.lipsync import measure_lip_sync

from .test_service_e2e import SPEECH, assert_lip_synced_video

PARAGRAPH = (
    "Good morning, and welcome to the show. Today we are going to talk about the mountains of the north, "
    "the rivers that run down from them, and the small towns along their banks, where people still bake bread "
    "the way their grandparents did. "
)
SIXTY_SECONDS = PARAGRAPH * 5

pytestmark = pytest.mark.service


def _first_frame(data: bytes):
    try:
        with av.open(io.BytesIO(data)) as container:
            for frame in container.decode(video=0):
                return frame
    except (av.error.FFmpegError, ValueError, IndexError):
        return None


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) / 1024


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
                frame = _first_frame(bytes(body))
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
    idle = _rss_mb(pid)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    reader, media_seconds = FragmentReader(), 0.0
    try:
        with default_server.client() as client:
            started = time.perf_counter()
            with client.stream("POST", "/generate/stream", json={"text": SIXTY_SECONDS}) as response:
                first_fragment = None
                for chunk in response.iter_raw():
                    for fragment in reader.feed(chunk):
                        first_fragment = first_fragment or time.perf_counter() - started
                        media_seconds = fragment.end_seconds()
    finally:
        done.set()
        sampler.join()
    assert media_seconds > 50
    assert first_fragment < whole_tts_seconds, (first_fragment, whole_tts_seconds)
    assert peak[0] - idle < 300, f"RSS grew from {idle:.0f} MB to {peak[0]:.0f} MB"


def test_client_that_disconnects_stops_rendering(default_server):
    with default_server.client() as client:
        with client.stream("POST", "/generate/stream", json={"text": SIXTY_SECONDS}) as response:
            request_id = response.headers["x-request-id"]
            for _ in response.iter_raw():
                break  # the first bytes are here: hang up
    closed = time.monotonic()
    pattern = re.compile(rf"request {request_id} cancelled after (\d+) frames \(.*; stopped ([0-9.]+) s after the cancel\)")
    match = None
    while match is None and time.monotonic() - closed < 10:
        match = pattern.search(default_server.log())
        time.sleep(0.05)
    assert match, "the server did not log the cancellation"
    frames, stopped_after = int(match.group(1)), float(match.group(2))
    assert frames < 60 * 25 / 2, "most of the speech was never rendered"
    assert stopped_after < 1.0
    assert default_server.health()["detail"]["requests"]["cancelled"] >= 1
