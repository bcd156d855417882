"""Frames of many streams rendered in shared batches on one device (see scheduler.py)."""
from .scheduler import (
    BatchFunction,
    RenderFailed,
    RenderScheduler,
    SchedulerBusyError,
    SchedulerStats,
    Stream,
    WorkItem,
)

__all__ = [
    "BatchFunction",
    "RenderFailed",
    "RenderScheduler",
    "SchedulerBusyError",
    "SchedulerStats",
    "Stream",
    "WorkItem",
]
