"""One render scheduler per device: frames of many streams share the engine's batches.

Each stream (a live session or a whole-file request) submits work items, one per frame: the
engine's driving payload for that frame, the handle of the stream's prepared portrait, and the
frame's playback deadline. A single worker thread forms batches of up to `batch_size` items,
earliest deadline first, runs the engine's batch function on them, and hands each stream its
frames back in the order it submitted them.

Fairness: a stream's frames leave in submission order, and a stream that gives no deadline gets
one from its own real-time pace (frame i is due i / fps after the stream opened). A long
whole-file request therefore competes at real-time pace only; everything it renders faster than
that comes from batch slots the live streams left empty, so it cannot starve them.

Admission (admission.py): every stream declares the frames per second it needs. The scheduler
admits a stream only while the sum of admitted demands stays within `headroom` of its capacity
(frames per second at its batch size, measured from the full batches it ran, starting from a
configured estimate); otherwise it refuses with `SchedulerBusyError` (a ServiceBusyError carrying a
Retry-After).
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Iterator, Optional, Sequence

from ..cancellation import CancelToken, Cancelled, wait_cancellably
from .admission import Admission, SchedulerBusyError


@dataclass(frozen=True)
class WorkItem:
    """One frame's work: `payload` is the engine's driving input for the frame (opaque here),
    `portrait` the stream's prepared-portrait handle, `deadline` when the frame must be ready
    (seconds on the scheduler's clock)."""

    payload: Any
    portrait: Any
    deadline: float


# items -> one result per item, in the same order. Padding to a compiled batch size is the engine's.
RenderWorkItems = Callable[[Sequence[WorkItem]], Sequence[Any]]


class RenderFailed(RuntimeError):
    """The batch holding this stream's frame raised; the original error is the __cause__."""


@dataclass(frozen=True)
class SchedulerStats:
    """What /metrics shows. Rates and fill are over the last `rate_window_s` seconds."""

    active_streams: int
    admitted_frames_per_second: float  # sum of the admitted streams' demands
    capacity_frames_per_second: float  # measured (or the initial estimate until a full batch ran)
    frames_per_second: float  # frames rendered per second, recently
    batch_fill: float  # frames per batch / batch_size, recently (0..1)
    frames_rendered: int
    batches_run: int
    deadline_misses: int  # frames handed back after their deadline
    refused_streams: int


class Stream:
    """One stream's view of the scheduler. Submit frames, read them back in order, finish or cancel.

    Not created directly: `RenderScheduler.open_stream`. A context manager: leaving it cancels what
    is still pending and gives the stream's share of capacity back.
    """

    def __init__(self, scheduler: "RenderScheduler", stream_id: int, frames_per_second: float,
                 opened_at: float, start_delay_s: float, cancel_token: Optional[CancelToken], name: str,
                 ticket: int):
        self.id = stream_id
        self.ticket = ticket  # its admission
        self.name = name
        self.frames_per_second = frames_per_second
        self.opened_at = opened_at
        self.start_delay_s = start_delay_s
        self.cancel_token = cancel_token
        self.deadline_misses = 0
        self._scheduler = scheduler
        # Guarded by the scheduler's lock:
        self._pending: Deque[tuple[int, WorkItem]] = collections.deque()  # (submission order, item)
        self._results: Deque[Any] = collections.deque()
        self._in_flight = 0  # frames taken into the batch being rendered
        self._submitted = 0
        self._finished = False  # no more submissions
        self._closed = False  # admission released
        self._error: Optional[BaseException] = None

    def paced_deadline(self, frame_index: int) -> float:
        """When frame `frame_index` of this stream plays, at its own real-time pace."""
        return self.opened_at + self.start_delay_s + frame_index / self.frames_per_second

    def submit(self, payload: Any, portrait: Any, deadline: Optional[float] = None) -> None:
        """Queue one frame. Without a deadline it is due at the stream's own pace (`paced_deadline`)."""
        self._scheduler._submit(self, [payload], portrait, [deadline])

    def submit_all(self, payloads: Sequence[Any], portrait: Any, deadlines: Sequence[Optional[float]]) -> None:
        """Queue several frames at once (one batch can take them all, not the first alone)."""
        if len(payloads) != len(deadlines):
            raise ValueError(f"{len(payloads)} payloads for {len(deadlines)} deadlines")
        self._scheduler._submit(self, payloads, portrait, deadlines)

    def finish(self) -> None:
        """No more frames will be submitted; `frames()` ends once those submitted are handed back."""
        self._scheduler._finish(self)

    def cancel(self, reason: str = "cancelled") -> None:
        """Drop every pending frame at once and release the stream's capacity; readers get Cancelled."""
        self._scheduler._cancel(self, Cancelled(reason))

    def frames(self, timeout_s: Optional[float] = None) -> Iterator[Any]:
        """The stream's rendered frames in submission order, as they are ready.

        Ends after `finish()` once every submitted frame was yielded. Raises Cancelled after a
        cancel, RenderFailed if a batch with this stream's frames failed, TimeoutError if no frame
        came within `timeout_s` (real seconds).
        """
        while True:
            frame = self._scheduler._next_result(self, timeout_s)
            if frame is _END:
                return
            yield frame

    @property
    def _drained(self) -> bool:
        """Nothing pending and nothing being rendered (lock held)."""
        return not self._pending and self._in_flight == 0

    @property
    def pending(self) -> int:
        with self._scheduler._lock:
            return len(self._pending)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """The stream is done with: drop what is still pending and give its share of capacity back."""
        self._scheduler._cancel(self, Cancelled("stream closed"), only_if_unfinished=True)


_END = object()


class RenderScheduler:
    """Batches frames of all streams on one device. Thread-safe; one worker thread runs the batches.

    `render_batch(items)` returns one frame per item in order (e.g. LivePortrait's mixed-batch
    render). `clock` gives seconds (time.monotonic by default; tests pass a fake one).
    """

    def __init__(
        self,
        render_batch: RenderWorkItems,
        *,
        batch_size: int,
        initial_capacity_fps: float,
        headroom: float = 0.9,
        retry_after_s: float = 5.0,
        rate_window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.admission = Admission(initial_capacity_fps, headroom=headroom, retry_after_s=retry_after_s)
        self.rate_window_s = rate_window_s
        self._render_batch = render_batch
        self._clock = clock
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)  # the worker waits for items
        self._results_ready = threading.Condition(self._lock)  # readers wait for frames
        self._streams: dict[int, Stream] = {}
        self._next_stream_id = itertools.count(1)
        self._next_submission = itertools.count()
        self._recent_batches: Deque[tuple[float, int]] = collections.deque()  # (finished at, frames)
        self._frames_rendered = 0
        self._batches_run = 0
        self._deadline_misses = 0
        self._worker: Optional[threading.Thread] = None
        self._stopping = False

    # ---- admission -------------------------------------------------------------------------

    def open_stream(
        self,
        frames_per_second: float,
        *,
        start_delay_s: float = 0.0,
        wait_s: float = 0.0,
        cancel_token: Optional[CancelToken] = None,
        name: str = "",
    ) -> Stream:
        """Admit a stream that needs `frames_per_second`, or raise SchedulerBusyError.

        `start_delay_s` shifts its paced deadlines (the buffer a player keeps). `wait_s` > 0 waits
        up to that many real seconds for capacity (whole-file requests can wait; live sessions
        should not).
        """
        ticket = self.admission.admit(frames_per_second, wait_s=wait_s, cancel_token=cancel_token)
        with self._lock:
            stream = Stream(self, next(self._next_stream_id), frames_per_second, self._clock(),
                            start_delay_s, cancel_token, name, ticket)
            self._streams[stream.id] = stream
            return stream

    def _release(self, stream: Stream) -> None:
        """Give a stream's share back (lock held)."""
        if not stream._closed:
            stream._closed = True
            self._streams.pop(stream.id, None)
            self.admission.release(stream.ticket)

    @property
    def capacity_fps(self) -> float:
        return self.admission.capacity_fps

    # ---- a stream's calls ------------------------------------------------------------------

    def _submit(self, stream: Stream, payloads: Sequence[Any], portrait: Any,
                deadlines: Sequence[Optional[float]]) -> None:
        with self._lock:
            if stream._error is not None:
                raise stream._error
            if stream._finished:
                raise RuntimeError(f"stream {stream.id} was finished; no more frames can be submitted")
            for payload, deadline in zip(payloads, deadlines):
                if deadline is None:
                    deadline = stream.paced_deadline(stream._submitted)
                stream._submitted += 1
                stream._pending.append((next(self._next_submission), WorkItem(payload, portrait, deadline)))
            self._work_ready.notify()

    def _finish(self, stream: Stream) -> None:
        with self._lock:
            stream._finished = True
            if stream._drained:
                self._release(stream)
            self._results_ready.notify_all()

    def _cancel(self, stream: Stream, error: BaseException, only_if_unfinished: bool = False) -> None:
        with self._lock:
            if only_if_unfinished and stream._finished and stream._drained:
                return
            self._fail(stream, error)

    def _fail(self, stream: Stream, error: BaseException) -> None:
        """Drop the stream's pending work and wake its reader with `error` (lock held)."""
        if stream._error is None:
            stream._error = error
        stream._pending.clear()
        stream._finished = True
        self._release(stream)
        self._results_ready.notify_all()

    def _next_result(self, stream: Stream, timeout_s: Optional[float]) -> Any:
        give_up_at = None if timeout_s is None else time.monotonic() + timeout_s
        found: list[Any] = []

        def ready(poll_s: float) -> bool:
            if stream._results:
                found.append(stream._results.popleft())
                return True
            if stream._error is not None:
                raise stream._error
            if stream._finished and stream._drained:
                found.append(_END)
                return True
            if give_up_at is not None and time.monotonic() >= give_up_at:
                raise TimeoutError(f"no frame for stream {stream.id} within {timeout_s} s")
            self._results_ready.wait(poll_s if give_up_at is None else min(poll_s, give_up_at - time.monotonic()))
            return False

        tokens = [stream.cancel_token] if stream.cancel_token is not None else []
        with self._lock:
            wait_cancellably(ready, *tokens)  # a reader whose request is cancelled stops at once
        return found[0]

    # ---- batching --------------------------------------------------------------------------

    def _take_batch(self) -> list[tuple[Stream, WorkItem]]:
        """Up to batch_size items, earliest deadline first, each stream's in its own order (lock held)."""
        self._drop_cancelled()
        heads = [stream for stream in self._streams.values() if stream._pending]
        batch: list[tuple[Stream, WorkItem]] = []
        while heads and len(batch) < self.batch_size:
            # Ties (equal deadlines) go to the earlier submission, so equal-paced streams alternate.
            stream = min(heads, key=lambda s: (s._pending[0][1].deadline, s._pending[0][0]))
            batch.append((stream, stream._pending.popleft()[1]))
            stream._in_flight += 1
            if not stream._pending:
                heads.remove(stream)
        return batch

    def step(self) -> int:
        """Form and run one batch now, in this thread; the number of frames rendered (0: nothing pending).

        The worker thread loops over this; tests call it directly to be deterministic.
        """
        with self._lock:
            batch = self._take_batch()
        if not batch:
            return 0
        items = [item for _, item in batch]
        started = self._clock()
        try:
            frames = list(self._render_batch(items))
            if len(frames) != len(items):
                raise RuntimeError(f"render_batch returned {len(frames)} frames for {len(items)} items")
        except Exception as error:  # noqa: BLE001 - handed to every stream of the batch
            failure = RenderFailed(f"rendering a batch of {len(items)} frames failed: {error}")
            failure.__cause__ = error
            with self._lock:
                for stream, _ in batch:
                    stream._in_flight -= 1
                    self._fail(stream, failure)
            return 0
        finished = self._clock()
        with self._lock:
            self._account(len(items), finished - started, finished)
            for (stream, item), frame in zip(batch, frames):
                stream._in_flight -= 1
                if stream._error is not None:
                    continue  # cancelled while its batch ran: the frame is dropped
                if finished > item.deadline:
                    stream.deadline_misses += 1
                    self._deadline_misses += 1
                stream._results.append(frame)
                if stream._finished and stream._drained:
                    self._release(stream)
            self._results_ready.notify_all()
        return len(items)

    def _account(self, frames: int, seconds: float, finished: float) -> None:
        """Counters, the recent window, and the capacity estimate from full batches (lock held)."""
        self._frames_rendered += frames
        self._batches_run += 1
        self._recent_batches.append((finished, frames))
        while self._recent_batches and self._recent_batches[0][0] < finished - self.rate_window_s:
            self._recent_batches.popleft()
        # Only a full batch says what the device does at batch_size; a partial one may be padded.
        if frames == self.batch_size and seconds > 0:
            self.admission.measured(frames / seconds)

    # ---- the worker thread -----------------------------------------------------------------

    def start(self) -> "RenderScheduler":
        """Run batches in a daemon thread until `stop()`."""
        with self._lock:
            if self._worker is not None:
                return self
            self._stopping = False
            self._worker = threading.Thread(target=self._run, name="render-scheduler", daemon=True)
        self._worker.start()
        return self

    def stop(self, reason: str = "shutdown") -> None:
        """Stop the worker; streams still open are cancelled with `reason`."""
        with self._lock:
            self._stopping = True
            for stream in list(self._streams.values()):
                self._fail(stream, Cancelled(reason))
            self._work_ready.notify_all()
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not any(s._pending for s in self._streams.values()):
                    self._work_ready.wait(0.5)  # a cancel token set from outside is seen within this
                    self._drop_cancelled()
                if self._stopping:
                    return
            self.step()

    def _drop_cancelled(self) -> None:
        """Cancel the streams whose CancelToken was set (lock held)."""
        for stream in list(self._streams.values()):
            if stream.cancel_token is not None and stream.cancel_token.cancelled:
                self._fail(stream, Cancelled(stream.cancel_token.reason or "cancelled"))

    # ---- metrics ---------------------------------------------------------------------------

    def stats(self) -> SchedulerStats:
        with self._lock:
            now = self._clock()
            recent = [frames for finished, frames in self._recent_batches if finished >= now - self.rate_window_s]
            return SchedulerStats(
                active_streams=len(self._streams),
                admitted_frames_per_second=self.admission.admitted_fps,
                capacity_frames_per_second=self.admission.capacity_fps,
                frames_per_second=sum(recent) / self.rate_window_s,
                batch_fill=sum(recent) / (len(recent) * self.batch_size) if recent else 0.0,
                frames_rendered=self._frames_rendered,
                batches_run=self._batches_run,
                deadline_misses=self._deadline_misses,
                refused_streams=self.admission.refused,
            )
