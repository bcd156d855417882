"""The edge of a real server, tried as an attacker and a sloppy client would: content types, nesting,
control characters, body size and read time, error shapes, the schema's limits, metrics, JSON logs."""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .server import png_base64, start_server

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(MODELS_DIR=str(tmp_path_factory.mktemp("none")), DATA_DIR=str(tmp_path_factory.mktemp("data")),
                      HEADER_TIMEOUT_S="2", BODY_TIMEOUT_S="3", MAX_IMAGE_BYTES="1000000",
                      MAX_AUDIO_BYTES="1000000", LOG_FORMAT="json") as running:
        yield running


def _assert_error_shape(response: httpx.Response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["request_id"] == response.headers["x-request-id"]
    assert "/work" not in body["detail"] and "Traceback" not in body["detail"] and "<" not in body["detail"]
    if error:
        assert body["error"] == error, body
    return body


def test_cross_site_text_plain_post_is_refused_with_415(server):
    # What a form or fetch() on another site can send without a CORS preflight.
    with server.client() as client:
        plain = client.post("/generate", content=b'{"text": "hello"}', headers={"content-type": "text/plain",
                                                                               "origin": "https://evil.example"})
        form = client.post("/generate", data={"text": "hello"})  # application/x-www-form-urlencoded
    _assert_error_shape(plain, 415, "unsupported_media_type")
    _assert_error_shape(form, 415, "unsupported_media_type")
    assert "access-control-allow-origin" not in plain.headers  # CORS_ORIGINS is empty by default


def test_json_nested_a_hundred_thousand_deep_is_a_400(server):
    body = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with server.client() as client:
        response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    _assert_error_shape(response, 400, "invalid_json")
    assert server.alive()


@pytest.mark.parametrize("escaped_text", [r"a NUL \u0000 inside", r"a lone \ud800 surrogate", r"escape \u001b[31m"])
def test_control_characters_and_lone_surrogates_are_refused_with_422(server, escaped_text):
    with server.client() as client:
        response = client.post("/generate", content=f'{{"text": "{escaped_text}"}}'.encode(),
                               headers={"content-type": "application/json"})
    body = _assert_error_shape(response, 422, "invalid_text")
    assert "U+" in body["detail"]


def test_unknown_paths_and_methods_answer_in_the_error_shape(server):
    with server.client() as client:
        _assert_error_shape(client.get("/no/such/thing"), 404, "not_found")
        _assert_error_shape(client.delete("/generate"), 405, "method_not_allowed")


def test_multipart_values_are_coerced_like_json_ones(server, astronaut):
    with server.client() as client:
        response = client.post("/generate", data={"text": "Hello there.", "size": "512", "fps": "20", "still": "true",
                                                  "expression_scale": "0.5"},
                               files={"image": ("face.png", __import__("base64").b64decode(png_base64(astronaut)))})
    assert response.status_code == 200, response.text
    assert int(response.headers["x-video-frames"]) > 0


def test_the_schema_states_the_limits_the_server_enforces(server):
    with server.client() as client:
        schema = client.get("/openapi.json").json()
        health = client.get("/health").json()
        over_fps = client.post("/generate", json={"text": "Hi.", "fps": 61})
        over_text = client.post("/generate", json={"text": "a" * 2001})
    body = schema["paths"]["/generate"]["post"]["requestBody"]["content"]
    for media in ("application/json", "multipart/form-data"):
        properties = body[media]["schema"]["properties"]
        assert properties["text"]["maxLength"] == 2000
        assert [v["maximum"] for v in properties["fps"]["anyOf"] if v.get("type") == "integer"] == [60]
    _assert_error_shape(over_fps, 422)
    _assert_error_shape(over_text, 422, "invalid_text")
    assert health["status"] == "healthy" and health["models"]["avatar_backend"] == "meshwarp"  # the seed's shape


def _raw_connection(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].rstrip().endswith(b"}"):
                break
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(server):
    # The body limit here is 2 * (1 MB + 2 MB) + ~74 kB: the server must stop at that, not at 150 MB.
    sock = _raw_connection(server)
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 1_000_000
    sent = 0
    try:
        while sent < 150_000_000:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = _read_response(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 30_000_000, f"the client could send {sent} bytes before the 413"
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"] == "body_too_large"


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server):
    sock = _raw_connection(server)
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 150000000\r\n\r\n")
    response = _read_response(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 413"), response[:200]


def test_a_request_head_sent_one_byte_at_a_time_is_cut_off(server):
    sock = _raw_connection(server)
    head = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Padding: " + b"a" * 100
    started = time.monotonic()
    closed_after = None
    for byte in head:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                closed_after = time.monotonic() - started
                break
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
            break
        if time.monotonic() - started > 15:
            break
        time.sleep(0.5)
    sock.close()
    assert closed_after is not None and closed_after < 5, f"connection still open after {time.monotonic() - started:.1f} s"


def test_a_body_trickling_in_gets_a_408(server):
    sock = _raw_connection(server)
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    started = time.monotonic()
    sock.setblocking(False)
    response = b""
    while time.monotonic() - started < 15 and b"\r\n\r\n" not in response:
        try:
            sock.sendall(b" ")
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass
        time.sleep(0.5)
        try:
            response += sock.recv(65536)
        except BlockingIOError:
            pass
    sock.close()
    assert response.startswith(b"HTTP/1.1 408"), response[:300]
    assert time.monotonic() - started < 6


def _samples(text: str, name: str, labels: dict | None = None) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def test_metrics_parse_and_move_with_requests(server):
    with server.client() as client:
        before = client.get("/metrics").text
        assert client.post("/generate", json={"text": "Counting frames."}).status_code == 200
        client.get("/no/such/thing")
        after = client.get("/metrics").text
    assert _samples(after, "avatar_requests_total", {"endpoint": "/generate", "status": "200", "backend": "meshwarp"}) \
        == _samples(before, "avatar_requests_total", {"endpoint": "/generate", "status": "200", "backend": "meshwarp"}) + 1
    assert _samples(after, "avatar_requests_total", {"status": "404"}) \
        == _samples(before, "avatar_requests_total", {"status": "404"}) + 1
    assert _samples(after, "avatar_frames_rendered_total") > _samples(before, "avatar_frames_rendered_total")
    for stage in ("tts", "animation", "encoding", "queue"):
        assert _samples(after, "avatar_stage_seconds_count", {"stage": stage}) \
            > _samples(before, "avatar_stage_seconds_count", {"stage": stage}), stage
    assert _samples(after, "avatar_device_memory_bytes", {"device": "cpu"}) > 0
    assert _samples(after, "process_resident_memory_bytes") > 0
    assert "avatar_queue_depth" in after


def test_json_log_lines_carry_the_request_id(server):
    with server.client() as client:
        response = client.post("/generate", json={"text": "Logged."})
    request_id = response.headers["x-request-id"]
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    mine = [record for record in records if record.get("request_id") == request_id]
    assert any("frames" in record["message"] for record in mine), mine
