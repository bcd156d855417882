"""Two portraits through one server at once: every frame of each clip shows its own portrait."""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np

from .server import png_base64


def assert_each_clip_shows_its_own_portrait(server, astronaut: np.ndarray, body: dict) -> None:
    """POST /generate for the astronaut and its mirror image at the same time (the render scheduler
    may put their frames in one batch); outside the re-rendered face each frame is its own portrait."""
    portraits = [astronaut, np.ascontiguousarray(astronaut[:, ::-1])]

    def generate(portrait: np.ndarray):
        with server.client(timeout=1800) as client:
            return client.post("/generate", json={**body, "image": png_base64(portrait)})

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(generate, portraits))
    for own, response in enumerate(responses):
        assert response.status_code == 200, response.text[:1000]
        with av.open(io.BytesIO(response.content)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == int(response.headers["x-video-frames"]) >= 1
        for frame in frames:
            assert frame.shape == portraits[own].shape
            distances = [np.abs(frame.astype(np.int16) - portrait.astype(np.int16)).mean() for portrait in portraits]
            assert distances[own] < distances[1 - own] / 2, distances
