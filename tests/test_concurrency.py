"""Requests that pile up wait their turn; none is lost, none crashes the server."""
from __future__ import annotations

import pytest
from concurrent.futures import ThreadPoolExecutor

import av
import io

pytestmark = pytest.mark.service


def test_eight_concurrent_requests_all_succeed(default_server):
    texts = [f"This is request number {n}, spoken at the same time as seven others." for n in range(8)]

    def post(text: str):
        with default_server.client() as client:
            return client.post("/generate", json={"text": text})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, texts))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.headers["x-request-id"] for r in responses}) == 8
    for response in responses:
        with av.open(io.BytesIO(response.content)) as container:
            stream = container.streams.video[0]
            assert stream.frames == int(response.headers["x-video-frames"]) > 50
    # Requests share the TTS pool and the device a chunk at a time: the last served waited for the
    # others (in the TTS pool or for the device), where the first did not.
    waited = [float(r.headers["x-queue-seconds"]) + float(r.headers["x-tts-seconds"]) for r in responses]
    assert max(waited) > 2 * min(waited), waited
    assert default_server.health()["detail"]["queue"]["pending"] == 0
