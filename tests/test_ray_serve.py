"""The service behind Ray Serve: a local Ray cluster (started and stopped here) with 2 CPU replicas
of meshwarp. Clients talk to Ray's proxy exactly as to one server; each answer names its replica.

Each request sends its own speech of a distinct length, so an answer that came back to the wrong
client, or was cut short, shows as a clip of the wrong duration."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import av
import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from runtime.media.audio import Speech, wav_bytes
from runtime.media.fmp4 import FragmentReader

from .server import REPO, free_port, png_base64

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # ray's own pydantic fields, at import
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (scripts/install.sh --dev installs it)")
    from ray import serve

from runtime.serve_app import deploy, start_local_cluster  # noqa: E402

pytestmark = [pytest.mark.service, pytest.mark.slow]

APP = "avatar"
DEPLOYMENT = "AvatarService"
SAMPLE_RATE = 16000


@dataclass
class RayService:
    url: str
    options: dict
    metrics_url: str  # Ray's Prometheus export

    def deploy(self, **changes) -> None:
        """Redeploy with changed options (Serve applies a replica count change in place)."""
        self.options.update(changes)
        deploy(host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), wait_s=180, **self.options)


def speech(seconds: float, seed: int) -> str:
    """Base64 wav: syllable-like bursts (4 a second) of a voiced tone, `seconds` long."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi)), 0, None)
    voice = np.sin(2 * np.pi * 140 * t) + 0.4 * np.sin(2 * np.pi * 280 * t) + 0.05 * rng.standard_normal(t.size)
    samples = (0.4 * envelope * voice).astype(np.float32)
    return base64.b64encode(wav_bytes(Speech(samples, SAMPLE_RATE))).decode()


@dataclass
class Answer:
    seconds_sent: float
    status: Optional[int]  # None: the connection failed
    replica: Optional[str] = None
    audio_seconds: float = 0.0
    video_frames: int = 0
    error: str = ""

    def is_the_clip_sent(self) -> bool:
        """A whole mp4 whose audio lasts what was sent and whose video covers it at 25 fps."""
        return (self.status == 200 and not self.error and abs(self.audio_seconds - self.seconds_sent) <= 0.1
                and abs(self.video_frames - self.seconds_sent * 25) <= 2)


def generate(url: str, seconds: float, seed: int, **fields) -> Answer:
    try:
        response = httpx.post(f"{url}/generate", json={"audio": speech(seconds, seed), **fields}, timeout=240)
    except httpx.TransportError as exc:
        return Answer(seconds, None, error=repr(exc))
    answer = Answer(seconds, response.status_code, response.headers.get("x-serve-replica"))
    if response.status_code != 200:
        answer.error = response.text[:300]
        return answer
    return measured(answer, response.content)


def measured(answer: Answer, mp4: bytes) -> Answer:
    """The answer with its clip's audio seconds and video frames (an mp4 or a fragmented one)."""
    try:
        with av.open(io.BytesIO(mp4)) as container:
            answer.video_frames = sum(1 for _ in container.decode(video=0))
        with av.open(io.BytesIO(mp4)) as container:
            answer.audio_seconds = sum(frame.samples / frame.sample_rate for frame in container.decode(audio=0))
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        answer.error = f"undecodable: {exc!r}"
    return answer


class InFlight:
    """A POST /generate/stream in its own thread. `started` is set once the answer began: the
    request is then rendering on the replica its `X-Serve-Replica` header names."""

    def __init__(self, url: str, seconds: float, seed: int):
        self.url, self.seconds, self.seed = url, seconds, seed
        self.replica: Optional[str] = None
        self.answer: Optional[Answer] = None
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.url}/generate/stream", json={"audio": speech(self.seconds, self.seed)},
                              timeout=300) as response:
                self.replica = response.headers.get("x-serve-replica")
                self.started.set()
                chunks = []
                for chunk in response.iter_bytes():
                    if self.stopped.is_set():  # hang up: the server stops rendering it
                        return
                    chunks.append(chunk)
                body = b"".join(chunks)
            self.answer = Answer(self.seconds, response.status_code, self.replica)
            self.answer = measured(self.answer, body) if response.status_code == 200 else self.answer
        except httpx.HTTPError as exc:  # the connection or the stream broke off
            self.answer = Answer(self.seconds, None, self.replica, error=repr(exc))
        finally:
            self.started.set()

    def stop(self) -> None:
        self.stopped.set()

    def result(self) -> Answer:
        self.thread.join(timeout=300)
        assert self.answer is not None, "no answer in 300 s"
        return self.answer


def start_in_flight(url: str, durations: list[float], first_seed: int) -> list[InFlight]:
    """Streams of the given lengths, returned once every one of them is rendering on a replica."""
    requests = [InFlight(url, seconds, first_seed + n) for n, seconds in enumerate(durations)]
    for request in requests:
        assert request.started.wait(timeout=180), "a stream did not start in 180 s"
    return requests


def generate_all(url: str, durations: list[float], concurrency: int, **fields) -> list[Answer]:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda job: generate(url, job[1], job[0], **fields), enumerate(durations)))


def replica_pids() -> list[int]:
    """Processes of this test's Ray cluster (descendants of this process) running a replica."""
    children: dict[int, list[int]] = {}
    titles: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                titles[int(entry)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [os.getpid()]
    while stack:
        for child in children.get(stack.pop(), []):
            if f"ServeReplica:{APP}:{DEPLOYMENT}" in titles.get(child, ""):
                found.append(child)
            stack.append(child)
    return found


def running_replicas() -> int:
    status = serve.status().applications[APP]
    deployment = status.deployments[DEPLOYMENT]
    return deployment.replica_states.get("RUNNING", 0) if status.status == "RUNNING" else 0


def wait_for_replicas(count: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while running_replicas() != count or len(replica_pids()) != count:
        assert time.monotonic() < deadline, f"{count} running replicas not reached: {serve.status()}"
        time.sleep(0.5)


def session_members(session: int) -> list[int]:
    """Processes whose session is `session` (a process started with start_new_session=True and all
    it started, however they were reparented)."""
    members = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[3]) == session:
                    members.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return members


def test_the_serve_engine_ray_command_serves_and_stops_its_cluster_on_sigterm(tmp_path):
    """What `SERVE_ENGINE=ray ./scripts/serve.sh` runs after its install step: a local cluster with
    serve_config.yaml fitted to this machine (no GPU: replicas on CPUs)."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.serve_app", "--num-cpus", "1", "--metrics-export-port", str(free_port())],
            cwd=REPO, start_new_session=True,
            stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PORT": str(port), "AVATAR_BACKEND": "meshwarp", "AVATAR_ENV_FILE": "",
                 "MODELS_DIR": str(tmp_path / "no-models"), "DATA_DIR": str(tmp_path / "data")})
    try:
        deadline = time.monotonic() + 180
        while b"Ready: http://127.0.0.1:%d (Ray Serve" % port not in log_path.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.5)
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=30)
        assert ready.status_code == 200 and ready.headers["x-serve-replica"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()[-4000:]
        deadline = time.monotonic() + 30
        while session_members(process.pid):  # Ray's processes leave with it
            assert time.monotonic() < deadline, f"left running: {session_members(process.pid)}"
            time.sleep(0.5)
    finally:
        for pid in session_members(process.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_service(tmp_path_factory) -> RayService:
    metrics_port = free_port()
    # Load reaches Serve's autoscaler every second instead of every 10 s (read by the processes
    # the cluster starts, which inherit this environment).
    pushes = {f"RAY_SERVE_{side}_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1" for side in ("HANDLE", "REPLICA")}
    saved = {name: os.environ.get(name) for name in pushes}
    os.environ.update(pushes)
    start_local_cluster(num_cpus=2, object_store_mb=100, metrics_export_port=metrics_port)
    try:
        options = dict(
            replicas=2, gpus_per_replica=0, cpus_per_replica=1,
            # Two requests a replica at once: four concurrent requests always reach both replicas.
            max_ongoing_requests=2, graceful_shutdown_timeout_s=90,
            # Streams run two at a time on a replica here; admission (tested on its own) must not
            # refuse the second on a loaded 2-core machine.
            env={"AVATAR_BACKEND": "meshwarp", "AVATAR_ENV_FILE": "", "RENDER_CAPACITY_FPS": "1000",
                 "MODELS_DIR": str(tmp_path_factory.mktemp("no-models")),
                 "DATA_DIR": str(tmp_path_factory.mktemp("shared-data"))},
        )
        url = deploy(host="127.0.0.1", port=free_port(), wait_s=180, **options)
        yield RayService(url, options, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        serve.shutdown()
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_twelve_concurrent_requests_are_spread_over_both_replicas_none_lost_or_mixed_up(ray_service):
    durations = [1.0 + 0.25 * n for n in range(12)]  # distinct lengths: a mixed-up answer shows
    answers = generate_all(ray_service.url, durations, concurrency=12)
    assert [a.status for a in answers] == [200] * 12, [a.error for a in answers if a.status != 200]
    assert all(a.is_the_clip_sent() for a in answers), answers
    served = {a.replica for a in answers}
    assert len(served) == 2 and None not in served, served


def test_every_replicas_metrics_reach_rays_prometheus_export(ray_service):
    served = {a.replica for a in generate_all(ray_service.url, [1.0] * 4, concurrency=4)}
    pattern = re.compile(r'^ray_avatar_requests_total\{([^}]*)\} ([0-9.e+]+)$', re.MULTILINE)
    deadline = time.monotonic() + 90  # replicas copy every 5 s; Ray reports every 10 s
    while True:
        text = httpx.get(ray_service.metrics_url, timeout=30).text
        generated = {}
        for labels, value in pattern.findall(text):
            tags = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if tags.get("endpoint") == "/generate" and tags.get("status") == "200":
                generated[tags["replica"]] = generated.get(tags["replica"], 0) + float(value)
        if set(generated) >= served:
            break
        assert time.monotonic() < deadline, (served, generated, text[-3000:])
        time.sleep(2)
    assert all(count >= 1 for count in generated.values()), generated


def test_an_avatar_registered_through_one_replica_is_used_by_both(ray_service, astronaut):
    registered = httpx.post(f"{ray_service.url}/avatars", json={"image": png_base64(astronaut[::2, ::2].copy())},
                            timeout=120)
    assert registered.status_code in (200, 201), registered.text
    avatar_id = registered.json()["avatar_id"]
    answers: list[Answer] = []
    for batch in range(3):
        answers += generate_all(ray_service.url, [1.0, 1.25, 1.5, 1.75], concurrency=4, avatar_id=avatar_id)
        if len({a.replica for a in answers}) == 2:
            break
    assert all(a.is_the_clip_sent() for a in answers), answers
    assert len({a.replica for a in answers}) == 2, [a.replica for a in answers]
    unknown = httpx.post(f"{ray_service.url}/generate", json={"text": "Hi.", "avatar_id": "0" * 32}, timeout=60)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_avatar"
    # One request id, the same in the header (set by Ray's proxy) and in the error body (the app's).
    assert unknown.headers.get_list("x-request-id") == [unknown.json()["request_id"]]


def test_a_websocket_conversation_goes_through_the_proxy_unchanged(ray_service):
    reader, events, media_seconds = FragmentReader(), [], 0.0
    with connect(ray_service.url.replace("http://", "ws://") + "/ws", max_size=None, open_timeout=30) as socket:
        assert socket.response.headers["x-serve-replica"]  # the session stays on this replica
        socket.send(json.dumps({"type": "start"}))
        ready = json.loads(socket.recv(timeout=60))
        assert ready["event"] == "ready" and ready["backend"] == "meshwarp"
        socket.send(json.dumps({"type": "say", "text": "Hello from behind the proxy."}))
        def finished_at() -> float:
            return next((event["at"] for event in events if event.get("event") == "utterance_finished"), np.inf)

        deadline = time.monotonic() + 120
        while media_seconds < finished_at():  # the utterance, then the idle frames after it
            assert time.monotonic() < deadline, (media_seconds, events)
            message = socket.recv(timeout=60)
            if isinstance(message, bytes):
                for fragment in reader.feed(message):
                    media_seconds = fragment.end_seconds()
            else:
                events.append(json.loads(message))
    started = next(event["at"] for event in events if event.get("event") == "utterance_started")
    assert finished_at() - started > 1.0, events  # the sentence was spoken, not skipped


def test_a_killed_replica_is_restarted_while_the_other_finishes_its_requests(ray_service):
    before = {a.replica for a in generate_all(ray_service.url, [1.0] * 4, concurrency=4)}
    victim = replica_pids()[0]
    # Four long streams, two on each replica (two at most per replica), all rendering when it dies.
    in_flight = start_in_flight(ray_service.url, [20.0 + 0.25 * n for n in range(4)], first_seed=10)
    assert len({request.replica for request in in_flight}) == 2
    os.kill(victim, signal.SIGKILL)
    answers = [request.result() for request in in_flight]
    lost = {a.replica for a in answers if not a.is_the_clip_sent()}
    assert len(lost) == 1, answers  # what the killed replica was rendering, and only that
    survivor_answers = [a for a in answers if a.replica not in lost]
    assert len(survivor_answers) == 2 and all(a.is_the_clip_sent() for a in survivor_answers), answers

    wait_for_replicas(2)
    assert victim not in replica_pids()
    after = generate_all(ray_service.url, [1.0 + 0.25 * n for n in range(8)], concurrency=4)
    assert [a.status for a in after] == [200] * 8, [a.error for a in after]
    assert all(a.is_the_clip_sent() for a in after), after
    serving = {a.replica for a in after}
    assert survivor_answers[0].replica in serving and not serving & lost  # the restarted one is new
    assert len(serving - before) == 1, (before, serving)


def test_scaling_down_lets_the_removed_replica_finish_its_requests(ray_service):
    wait_for_replicas(2)
    # Two long streams on each replica, all rendering when the count drops to one.
    in_flight = start_in_flight(ray_service.url, [20.0 + 0.25 * n for n in range(4)], first_seed=100)
    serving_before = {request.replica for request in in_flight}
    assert len(serving_before) == 2
    ray_service.deploy(replicas=1)
    answers = [request.result() for request in in_flight]
    assert all(a.is_the_clip_sent() for a in answers), answers  # the removed replica's two included

    wait_for_replicas(1)
    after = generate_all(ray_service.url, [1.0, 1.5], concurrency=2)
    assert all(a.is_the_clip_sent() for a in after), after
    remaining = {a.replica for a in after}
    assert len(remaining) == 1 and remaining < serving_before  # the other one was removed, after finishing


def test_load_scales_the_replicas_up_and_idleness_back_down(ray_service):
    ray_service.deploy(replicas=None, autoscaling_config={
        "min_replicas": 1, "initial_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
        "upscale_delay_s": 0, "downscale_delay_s": 2, "look_back_period_s": 11})  # > metrics_interval_s
    wait_for_replicas(1)
    in_flight = [InFlight(ray_service.url, 60.0, 200 + n) for n in range(8)]  # 8 ongoing against a target of 1
    try:
        wait_for_replicas(2, timeout_s=120)
    finally:
        for request in in_flight:  # the load ends: the clients hang up
            request.stop()
    wait_for_replicas(1, timeout_s=120)  # idle again: back to min_replicas
