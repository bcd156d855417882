"""Temporary folders of requests: one root per server process, removed with the request, and the
roots of processes that died (a crash, a SIGKILL) removed at the next start."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_ROOT_PREFIX = "avatar-service-"


def _root() -> Path:
    return Path(tempfile.gettempdir()) / f"{_ROOT_PREFIX}{os.getpid()}"


def new_workdir() -> Path:
    """A fresh folder for one request's files, under this process's root."""
    root = _root()
    root.mkdir(mode=0o700, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="request-", dir=root))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_workdirs() -> int:
    """Remove the request folders of server processes that no longer run; returns how many roots."""
    removed = 0
    for root in Path(tempfile.gettempdir()).glob(f"{_ROOT_PREFIX}*"):
        suffix = root.name[len(_ROOT_PREFIX):]
        if suffix.isdigit() and int(suffix) != os.getpid() and not _alive(int(suffix)):
            shutil.rmtree(root, ignore_errors=True)
            removed += 1
    if removed:
        log.info("Removed the temporary files of %d server process(es) that did not exit cleanly", removed)
    return removed
