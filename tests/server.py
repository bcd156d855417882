"""Helpers for tests that talk to the real service."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np

from runtime.launch import REPO, RunningServer, free_port, start_server  # noqa: F401  (re-exported for tests)


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def save_mp4(response: httpx.Response, directory: Path, name: str = "out.mp4") -> Path:
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"] == "video/mp4"
    path = directory / name
    path.write_bytes(response.content)
    return path
