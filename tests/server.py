"""Helpers for tests that talk to the real service: start it (testkit.service) with its log in a
temporary file that a failing test prints and keeps; encode portraits; save responses."""
from __future__ import annotations

import base64
import io
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np

from runtime.config import ENV_FILE_VARIABLE
from testkit.service import REPO, SERVICE_COMMAND, ServiceNotReady, ServiceProcess, free_port, running_service

__all__ = ["REPO", "RunningServer", "free_port", "png_base64", "save_mp4", "start_server"]

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


class RunningServer:
    """A ready service and its log file."""

    def __init__(self, service: ServiceProcess, log_path: Path):
        self.process = service.process
        self.port = service.port
        self.url = service.url
        self.log_path = log_path

    def client(self, timeout: float = 300.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        with self.client() as client:
            return client.get("/health").json()

    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_serves(self, backend: str) -> None:
        """/health says `backend` loaded as asked, in the seed's shape and in the detail."""
        health = self.health()
        assert health["avatar_backend"] == backend, health
        assert health["models"]["avatar"] is True and health["models"]["avatar_backend"] == backend, health
        assert health["detail"]["avatar"]["loaded"] == backend and health["detail"]["avatar"]["fell_back"] is False, health

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match:
        """The first match of `pattern` in the log, waiting up to `timeout` s for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)


@contextmanager
def start_server(startup_timeout: float = 180.0, python: str = sys.executable, without: tuple[str, ...] = (),
                 **env: str) -> Iterator[RunningServer]:
    """Run `python -m runtime.gpu_service` (this interpreter unless `python` names another venv's)
    with env overrides on a free port until the block ends. `without` names packages the server
    must not be able to import (e.g. ("torch",) for a light install). A developer's .env is never
    read (AVATAR_ENV_FILE is empty unless `env` names one). The log is deleted after a passing
    block and kept (its tail on stderr) after a failing one or a failed start."""
    command = [python, "-c", _BLOCKING_MAIN, ",".join(without)] if without else [python, *SERVICE_COMMAND[1:]]
    log_file = tempfile.NamedTemporaryFile(prefix="avatar-server-", suffix=".log", delete=False)
    log_path = Path(log_file.name)
    keep_log = False
    try:
        with running_service({ENV_FILE_VARIABLE: "", **env}, startup_timeout, command, output=log_file,
                             log_tail=lambda: log_path.read_text(errors="replace")[-4000:]) as service:
            server = RunningServer(service, log_path)
            try:
                yield server
            except BaseException:
                # A failing test's report shows stderr: put the server's side of the story there.
                keep_log = True
                sys.stderr.write(f"--- server log, last 8000 characters of {log_path} ---\n{server.log()[-8000:]}\n")
                raise
    except ServiceNotReady:
        keep_log = True
        raise
    finally:
        log_file.close()
        if not keep_log:  # a passing run leaves nothing behind in the temp folder
            log_path.unlink(missing_ok=True)


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
