"""Process-wide switches, set once at startup before any backend loads: logging, native log
noise, the GIL switch interval and torch's MPS fallback. Nothing else in runtime/ sets them."""
from __future__ import annotations

import logging
import os
import re
import sys
import threading

from .config import Settings
from .memory import return_large_frees_to_the_system
from .observability import JsonLogFormatter, RequestIdFilter, TextLogFormatter

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

# MediaPipe's C++ logs through absl before absl::InitializeLog, straight to file descriptor 2; absl
# reads no environment variable (GLOG_minloglevel is glog's, and mediapipe no longer logs through
# glog), so these lines can only be caught on the descriptor: absl/glog `W0000 00:00:... file.cc:N]`
# lines, absl's pre-initialization notice, and TFLite's delegate notice.
_NATIVE_NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate)"
)

_configured = False


def configure_process(settings: Settings) -> None:
    """Set every process-wide switch once; later calls do nothing."""
    global _configured
    if _configured:
        return
    _configured = True
    configure_logging(settings.log_level, settings.log_format)
    quiet_native_logs()
    set_runtime_switches(settings)


def set_runtime_switches(settings: Settings) -> None:
    """The interpreter and torch switches (safe to call in any process, tests included)."""
    # The renderer thread and the encoder thread of a request hand the GIL back and forth around
    # every C call; at CPython's default 5 ms switch interval each hand-over can stall the other
    # for 5 ms (the convoy effect), which starved the GPU between batches. 0.5 ms bounds the stall.
    sys.setswitchinterval(0.0005)
    return_large_frees_to_the_system()
    if settings.pytorch_enable_mps_fallback:
        # Read by torch when it runs an op on mps: ops mps lacks then run on the cpu instead of raising.
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


def configure_logging(level: str, log_format: str = "text") -> None:
    """Our package logs at `level`; third-party libraries only from WARNING up (matplotlib's font
    cache, uvicorn's start-up banner and access lines are not news to an operator). Every line names
    its request when it has one; LOG_FORMAT=json writes one JSON object a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else TextLogFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("runtime").setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.WARNING)


def quiet_native_logs() -> None:
    """Drop native libraries' info and warning lines from file descriptor 2; keep everything else.

    Python's own stderr (tracebacks, our log lines) moves to a duplicate of the original descriptor,
    so it never passes through the filter; only what C code writes to fd 2 does. The dropped lines
    go to the `runtime.native` logger at DEBUG (LOG_LEVEL=debug shows them)."""
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        return
    sys.stderr.flush()
    sys.stderr = os.fdopen(original, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(sys.stderr)
    os.dup2(write_end, 2)
    os.close(write_end)
    native = logging.getLogger("runtime.native")

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if _NATIVE_NOISE.match(line):
                    native.debug("%s", line.decode(errors="replace").rstrip())
                else:
                    os.write(original, line)

    threading.Thread(target=forward, name="native-stderr", daemon=True).start()
