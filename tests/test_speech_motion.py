"""Speech -> mouth, blink and head motion: shapes, sense and smoothness."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.config import Settings
from runtime.device import DeviceChoice
from runtime.media.audio import Speech, frame_count, pad_to_frames
from runtime.media.speech_motion import face_motion, mouth_track

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def spoken() -> Speech:
    from runtime.tts.piper_engine import PiperEngine

    engine = PiperEngine.load(Settings(), DeviceChoice("cpu", "test", False))
    return engine.synthesize("Open wide, say ahh. Then hush... and say ooh, who knew?")


def test_every_frame_has_a_value_in_range(spoken):
    motion = face_motion(spoken, 25)
    n = frame_count(spoken.duration, 25)
    for track in (motion.mouth.loudness, motion.mouth.lip_open, motion.mouth.lip_round, motion.blink):
        assert track.shape == (n,) and track.min() >= 0 and track.max() <= 1
    assert motion.head_pitch.shape == (n,) and np.abs(motion.head_yaw).max() < 5


def test_silence_closes_the_mouth_and_speech_opens_it(spoken):
    silence = np.zeros(spoken.sample_rate, np.float32)
    clip = Speech(np.concatenate([silence, spoken.samples, silence]), spoken.sample_rate)
    mouth = mouth_track(clip, 25)
    assert mouth.lip_open[:15].max() < 0.05 and mouth.lip_open[-15:].max() < 0.05
    assert mouth.lip_open[25:-25].max() > 0.5
    # The mouth opens with loudness.
    assert np.corrcoef(mouth.lip_open, mouth.loudness)[0, 1] > 0.7


def test_rounded_vowel_rounds_and_open_vowel_opens():
    rate, seconds = 22050, 1.0
    t = np.arange(int(rate * seconds)) / rate

    def vowel(formants):  # a glottal-like pulse train through two resonances
        source = np.sign(np.sin(2 * np.pi * 120 * t)) * 0.1
        out = np.zeros_like(t)
        for f in formants:
            out += np.sin(2 * np.pi * f * t) * 0.5 + source * 0.05
        return Speech((out / np.abs(out).max() * 0.6).astype(np.float32), rate)

    oo = mouth_track(vowel([300, 700]), 25)
    ah = mouth_track(vowel([800, 1200]), 25)
    assert oo.lip_round[5:-5].mean() > ah.lip_round[5:-5].mean() + 0.3
    assert ah.lip_open[5:-5].mean() > oo.lip_open[5:-5].mean()


def test_motion_is_smooth_and_deterministic(spoken):
    first, second = face_motion(spoken, 25), face_motion(spoken, 25)
    np.testing.assert_array_equal(first.mouth.lip_open, second.mouth.lip_open)
    np.testing.assert_array_equal(first.blink, second.blink)
    # No jitter: the mouth never jumps by more than half its range in one frame.
    assert np.abs(np.diff(first.mouth.lip_open)).max() < 0.5
    assert np.abs(np.diff(first.head_yaw)).max() < 0.5  # degrees per frame


def test_blinks_every_few_seconds():
    rate = 16000
    clip = Speech(np.zeros(rate * 20, np.float32), rate)
    blink = face_motion(clip, 25).blink
    closed = np.flatnonzero((blink[1:] > 0.9) & (blink[:-1] <= 0.9))
    assert 3 <= len(closed) <= 10
    assert np.diff(closed).min() >= 2.0 * 25 * 0.9


def test_pad_to_frames_makes_audio_exactly_cover_the_frames():
    speech = Speech(np.ones(22050 + 100, np.float32), 22050)
    padded = pad_to_frames(speech, 25)
    assert frame_count(speech.duration, 25) == 26
    assert len(padded.samples) == round(26 * 22050 / 25)
    assert padded.samples[-1] == 0
