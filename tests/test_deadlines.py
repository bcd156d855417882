"""Work for nobody is stopped: a client that hangs up, a request past REQUEST_TIMEOUT_S, a SIGTERM
with requests in flight. Each against a real server; the server's log and CPU time are the proof."""
from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from .server import start_server

pytestmark = pytest.mark.service


def _speech_like_wav(seconds: float, sample_rate: int = 16000) -> bytes:
    """A mono 16-bit wav whose loudness rises and falls like syllables (meshwarp opens the mouth to it)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    rng = np.random.default_rng(0)
    samples = (0.3 * envelope * (np.sin(2 * np.pi * 180 * t) + 0.3 * rng.standard_normal(t.size))).clip(-1, 1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((samples * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


LONG_AUDIO = base64.b64encode(_speech_like_wav(60.0)).decode()
# Long enough to outlast REQUEST_TIMEOUT_S and a drain's grace on a quiet machine too: a quiet
# 2-core CPU rendered and encoded the 60 s clip in under 4 s.
VERY_LONG_AUDIO = base64.b64encode(_speech_like_wav(115.0)).decode()
SHORT_AUDIO = base64.b64encode(_speech_like_wav(2.0)).decode()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(MODELS_DIR=str(tmp_path_factory.mktemp("none")), DATA_DIR=str(tmp_path_factory.mktemp("data")),
                      REQUEST_TIMEOUT_S="4") as running:
        yield running


def test_client_that_disconnects_stops_rendering(server):
    def hang_up_after_two_seconds():
        try:
            with httpx.Client(base_url=server.url, timeout=httpx.Timeout(2.0)) as client:
                client.post("/generate", json={"audio": LONG_AUDIO, "text": ""})
        except httpx.TimeoutException:
            pass

    hang_up_after_two_seconds()
    hung_up = time.monotonic()
    match = server.wait_for_log(r"request (\w+) cancelled after (\d+) frames \(client disconnected; "
                                  r"stopped ([\d.]+) s after the cancel\)", timeout=5)
    noticed = time.monotonic() - hung_up
    assert int(match.group(2)) > 0, "the render had not started: the test did not disconnect mid-render"
    assert noticed < 2.0 and float(match.group(3)) < 2.0
    # And the server really is idle again: almost no CPU over the next second.
    cpu = _cpu_seconds(server.process.pid)
    time.sleep(1.0)
    assert _cpu_seconds(server.process.pid) - cpu < 0.3


def test_a_request_past_the_timeout_gets_a_504_and_its_work_stops(server):
    started = time.monotonic()
    with server.client() as client:
        response = client.post("/generate", json={"audio": VERY_LONG_AUDIO})
    assert response.status_code == 504, response.text[:300]
    body = response.json()
    assert body["error"] == "timeout" and body["request_id"] == response.headers["x-request-id"]
    assert time.monotonic() - started < 4 + 3
    server.wait_for_log(rf"request {body['request_id']} cancelled after \d+ frames \(timeout", timeout=3)


def test_sigterm_lets_short_work_finish_and_cancels_the_rest_within_the_grace(tmp_path):
    with start_server(MODELS_DIR=str(tmp_path / "none"), DATA_DIR=str(tmp_path / "data"),
                      SHUTDOWN_GRACE_S="3") as server:
        results: dict[str, httpx.Response | Exception] = {}

        def send(name: str, body: dict) -> None:
            try:
                with server.client(timeout=30) as client:
                    results[name] = client.post("/generate", json=body)
            except Exception as exc:  # noqa: BLE001 - recorded: a lost request fails the test below
                results[name] = exc

        # Audio, not text: no TTS, so the short request takes the device first, as the test needs.
        short = threading.Thread(target=send, args=("short", {"audio": SHORT_AUDIO}))
        long = threading.Thread(target=send, args=("long", {"audio": VERY_LONG_AUDIO}))
        short.start()
        time.sleep(0.2)
        long.start()
        time.sleep(0.3)
        os.kill(server.process.pid, signal.SIGTERM)
        signalled = time.monotonic()
        short.join(timeout=20)
        long.join(timeout=20)
        server.process.wait(timeout=20)
        stopped_after = time.monotonic() - signalled
        log = server.log()
    assert isinstance(results["short"], httpx.Response) and results["short"].status_code == 200, (
        results["short"], getattr(results["short"], "text", "")[:300])
    assert isinstance(results["long"], httpx.Response), f"the long request got no answer: {results['long']!r}"
    assert results["long"].status_code == 503 and results["long"].json()["error"] == "shutting_down"
    assert stopped_after < 3 + 5, f"the server took {stopped_after:.1f} s to stop"
    assert server.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it stopped
    assert "Draining" in log and "Grace period over: cancelling 1 request" in log
