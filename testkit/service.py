"""Run the real service as a subprocess on a free 127.0.0.1 port, wait until it is ready, stop it.

Tests (tests/server.py adds log capture and failure reports) and scripts (benchmarks, the soak
test) both start servers this way:

    with local_service(AVATAR_BACKEND="meshwarp") as url:
        httpx.post(f"{url}/generate", json={"text": "Hello."})
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parent.parent  # the checkout: the service runs from here
SERVICE_COMMAND = (sys.executable, "-m", "runtime.gpu_service")


class ServiceNotReady(RuntimeError):
    """The service exited, or did not answer /health/ready with 200 in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None


def launch(env: dict[str, str], command: Sequence[str] = SERVICE_COMMAND, output: IO | None = None) -> ServiceProcess:
    """Start `command` (the service) from the checkout on a free loopback port, in its own process
    group, with this process's environment plus `env`; output: where its log goes (None: this
    process's stdout and stderr). Returns at once; see wait_until_ready and stop."""
    port = free_port()
    environment = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", **env}
    process = subprocess.Popen(list(command), cwd=REPO, env=environment, start_new_session=True, stdout=output,
                               stderr=subprocess.STDOUT if output is not None else None)
    return ServiceProcess(process, port)


def wait_until_ready(service: ServiceProcess, timeout_s: float, log_tail: Callable[[], str] = lambda: "") -> None:
    """Poll /health/ready (open even with API_KEYS set; 200 once the models are loaded and warm).
    ServiceNotReady, with log_tail() appended, if the process exits or timeout_s passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if service.process.poll() is not None:
            raise ServiceNotReady(f"the service exited with {service.process.returncode}:\n{log_tail()}")
        try:
            if httpx.get(f"{service.url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServiceNotReady(f"the service was not ready within {timeout_s:g} s:\n{log_tail()}")
        time.sleep(0.3)


def stop(service: ServiceProcess, grace_s: float = 20.0) -> None:
    """SIGTERM to the service's process group (uvicorn drains), SIGKILL after grace_s."""
    process = service.process
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def running_service(env: dict[str, str], startup_timeout_s: float, command: Sequence[str] = SERVICE_COMMAND,
                    output: IO | None = None, log_tail: Callable[[], str] = lambda: "") -> Iterator[ServiceProcess]:
    """launch, wait_until_ready, yield the ready service; stop it when the block ends, however it ends."""
    service = launch(env, command, output)
    try:
        wait_until_ready(service, startup_timeout_s, log_tail)
        yield service
    finally:
        stop(service)


@contextmanager
def local_service(startup_timeout_s: float = 900.0, **env: str) -> Iterator[str]:
    """The service with this environment plus `env`, its log on this process's stderr (a script's
    stdout stays its JSON line); yields its base URL once ready."""
    with running_service(env, startup_timeout_s, output=sys.stderr) as service:
        yield service.url


def rss_bytes(pid: int) -> int:
    """Resident memory of a live process, bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


class PeakRss:
    """Samples a process's resident memory on a thread every interval_s while the block runs:

        with PeakRss(pid) as memory: ...
        memory.peak_bytes  # the largest reading, the one at entry included
    """

    def __init__(self, pid: int, interval_s: float = 0.05):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)

    def _read(self) -> None:
        try:
            self.peak_bytes = max(self.peak_bytes, rss_bytes(self.pid))
        except FileNotFoundError:  # the process is gone; what it held before stays the peak
            self._done.set()

    def _sample(self) -> None:
        while not self._done.wait(self.interval_s):
            self._read()

    def __enter__(self) -> PeakRss:
        self.peak_bytes = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()
        self._read()
