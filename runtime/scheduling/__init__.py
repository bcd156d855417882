"""Frames of many streams rendered in shared batches on one device (see scheduler.py)."""
from .admission import Admission
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
    "Admission",
    "RenderWorkItems",
    "RenderFailed",
    "RenderScheduler",
    "SchedulerBusyError",
    "SchedulerStats",
    "Stream",
    "WorkItem",
]
