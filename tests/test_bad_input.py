"""Every mistake a client can make is a 4xx naming the problem, and the server keeps serving."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from .server import png_base64, start_server

pytestmark = pytest.mark.service


def _png_header_claiming(width: int, height: int) -> bytes:
    """A real PNG of the given size, small on the wire (a flat image compresses to almost nothing)."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


PYTHON_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>|\bErrno\b")
ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(])/(?:[\w.-]+/)+")

BAD_REQUESTS = {
    "empty text": ({"text": ""}, 422, "invalid_text"),
    "blank text": ({"text": "   \n\t "}, 422, "invalid_text"),
    "over-long text": ({"text": "word " * 1000}, 422, "invalid_text"),
    "text of the wrong type": ({"text": 42}, 422, "invalid_request"),
    "fps of the wrong type": ({"text": "hi", "fps": "fast"}, 422, "invalid_request"),
    "fps out of range": ({"text": "hi", "fps": 0}, 422, "invalid_request"),
    "unknown field": ({"text": "hi", "colour": "blue"}, 422, "invalid_request"),
    "image not base64": ({"text": "hi", "image": "this is *not* base64!"}, 422, "invalid_image"),
    "image not an image": ({"text": "hi", "image": base64.b64encode(b"just some bytes" * 20).decode()}, 422, "invalid_image"),
    "truncated image": ({"text": "hi", "image": None}, 422, "invalid_image"),  # filled in below
    "absurdly large image": ({"text": "hi", "image": None}, 413, "image_too_large"),  # filled in below
    "audio not audio": ({"text": "hi", "audio": base64.b64encode(b"RIFF....WAVEfmt garbage" * 30).decode()}, 422, "invalid_audio"),
    "audio not base64": ({"audio": "%%%"}, 422, "invalid_audio"),
    "unknown voice": ({"text": "hi", "voice": "nobody"}, 422, "unknown_voice"),
    "fps over the server's limit": ({"text": "hi", "fps": 500}, 422, "invalid_request"),
    "option the backend does not take": ({"text": "hi", "backend_options": {"pose_style": 3}}, 422, "invalid_request"),
    "backend options not an object": ({"text": "hi", "backend_options": [3]}, 422, "invalid_request"),
}


@pytest.fixture(scope="module")
def small_limits_server(tmp_path_factory):
    with start_server(MODELS_DIR=str(tmp_path_factory.mktemp("none")), MAX_TEXT_CHARS="500",
                      MAX_IMAGE_PIXELS="4000000") as server:
        yield server


def _body(name: str, astronaut: np.ndarray) -> dict:
    body = dict(BAD_REQUESTS[name][0])
    if name == "truncated image":
        png = base64.b64decode(png_base64(astronaut))
        body["image"] = base64.b64encode(png[: len(png) // 2]).decode()
    if name == "absurdly large image":
        body["image"] = base64.b64encode(_png_header_claiming(20000, 20000)).decode()
    return body


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_a_named_4xx_and_the_next_request_works(small_limits_server, astronaut, name):
    _, status, error = BAD_REQUESTS[name]
    with small_limits_server.client() as client:
        response = client.post("/generate", json=_body(name, astronaut))
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"] == error, body
        assert body["detail"]
        assert not PYTHON_REPR.search(body["detail"]) and not ABSOLUTE_PATH.search(body["detail"]), body
        assert len(body["request_id"]) == 16 and response.headers["x-request-id"] == body["request_id"]
    assert small_limits_server.alive()


def test_broken_json_and_wrong_content(small_limits_server):
    with small_limits_server.client() as client:
        broken = client.post("/generate", content=b'{"text": "hi"', headers={"content-type": "application/json"})
        not_object = client.post("/generate", json=["hi"])
        bad_form = client.post("/generate", files={"text": (None, "hi"), "fps": (None, "-3")})  # multipart
    assert broken.status_code == 400 and broken.json()["error"] == "invalid_json"
    assert not_object.status_code == 400
    assert bad_form.status_code == 422 and "fps" in bad_form.json()["detail"]
    ids = [response.json()["request_id"] for response in (broken, not_object, bad_form)]
    assert len(set(ids)) == 3 and all(response.headers["x-request-id"] == id_
                                      for response, id_ in zip((broken, not_object, bad_form), ids))


def test_a_good_request_after_all_the_bad_ones_succeeds(small_limits_server, astronaut):
    with small_limits_server.client() as client:
        for name in BAD_REQUESTS:
            client.post("/generate", json=_body(name, astronaut))
        response = client.post("/generate", json={"text": "Still here, still talking."})
        health = client.get("/health").json()
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert len(response.headers["x-request-id"]) == 16
    assert health["status"] == "healthy"


def test_an_internal_failure_is_a_500_that_names_only_the_request(tmp_path):
    """A server misconfigured so that encoding fails: the client learns the request id, not the
    exception; the log has the whole story under that id; the next request is still answered."""
    with start_server(MODELS_DIR=str(tmp_path), X264_PRESET="no-such-preset") as server:
        with server.client() as client:
            response = client.post("/generate", json={"text": "This cannot be encoded."})
            health = client.get("/health")
        log = server.log()
    assert response.status_code == 500, response.text
    body = response.json()
    request_id = body["request_id"]
    assert body["error"] == "internal_error" and response.headers["x-request-id"] == request_id
    assert body["detail"] == f"internal error; the server log has the details under request {request_id}"
    assert f"request {request_id} failed" in log and "no-such-preset" in log
    assert health.status_code == 200
