"""The worst inputs at once (the issue's attack): every one answered 200 or 4xx, never 5xx, and the
server's resident memory stays within 400 MB of its idle level, read from /proc while it happens."""
from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from testkit.service import PeakRss, rss_bytes

from .server import start_server

pytestmark = [pytest.mark.service, pytest.mark.slow]

MEMORY_BUDGET_BYTES = 400 * 1024 * 1024


def _huge_png(astronaut: np.ndarray) -> str:
    """39.6 megapixels (7290x5430): a portrait filling most of a flat background."""
    canvas = Image.new("RGB", (7290, 5430), (128, 128, 128))
    canvas.paste(Image.fromarray(astronaut).resize((4800, 4800)), (1245, 315))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=6)
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_worst_texts_and_four_40_megapixel_pngs_at_once(tmp_path, astronaut):
    huge = _huge_png(astronaut)
    bodies = {
        "2000 characters without punctuation": {"text": " ".join(["word"] * 400)[:2000]},
        "2000 digits": {"text": "1234567890" * 200},
        "a NUL": {"text": "before\u0000after"},
        **{f"40-megapixel PNG {i}": {"text": "This is a very large portrait of a person who speaks English.", "image": huge} for i in range(4)},
    }
    raw_bodies = {"a lone surrogate": b'{"text": "lone \\ud800 surrogate"}'}
    # Files up to 40 MB allowed: the photo-like 40-megapixel PNG is ~25 MB, and must reach the decoder.
    with start_server(MODELS_DIR=str(tmp_path / "none"), DATA_DIR=str(tmp_path / "data"),
                      MAX_IMAGE_BYTES=str(40_000_000)) as server:
        pid = server.process.pid
        with server.client() as client:  # idle = loaded, warm, one ordinary request served
            assert client.post("/generate", json={"text": "Warming up."}).status_code == 200
        time.sleep(0.5)
        idle = rss_bytes(pid)
        answers: dict[str, int | str] = {}
        details: dict[str, str] = {}

        def send(name: str, json_body: dict | None = None, raw: bytes | None = None) -> None:
            try:
                with server.client(timeout=300) as client:
                    response = (client.post("/generate", json=json_body) if raw is None else
                                client.post("/generate", content=raw, headers={"content-type": "application/json"}))
                answers[name] = response.status_code
                if response.status_code != 200:
                    details[name] = response.text[:200]
            except httpx.HTTPError as exc:
                answers[name] = f"{type(exc).__name__}: {exc}"

        senders = [threading.Thread(target=send, args=(name, body)) for name, body in bodies.items()]
        senders += [threading.Thread(target=send, args=(name, None, raw)) for name, raw in raw_bodies.items()]
        started = time.monotonic()
        with PeakRss(pid, interval_s=0.02) as memory:
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(timeout=max(1.0, 300 - (time.monotonic() - started)))
        assert server.alive()
        with server.client() as client:
            assert client.post("/generate", json={"text": "Still serving."}).status_code == 200

    assert set(answers) == set(bodies) | set(raw_bodies), f"unanswered: {set(bodies) - set(answers)}"
    for name, status in answers.items():
        assert isinstance(status, int) and (status == 200 or 400 <= status < 500), (name, status, details)
    assert answers["a NUL"] == 422 and answers["a lone surrogate"] == 422
    peak = memory.peak_bytes
    growth = peak - idle
    print(f"idle {idle / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, growth {growth / 2**20:.0f} MB; {answers} {details}")
    assert growth < MEMORY_BUDGET_BYTES, f"RSS grew by {growth / 2**20:.0f} MB over idle ({idle / 2**20:.0f} MB)"
