"""A full temporary disk is the server's condition, not the client's fault nor a crash: a 507 JSON."""
from __future__ import annotations

import subprocess

import pytest

from .server import start_server

pytestmark = pytest.mark.service


@pytest.fixture
def tiny_temp_dir(tmp_path):
    """A 16 kB tmpfs: room for the request's folder, not for its mp4."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_temp_disk_is_a_507_and_the_server_keeps_serving(tmp_path, tiny_temp_dir):
    with start_server(MODELS_DIR=str(tmp_path / "none"), DATA_DIR=str(tmp_path / "data"),
                      TMPDIR=str(tiny_temp_dir)) as server, server.client() as client:
        response = client.post("/generate", json={"text": "This clip does not fit on the temporary disk at all."})
        assert response.status_code == 507, response.text[:500]
        body = response.json()
        assert body["error"] == "insufficient_storage" and str(tiny_temp_dir) not in body["detail"]
        assert list(tiny_temp_dir.glob("avatar-service-*/request-*")) == []  # the request's files are gone
        assert client.get("/health").status_code == 200
