"""Helpers for tests that talk to the real service: start it as a subprocess, wait until /health
answers, stop it; encode portraits; save responses."""
from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np

from runtime.config import ENV_FILE_VARIABLE

REPO = Path(__file__).resolve().parent.parent  # the checkout: the server runs from here

# Run as the server's entry point when imports are blocked: a meta-path finder refuses the named
# top-level packages (and their submodules), as on a machine where they are not installed.
_BLOCKING_MAIN = """
import runpy, sys
blocked = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
del sys.argv[1]
runpy.run_module("runtime.gpu_service", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process = process
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"

    def client(self, timeout: float = 300.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        with self.client() as client:
            return client.get("/health").json()

    def alive(self) -> bool:
        return self.process.poll() is None


@contextmanager
def start_server(startup_timeout: float = 180.0, python: str = sys.executable, without: tuple[str, ...] = (),
                 **env: str) -> Iterator[RunningServer]:
    """Run `python -m runtime.gpu_service` (this interpreter unless `python` names another venv's)
    with env overrides on a free port until the block ends. `without` names packages the server
    must not be able to import (e.g. ("torch",) for a light install). A developer's .env is never
    read (AVATAR_ENV_FILE is empty unless `env` names one)."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="avatar-server-", suffix=".log", delete=False)
    environment = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", ENV_FILE_VARIABLE: "", **env}
    command = [python, "-c", _BLOCKING_MAIN, ",".join(without)] if without else [python, "-m", "runtime.gpu_service"]
    process = subprocess.Popen(
        command, cwd=REPO, env=environment,
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = RunningServer(process, port, Path(log_file.name))
    keep_log = False
    try:
        _wait_until_healthy(server, startup_timeout)
        try:
            yield server
        except BaseException:
            # A failing test's report shows stderr: put the server's side of the story there.
            keep_log = True
            sys.stderr.write(f"--- server log, last 8000 characters of {server.log_path} ---\n{server.log()[-8000:]}\n")
            raise
    except RuntimeError:
        keep_log = True
        raise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log_file.close()
        if not keep_log:  # a passing run leaves nothing behind in the temp folder
            server.log_path.unlink(missing_ok=True)


def _wait_until_healthy(server: RunningServer, startup_timeout: float) -> None:
    deadline = time.monotonic() + startup_timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            # readiness: open even with API_KEYS set; 200 once the models are loaded and warm
            if httpx.get(f"{server.url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not become healthy in {startup_timeout} s:\n{server.log()[-4000:]}")
        time.sleep(0.3)


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
