"""The rendering figures as Prometheus metrics, read from `stats()` at each scrape: the device's
RenderScheduler, or ParallelRendering (streams that render in their own threads)."""
from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .scheduler import SchedulerStats


class RenderStatsSource(Protocol):
    def stats(self) -> SchedulerStats: ...


class SchedulerCollector:
    """A custom collector: one `stats()` snapshot per scrape, so the figures agree with each other."""

    def __init__(self, scheduler: RenderStatsSource, device: str):
        self.scheduler = scheduler
        self.device = device

    def collect(self):
        stats = self.scheduler.stats()
        labels = ["device"]
        gauges = [
            ("avatar_render_streams_active", "Streams admitted to the render scheduler", stats.active_streams),
            ("avatar_render_admitted_frames_per_second", "Frames per second the admitted streams need",
             stats.admitted_frames_per_second),
            ("avatar_render_capacity_frames_per_second", "Frames per second the device renders at its batch size",
             stats.capacity_frames_per_second),
            ("avatar_render_frames_per_second", "Frames rendered per second, recently", stats.frames_per_second),
            ("avatar_render_batch_fill", "Frames per batch over the batch size, recently (0..1)", stats.batch_fill),
        ]
        for name, documentation, value in gauges:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            family.add_metric([self.device], float(value))
            yield family
        counters = [
            ("avatar_render_frames", "Frames the render scheduler (or the parallel streams) rendered",
             stats.frames_rendered),
            ("avatar_render_batches", "Batches the render scheduler ran", stats.batches_run),
            ("avatar_render_deadline_misses", "Frames handed back after their playback deadline",
             stats.deadline_misses),
            ("avatar_render_streams_refused", "Streams refused because rendering was at capacity",
             stats.refused_streams),
        ]
        for name, documentation, value in counters:
            family = CounterMetricFamily(name, documentation, labels=labels)
            family.add_metric([self.device], float(value))
            yield family

    def describe(self):
        return []


def register_scheduler_metrics(registry: CollectorRegistry, scheduler: RenderStatsSource, device: str) -> None:
    """Export `scheduler`'s figures in `registry` (the app's `Metrics.registry`)."""
    registry.register(SchedulerCollector(scheduler, device))
