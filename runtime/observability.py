"""Logs that carry the request id (text or JSON lines) and the service's Prometheus metrics."""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.process_collector import ProcessCollector

# Set by the edge middleware for each request; threads started from the request inherit it.
request_id_var: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id (when inside a request)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request {request_id}]" if request_id and request_id not in line else line


_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The service's metrics in their own registry (one per app, so several apps in a process and
    tests never share counters). Exposed at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds
        self.requests = Counter(
            "avatar_requests", "HTTP requests answered", ["endpoint", "status", "backend"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "avatar_request_seconds", "Time from request to response start", ["endpoint"],
            buckets=_STAGE_BUCKETS, registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "avatar_stage_seconds", "Seconds spent per stage of a generation (tts, animation, encoding, queue)",
            ["stage"], buckets=_STAGE_BUCKETS, registry=self.registry,
        )
        self.frames = Counter("avatar_frames_rendered", "Video frames rendered", ["backend"], registry=self.registry)
        self.cancelled = Counter(
            "avatar_generations_cancelled", "Generations stopped before the end",
            ["reason"], registry=self.registry,  # disconnect, timeout, shutdown
        )
        self.rate_limited = Counter("avatar_rate_limited", "Requests refused by the rate limit", registry=self.registry)
        self.queue_depth = Gauge("avatar_queue_depth", "Generations waiting or running", registry=self.registry)
        self.device_memory = Gauge(
            "avatar_device_memory_bytes", "Memory in use on the compute device (CUDA allocator; RSS on cpu)",
            ["device"], registry=self.registry,
        )
        self.ready = Gauge("avatar_ready", "1 once the models are loaded and warm, 0 while loading or draining",
                           registry=self.registry)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def watch_device_memory(self, device: str, in_use: Callable[[], float]) -> None:
        self.device_memory.labels(device=device).set_function(in_use)

    def watch_preparations(self, backend: str, count: Callable[[], float]) -> None:
        """Per-portrait preparations the backend computed (its cache misses), read at each scrape."""
        self.registry.register(_CallbackCounter(
            "avatar_portrait_preparations", "Per-portrait preparations computed (not served from a cache)",
            {"backend": backend}, count))

    def watch_rendering(self, source, device: str) -> None:
        """The render scheduler's (or the parallel streams') figures: active streams, frames/s, batch
        fill, capacity, deadline misses, refused streams (runtime.scheduling.metrics)."""
        from .scheduling.metrics import register_scheduler_metrics

        register_scheduler_metrics(self.registry, source, device)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _CallbackCounter:
    """A counter whose value lives elsewhere (a backend's own count), for a custom collector."""

    def __init__(self, name: str, documentation: str, labels: dict[str, str], read: Callable[[], float]):
        self.name, self.documentation, self.labels, self.read = name, documentation, labels, read

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=list(self.labels))
        family.add_metric(list(self.labels.values()), float(self.read()))
        yield family

    def describe(self):
        return []


def device_memory_reader(device: str) -> Callable[[], float]:
    """Bytes in use on `device`: torch's CUDA allocator, or this process's RSS for cpu/mps."""
    if device == "cuda":
        def cuda_bytes() -> float:
            torch = sys.modules.get("torch")
            return float(torch.cuda.memory_allocated()) if torch is not None else 0.0
        return cuda_bytes
    return lambda: float(resident_bytes())


def resident_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _page_size()
    except OSError:
        return 0


def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")
