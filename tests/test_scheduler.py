"""The render scheduler: frames of many streams share batches, due frames first, none lost or reordered.

The batch function is real arithmetic (each frame is computed from its portrait and its driving
payload with numpy, the whole batch at once), so a frame handed to the wrong stream or slot shows up
as a wrong value. A fake clock that the batch function advances stands for the device's render time.
"""
from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from runtime.cancellation import CancelToken, Cancelled
from runtime.errors import ServiceBusyError
from runtime.scheduling import RenderFailed, RenderScheduler, SchedulerBusyError, WorkItem
from runtime.scheduling.metrics import register_scheduler_metrics

pytestmark = pytest.mark.unit

FRAME_SHAPE = (4, 4, 3)


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def portrait(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, FRAME_SHAPE).astype(np.float32)


def render_one(item: WorkItem) -> np.ndarray:
    """What one frame should be: the portrait moved by its driving value."""
    return np.tanh(item.portrait * 3.0 + item.payload)


class BatchRenderer:
    """A real batch render: stacks the batch's portraits and payloads and computes all frames at once.

    Each batch costs `seconds_per_batch` on the fake clock (padded to the batch size, like a
    compiled engine), and the items of each batch are recorded in order.
    """

    def __init__(self, clock: FakeClock, seconds_per_batch: float):
        self.clock = clock
        self.seconds_per_batch = seconds_per_batch
        self.batches: list[list[WorkItem]] = []

    def __call__(self, items):
        self.batches.append(list(items))
        portraits = np.stack([item.portrait for item in items])
        payloads = np.array([item.payload for item in items], dtype=np.float32)[:, None, None, None]
        self.clock.advance(self.seconds_per_batch)
        return list(np.tanh(portraits * 3.0 + payloads))

    @property
    def rendered(self) -> list[WorkItem]:
        return [item for batch in self.batches for item in batch]


def run_until_idle(scheduler: RenderScheduler) -> None:
    while scheduler.step():
        pass


def make_scheduler(batch_size=4, capacity=100.0, seconds_per_batch=None, **options):
    clock = FakeClock()
    renderer = BatchRenderer(clock, seconds_per_batch if seconds_per_batch is not None else batch_size / capacity)
    scheduler = RenderScheduler(renderer, batch_size=batch_size, initial_capacity_fps=capacity, clock=clock, **options)
    return scheduler, renderer, clock


def test_frames_due_soonest_are_rendered_first_across_streams():
    scheduler, renderer, clock = make_scheduler(batch_size=2, capacity=1000.0)
    late = scheduler.open_stream(25, name="late")
    early = scheduler.open_stream(25, name="early")
    middle = scheduler.open_stream(25, name="middle")
    for index in range(3):
        late.submit(0.3 + index, portrait(1), deadline=clock() + 10 + index)
        early.submit(0.1 + index, portrait(2), deadline=clock() + 1 + index)
        middle.submit(0.2 + index, portrait(3), deadline=clock() + 5 + index)
    run_until_idle(scheduler)

    deadlines = [item.deadline for item in renderer.rendered]
    assert deadlines == sorted(deadlines)
    assert [len(batch) for batch in renderer.batches] == [2, 2, 2, 2, 1]
    # The batch that mixed two streams' frames handed each stream its own frame.
    for stream, seed in ((late, 1), (early, 2), (middle, 3)):
        stream.finish()
        expected = [np.tanh(portrait(seed) * 3.0 + payload) for payload in
                    [{1: 0.3, 2: 0.1, 3: 0.2}[seed] + index for index in range(3)]]
        got = list(stream.frames(timeout_s=1))
        assert len(got) == 3
        for frame, want in zip(got, expected):
            np.testing.assert_allclose(frame, want, rtol=1e-6)


def test_long_whole_file_request_does_not_starve_a_live_stream_and_still_runs_ahead():
    # 100 frames/s in batches of 4; a 20 s whole-file request (500 frames) arrives first, then a
    # live 25 fps session whose frames are due 0.2 s after they are submitted.
    scheduler, renderer, clock = make_scheduler(batch_size=4, capacity=100.0)
    file_portrait, live_portrait = portrait(7), portrait(8)
    whole_file = scheduler.open_stream(25, start_delay_s=0.2, name="whole-file")
    for index in range(500):
        whole_file.submit(index * 0.001, file_portrait)  # due at its own real-time pace
    whole_file.finish()
    started = clock()
    live = scheduler.open_stream(25, name="live")
    live_frames = 100
    next_submit = started
    submitted = 0
    while True:
        while submitted < live_frames and next_submit <= clock():
            live.submit(submitted * 0.01, live_portrait, deadline=next_submit + 0.2)
            submitted += 1
            next_submit += 1 / 25
        if scheduler.step():
            continue
        if submitted == live_frames:
            break
        clock.now = next_submit  # idle until the next live frame arrives
    live.finish()

    assert live.deadline_misses == 0
    assert whole_file.deadline_misses == 0
    assert len(list(live.frames(timeout_s=1))) == live_frames
    file_frames = list(whole_file.frames(timeout_s=1))
    assert len(file_frames) == 500
    # The whole-file request used the slots the live stream left: 500 frames (20 s of video) were
    # done in well under 20 s, though it had to share the device.
    last_file_batch = max(i for i, batch in enumerate(renderer.batches)
                          if any(item.portrait is file_portrait for item in batch))
    assert (last_file_batch + 1) * renderer.seconds_per_batch < 10.0
    # And the live stream's frames went into the batches as soon as they came.
    live_batches = [i for i, batch in enumerate(renderer.batches) if any(item.portrait is live_portrait for item in batch)]
    assert len(live_batches) == live_frames


def test_random_arrivals_lose_no_frame_and_keep_each_streams_order():
    rng = random.Random(20261202)
    scheduler, renderer, clock = make_scheduler(batch_size=5, capacity=10_000.0)
    streams, expected = [], {}
    for seed in range(6):
        stream = scheduler.open_stream(25, name=f"s{seed}")
        streams.append((stream, portrait(100 + seed)))
        expected[stream.id] = []
    received = {stream.id: [] for stream, _ in streams}
    for _ in range(400):
        action = rng.random()
        if action < 0.6:
            stream, image = rng.choice(streams)
            for _ in range(rng.randint(1, 7)):
                payload = rng.uniform(-1, 1)
                # Deadlines out of order within a stream: frames must still come back in order.
                stream.submit(payload, image, deadline=clock() + rng.uniform(0, 2))
                expected[stream.id].append(render_one(WorkItem(payload, image, 0)))
        elif action < 0.9:
            scheduler.step()
        else:
            stream, _ = rng.choice(streams)
            for _ in range(rng.randint(0, 3)):
                if len(received[stream.id]) < len(expected[stream.id]) and _has_ready(stream):
                    received[stream.id].append(next(stream.frames(timeout_s=0)))
    run_until_idle(scheduler)
    for stream, _ in streams:
        stream.finish()
        received[stream.id].extend(stream.frames(timeout_s=1))
        assert len(received[stream.id]) == len(expected[stream.id]) > 0
        for got, want in zip(received[stream.id], expected[stream.id]):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    assert sum(len(batch) for batch in renderer.batches) == sum(len(v) for v in expected.values())


def _has_ready(stream) -> bool:
    with stream._scheduler._lock:
        return bool(stream._results)


def test_streams_submitting_from_threads_get_all_their_frames_in_order():
    rng = random.Random(7)
    clock = FakeClock()
    renderer = BatchRenderer(clock, seconds_per_batch=0.0)
    scheduler = RenderScheduler(renderer, batch_size=8, initial_capacity_fps=10_000.0, clock=clock).start()
    plans = [[rng.uniform(-1, 1) for _ in range(rng.randint(50, 200))] for _ in range(5)]
    results: dict[int, list] = {}

    def one_stream(index: int, payloads: list[float]) -> None:
        image = portrait(200 + index)
        chunk_rng = random.Random(index)
        with scheduler.open_stream(25) as stream:
            position = 0
            while position < len(payloads):
                chunk = payloads[position:position + chunk_rng.randint(1, 12)]
                for payload in chunk:
                    stream.submit(payload, image)
                position += len(chunk)
            stream.finish()
            results[index] = list(stream.frames(timeout_s=10))

    threads = [threading.Thread(target=one_stream, args=(i, plan)) for i, plan in enumerate(plans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    scheduler.stop()

    for index, payloads in enumerate(plans):
        image = portrait(200 + index)
        assert len(results[index]) == len(payloads)
        want = np.stack([render_one(WorkItem(p, image, 0)) for p in payloads])
        np.testing.assert_allclose(np.stack(results[index]), want, rtol=1e-6)


def test_a_stream_past_capacity_is_refused_with_retry_after_until_one_leaves():
    scheduler, _, _ = make_scheduler(capacity=100.0, headroom=0.9, retry_after_s=3.0)
    admitted = [scheduler.open_stream(25) for _ in range(3)]  # 75 of 90 frames/s
    with pytest.raises(SchedulerBusyError) as refused:
        scheduler.open_stream(25)
    assert isinstance(refused.value, ServiceBusyError)  # the HTTP layer answers it with a 503
    assert refused.value.retry_after_s == 3.0
    assert scheduler.stats().refused_streams == 1

    admitted[0].finish()  # nothing pending: its share comes back at once
    fourth = scheduler.open_stream(25)
    assert scheduler.stats().active_streams == 3
    assert fourth.frames_per_second == 25


def test_capacity_is_measured_from_the_batches_it_ran():
    # The configured estimate says 1000 frames/s, but a full batch of 4 takes 0.1 s: 40 frames/s.
    scheduler, _, _ = make_scheduler(batch_size=4, capacity=1000.0, seconds_per_batch=0.1)
    first = scheduler.open_stream(25)
    for index in range(4):
        first.submit(float(index), portrait(1))
    assert scheduler.step() == 4
    assert scheduler.capacity_fps == pytest.approx(40.0)
    with pytest.raises(SchedulerBusyError):
        scheduler.open_stream(25)  # 50 > 0.9 * 40


def test_a_whole_file_request_can_wait_for_capacity():
    scheduler, _, _ = make_scheduler(capacity=30.0, headroom=1.0)
    live = scheduler.open_stream(25)
    threading.Timer(0.1, live.cancel).start()
    waiting = scheduler.open_stream(25, wait_s=5.0)
    assert scheduler.stats().active_streams == 1
    assert waiting.frames_per_second == 25


def test_cancelling_a_stream_drops_its_pending_work_and_wakes_its_reader():
    scheduler, renderer, _ = make_scheduler(batch_size=4, capacity=1000.0)
    images = {name: portrait(seed) for seed, name in enumerate(("leaving", "staying", "hung_up"))}
    leaving = scheduler.open_stream(25)
    staying = scheduler.open_stream(25)
    token = CancelToken()
    hung_up = scheduler.open_stream(25, cancel_token=token)
    for index in range(10):
        leaving.submit(float(index), images["leaving"], deadline=index)
        staying.submit(float(index), images["staying"], deadline=index + 0.5)
        hung_up.submit(float(index), images["hung_up"], deadline=index + 1.7)
    scheduler.step()  # frame 0 and 1 of leaving and staying
    leaving.cancel("client went away")
    token.cancel("disconnect")
    run_until_idle(scheduler)

    def rendered_for(name):
        return sum(item.portrait is images[name] for item in renderer.rendered)

    assert rendered_for("leaving") == 2  # only what ran before the cancel
    assert rendered_for("hung_up") == 0  # its token was seen before its first frame was due
    assert rendered_for("staying") == 10
    with pytest.raises(Cancelled, match="client went away"):
        list(leaving.frames(timeout_s=1))
    with pytest.raises(Cancelled, match="disconnect"):
        list(hung_up.frames(timeout_s=1))
    staying.finish()
    assert len(list(staying.frames(timeout_s=1))) == 10
    assert scheduler.stats().active_streams == 0


def test_a_failed_batch_fails_the_streams_in_it_and_the_others_go_on():
    clock = FakeClock()
    good = BatchRenderer(clock, 0.01)

    def render(items):
        if any(item.payload == "poison" for item in items):
            raise ValueError("engine ran out of memory")
        return good(items)

    scheduler = RenderScheduler(render, batch_size=2, initial_capacity_fps=1000.0, clock=clock)
    broken = scheduler.open_stream(25)
    healthy = scheduler.open_stream(25)
    broken.submit("poison", portrait(1), deadline=0)
    healthy.submit(0.5, portrait(2), deadline=10)
    healthy.submit(0.6, portrait(2), deadline=11)
    healthy.finish()
    run_until_idle(scheduler)

    with pytest.raises(RenderFailed, match="out of memory"):
        list(broken.frames(timeout_s=1))
    # The healthy stream's first frame shared the failed batch; it fails too, its second does not run.
    with pytest.raises(RenderFailed):
        list(healthy.frames(timeout_s=1))


def test_late_frames_count_as_deadline_misses_and_metrics_show_the_figures():
    scheduler, _, clock = make_scheduler(batch_size=2, capacity=100.0, seconds_per_batch=0.5)
    stream = scheduler.open_stream(25)
    stream.submit(0.1, portrait(1), deadline=clock() + 0.4)  # the batch takes 0.5 s: late
    stream.submit(0.2, portrait(1), deadline=clock() + 0.6)
    stream.submit(0.3, portrait(1), deadline=clock() + 0.7)  # second batch ends at +1.0: late
    run_until_idle(scheduler)
    assert stream.deadline_misses == 2

    registry = CollectorRegistry()
    register_scheduler_metrics(registry, scheduler, "cuda")
    text = generate_latest(registry).decode()
    assert 'avatar_render_streams_active{device="cuda"} 1.0' in text
    assert 'avatar_render_deadline_misses_total{device="cuda"} 2.0' in text
    assert 'avatar_render_batches_total{device="cuda"} 2.0' in text
    assert 'avatar_render_batch_fill{device="cuda"} 0.75' in text  # 3 frames in 2 batches of 2
    stats = scheduler.stats()
    assert stats.frames_per_second == pytest.approx(3 / 5.0)  # 3 frames in the 5 s window
    assert stats.capacity_frames_per_second == pytest.approx(4.0)  # one full batch: 2 frames in 0.5 s


def test_an_idle_device_admits_one_stream_even_past_its_capacity_but_no_second():
    scheduler, _, _ = make_scheduler(capacity=10.0)
    alone = scheduler.open_stream(25)  # more than the device renders; refusing the only one would serve nobody
    with pytest.raises(SchedulerBusyError):
        scheduler.open_stream(1)
    alone.close()
    assert scheduler.open_stream(1).frames_per_second == 1


def test_a_waiting_whole_file_request_stops_waiting_when_cancelled():
    scheduler, _, _ = make_scheduler(capacity=30.0, headroom=1.0)
    scheduler.open_stream(25)
    token = CancelToken()
    threading.Timer(0.1, token.cancel, args=("the client disconnected",)).start()
    with pytest.raises(Cancelled, match="the client disconnected"):
        scheduler.open_stream(25, wait_s=30.0, cancel_token=token)
    assert scheduler.stats().active_streams == 1


def test_frames_submitted_together_share_one_batch_and_a_cancelled_reader_stops_at_once():
    scheduler, renderer, _ = make_scheduler(batch_size=4, capacity=1000.0)
    token = CancelToken()
    stream = scheduler.open_stream(25, cancel_token=token)
    stream.submit_all([0.1, 0.2, 0.3], portrait(1), [None, None, None])
    assert scheduler.step() == 3 and len(renderer.batches) == 1
    frames = stream.frames()
    assert len([next(frames) for _ in range(3)]) == 3
    threading.Timer(0.1, token.cancel).start()
    with pytest.raises(Cancelled):
        next(frames)  # nothing more will come; the reader sees the cancel, not a hang
