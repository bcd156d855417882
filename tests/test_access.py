"""Keeping people out and telling orchestrators the truth: API keys, the rate limit, CORS, probes."""
from __future__ import annotations

import time

import httpx
import pytest

from runtime.config import ENV_FILE_VARIABLE
from testkit.service import launch, stop

from .server import REPO, start_server

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text("# one key a line\nfile-key-1\n\nfile-key-2  # the second\n")
    with start_server(MODELS_DIR=str(tmp_path_factory.mktemp("none")), DATA_DIR=str(tmp_path_factory.mktemp("data")),
                      API_KEYS="env-key-1,env-key-2", API_KEYS_FILE=str(keys_file),
                      RATE_LIMIT_PER_MINUTE="6", RATE_LIMIT_BURST="3",
                      CORS_ORIGINS="https://app.example") as running:
        yield running


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_or_with_a_wrong_one_the_answer_is_401(keyed_server):
    with keyed_server.client() as client:
        for headers in ({}, _bearer("wrong"), {"Authorization": "Basic ZW52LWtleS0xOg=="}, _bearer("env-key-1x")):
            for method, path in (("GET", "/health"), ("POST", "/generate"), ("GET", "/metrics"), ("GET", "/avatars"),
                                 ("GET", "/openapi.json")):
                response = client.request(method, path, headers=headers, json={"text": "hi"} if method == "POST" else None)
                assert response.status_code == 401, (method, path, headers, response.text)
                body = response.json()
                assert body["error"] == "unauthorized" and body["request_id"] == response.headers["x-request-id"]
                assert response.headers["www-authenticate"] == "Bearer"


def test_keys_from_the_list_and_the_file_both_open_the_service(keyed_server):
    with keyed_server.client() as client:
        assert client.get("/health", headers=_bearer("env-key-2")).status_code == 200
        response = client.post("/generate", headers=_bearer("file-key-2"), json={"text": "Authorized."})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "video/mp4"


def test_probes_stay_open_without_a_key(keyed_server):
    with keyed_server.client() as client:
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").json() == {"status": "ready"}


def test_past_the_rate_limit_a_key_gets_429_with_retry_after(keyed_server):
    with keyed_server.client() as client:
        statuses = [client.get("/avatars", headers=_bearer("env-key-1")) for _ in range(5)]
        other_key = client.get("/avatars", headers=_bearer("file-key-1"))
    codes = [response.status_code for response in statuses]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
    limited = next(response for response in statuses if response.status_code == 429)
    assert limited.json()["error"] == "rate_limited" and 1 <= int(limited.headers["retry-after"]) <= 10
    assert other_key.status_code == 200  # one client's burst does not spend another's


def test_cors_answers_only_the_allowed_origin(keyed_server):
    with keyed_server.client() as client:
        allowed = client.options("/generate", headers={"Origin": "https://app.example",
                                                       "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization,content-type"})
        other = client.options("/generate", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_readiness_is_503_until_the_models_are_loaded_then_200(tmp_path):
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        service = launch({ENV_FILE_VARIABLE: "", "MODELS_DIR": str(tmp_path / "none"),
                          "DATA_DIR": str(tmp_path / "data")}, output=log)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (not seen or seen[-1] != 200):
            try:
                seen.append(httpx.get(f"{service.url}/health/ready", timeout=2).status_code)
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert seen and seen[0] == 503 and seen[-1] == 200, (seen[:5], seen[-5:], log_path.read_text()[-2000:])
        early = httpx.get(f"{service.url}/health/live", timeout=2)
        assert early.status_code == 200
    finally:
        stop(service)


def test_serve_binds_loopback_unless_host_says_otherwise():
    from runtime.config import Settings

    assert Settings(_env_file=None).host == "127.0.0.1"
    dockerfile = (REPO / "Dockerfile.gpu-service").read_text()
    assert "HOST=0.0.0.0" in dockerfile
