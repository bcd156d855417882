"""A request's speech is synthesized from the moment it is opened, a bounded distance ahead of rendering."""
from __future__ import annotations

import threading
import time

import pytest

from runtime.cancellation import CancelToken
from runtime.config import Settings
from runtime.device import DeviceChoice
from runtime.errors import UnknownVoiceError
from runtime.pipeline import SpeechFeed, synthesize_chunks
from runtime.tts.chunking import ramped_chunks
from runtime.tts.piper_engine import PiperEngine

pytestmark = pytest.mark.unit

TEXT = ("Good morning, and welcome to the show. Today we are going to talk about the mountains of the north, "
        "the rivers that run down from them, and the small towns along their banks. ") * 3


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine.load(Settings(), DeviceChoice("cpu", "test", False))


def _spoken_chunks(piper: PiperEngine, token: CancelToken, spoken: list[float], voice=None):
    for speech in synthesize_chunks(piper, TEXT, voice=voice, speaker_wav=None, max_seconds=120.0, token=token,
                                    max_chars=200):
        spoken.append(speech.duration)
        yield speech


def _wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_speech_is_synthesized_ahead_while_nobody_reads_it_and_no_further_than_two_chunks(piper):
    token, spoken = CancelToken(), []
    feed = SpeechFeed(_spoken_chunks(piper, token, spoken), token, "tts-ahead")
    # Nobody reads yet (the portrait is being prepared): two chunks wait, a third waits for room.
    _wait_for(lambda: len(spoken) >= 3)
    time.sleep(0.5)
    assert len(spoken) == 3
    chunks = list(feed)
    assert [chunk.duration for chunk in chunks] == spoken
    assert len(chunks) == len(ramped_chunks(TEXT)) > 3


def test_a_bad_voice_is_raised_to_whoever_waits_for_the_first_chunk(piper):
    token = CancelToken()
    feed = SpeechFeed(_spoken_chunks(piper, token, [], voice="nobody"), token, "tts-bad-voice")
    with pytest.raises(UnknownVoiceError):
        feed.first()


def test_a_stopped_feed_ends_its_thread_without_reading_the_rest(piper):
    token, spoken = CancelToken(), []
    feed = SpeechFeed(_spoken_chunks(piper, token, spoken), token, "tts-stopped")
    assert feed.first().duration > 0
    feed.stop()
    _wait_for(lambda: not any(thread.name == "tts-stopped" for thread in threading.enumerate()), 10.0)
    assert not any(thread.name == "tts-stopped" for thread in threading.enumerate())
    assert len(spoken) <= 5 < len(ramped_chunks(TEXT))  # the first, two waiting, one or two synthesized meanwhile
    assert not token.cancelled  # the request itself goes on (a failed opening stops only its speech)
