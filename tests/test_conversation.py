"""A conversation over WS /ws: the avatar speaks each text, idles in between, and stops when the socket closes."""
from __future__ import annotations

import contextlib
import json
import threading
import time

import av
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from runtime.media.fmp4 import FragmentReader
from runtime.media.lipsync import lip_openings

pytestmark = pytest.mark.service


class Session:
    """A client: messages as they arrive, with arrival times, read by a background thread."""

    def __init__(self, url: str):
        self._connection = contextlib.ExitStack()
        self.socket = self._connection.enter_context(
            connect(url.replace("http://", "ws://") + "/ws", max_size=None, open_timeout=30))
        self.binary: list[bytes] = []
        self.events: list[dict] = []
        self.reader = FragmentReader()
        self.fragments = []
        self.media_seconds = 0.0
        self.changed = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)

    def start(self, **fields) -> dict:
        self.socket.send(json.dumps({"type": "start", **fields}))
        ready = json.loads(self.socket.recv(timeout=60))
        self.thread.start()
        return ready

    def _read(self) -> None:
        try:
            for message in self.socket:
                with self.changed:
                    if isinstance(message, bytes):
                        self.binary.append(message)
                        for fragment in self.reader.feed(message):
                            self.fragments.append(fragment)
                            self.media_seconds = fragment.end_seconds()
                    else:
                        self.events.append(json.loads(message))
                    self.changed.notify_all()
        except Exception:
            pass
        finally:
            with self.changed:
                self.closed = True
                self.changed.notify_all()

    def say(self, text: str) -> None:
        self.socket.send(json.dumps({"type": "say", "text": text}))

    def wait_for(self, condition, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                remaining = deadline - time.monotonic()
                assert remaining > 0 and not self.closed, f"timed out; events so far: {self.events}"
                self.changed.wait(remaining)

    def event(self, name: str, utterance: int) -> dict | None:
        return next((e for e in self.events if e.get("event") == name and e.get("id") == utterance), None)


@pytest.mark.slow
def test_two_utterances_with_a_pause_stream_continuously_and_idle_with_a_closed_mouth(default_server, tmp_path,
                                                                                     astronaut):
    session = Session(default_server.url)
    ready = session.start()
    assert ready["event"] == "ready" and ready["backend"] == "meshwarp" and ready["fps"] == 25
    session.wait_for(lambda: session.media_seconds >= 1.0)  # idling before anything is said
    session.say("Hello there! It is good to see you.")
    session.wait_for(lambda: session.event("utterance_finished", 1))
    finished = session.event("utterance_finished", 1)["at"]
    session.wait_for(lambda: session.media_seconds >= finished + 3.0)  # a pause of a few seconds
    session.say("And here I am again, speaking once more.")
    session.wait_for(lambda: session.event("utterance_finished", 2))
    end = session.event("utterance_finished", 2)["at"]
    session.wait_for(lambda: session.media_seconds >= end + 0.5)
    session.socket.close()
    started = [session.event("utterance_started", n)["at"] for n in (1, 2)]
    assert 0 < started[0] < finished < started[1] < end

    # One stream: fragments' timestamps run on without a gap or overlap, through the pause.
    fragments = list(session.fragments)
    assert len(fragments) >= 10 and all(f.runs["video"].starts_with_keyframe for f in fragments)
    for before, after in zip(fragments, fragments[1:]):
        for kind in ("video", "audio"):
            assert before.runs[kind].start + before.runs[kind].duration == after.runs[kind].start, kind
    path = tmp_path / "session.mp4"
    path.write_bytes(b"".join(session.binary))
    with av.open(str(path)) as container:
        times = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert np.allclose(np.diff(times), 1 / 25)

    from runtime.media.landmarks import FaceLocator

    locator = FaceLocator()
    try:
        speaking = [int(t * 25) for t in np.arange(started[0] + 0.2, finished - 0.2, 0.04)]
        idle = [int(t * 25) for t in np.arange(finished + 1.0, started[1] - 0.5, 0.04)]  # the lips part ahead of speech
        openings = lip_openings([astronaut] + [frames[i] for i in speaking + idle], locator)
    finally:
        locator.close()
    at_rest, speech_open, idle_open = openings[0], openings[1:len(speaking) + 1], openings[len(speaking) + 1:]
    assert not np.isnan(idle_open).any(), "the face is there while idle"
    # Idle: the portrait's own mouth at rest, give or take the head's sway; speaking moves it.
    assert np.abs(idle_open - at_rest).max() < 0.008, (at_rest, idle_open)
    assert np.nanmax(speech_open) - np.nanmin(speech_open) > 2 * (np.max(idle_open) - np.min(idle_open)) + 0.01


def test_closing_the_socket_mid_utterance_stops_rendering(default_server):
    session = Session(default_server.url)
    ready = session.start()
    session.say("Good morning, and welcome to the show. " * 40)
    session.wait_for(lambda: session.event("utterance_started", 1) is not None)
    session.wait_for(lambda: session.media_seconds >= session.event("utterance_started", 1)["at"] + 1.0)
    session.socket.close()
    match = default_server.wait_for_log(
        rf"request {ready['session_id']} cancelled after (\d+) frames \(.*; stopped ([0-9.]+) s after", timeout=10)
    assert float(match.group(2)) < 1.0
    assert int(match.group(1)) < 25 * 30, "the long utterance was not rendered to its end"


def test_a_bad_start_is_answered_with_an_error_and_a_close(default_server):
    from skimage.data import chelsea  # a cat

    from .server import png_base64

    with connect(default_server.url.replace("http://", "ws://") + "/ws", max_size=None) as socket:
        socket.send(json.dumps({"type": "start", "image": png_base64(chelsea())}))
        reply = json.loads(socket.recv(timeout=60))
        assert reply["error"] == "no_face" and reply["detail"]
        with pytest.raises(ConnectionClosed):  # closed by the server, not a timeout
            socket.recv(timeout=10)
        assert socket.close_code == 1008
