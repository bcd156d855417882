"""Where inductor keeps what torch.compile built, so a restarted server reuses its kernels
instead of compiling again (tens of seconds per engine): a folder under MODELS_DIR, which
outlives a container's /tmp. Shared by the engines that compile."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def writable_cache_dir(directory: Path) -> Path | None:
    """`directory` for inductor's caches if it can be created and written, else None (inductor's
    default under /tmp: every restart compiles again), with a warning naming the folder."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("cannot write the compile cache %s (%s): each start compiles again", directory, error)
        return None
    if not os.access(directory, os.W_OK):
        log.warning("compile cache %s is read-only: each start compiles again", directory)
        return None
    return Path(directory)


def use_compile_cache(directory: Path) -> None:
    """Point inductor's on-disk caches (FX graphs, autotuning, Triton kernels) at `directory`, so a
    restarted process reuses compiled kernels instead of compiling again. Process-wide: inductor
    reads the variable whenever it touches its cache."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory.resolve())
