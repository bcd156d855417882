"""Start the service as a subprocess for a benchmark script, and stop it afterwards.

Scripts use this; tests have their own harness (tests/server.py: log capture, failure reports,
blocked imports). Neither imports the other: tests are not shipped with the scripts, and a script
reaching into tests/ would make the test suite part of the tools' API.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def local_service(startup_timeout: float = 900.0, **env: str) -> Iterator[str]:
    """`python -m runtime.gpu_service` on a free 127.0.0.1 port, with the current environment plus
    `env`; yields its base URL once it is ready. Its log goes to this process's stderr."""
    with local_service_process(startup_timeout, **env) as (url, _):
        yield url


@contextmanager
def local_service_process(startup_timeout: float = 900.0, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """As local_service, yielding (base URL, the server process) for scripts that watch the process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "runtime.gpu_service"], cwd=REPO, start_new_session=True,
                               env={**os.environ, "PORT": str(port), "HOST": "127.0.0.1", **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode} (its log is above)")
            try:
                # readiness: open even with API_KEYS set; 200 once the models are loaded and warm
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready within {startup_timeout:g} s")
            time.sleep(0.3)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
