"""Frames of many streams rendered in shared batches on one device (see scheduler.py)."""
from .scheduler import (
    RenderWorkItems,
    RenderFailed,
    RenderScheduler,
    SchedulerBusyError,
    SchedulerStats,
    Stream,
    WorkItem,
)

__all__ = [
    "RenderWorkItems",
    "RenderFailed",
    "RenderScheduler",
    "SchedulerBusyError",
    "SchedulerStats",
    "Stream",
    "WorkItem",
]
