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


def _today_face_motion_mouth(speech: Speech, fps: int):
    """The whole-clip mouth cues as face_motion computed them before it streamed (reference):
    the loudness reference is the 98th percentile of every frame's level."""
    from scipy.ndimage import gaussian_filter1d

    n = frame_count(speech.duration, fps)
    hop = speech.sample_rate / fps
    window = int(2 * hop) // 2 * 2
    half = window // 2
    padded = np.pad(speech.samples.astype(np.float32), (half, half + window))
    centres = (np.arange(n) * hop + hop / 2).astype(np.int64) + half
    power = np.abs(np.fft.rfft(padded[centres[:, None] + np.arange(-half, half)] * np.hanning(window), axis=1)) ** 2
    freqs = np.fft.rfftfreq(window, 1.0 / speech.sample_rate)

    def band(low, high):
        return power[:, (freqs >= low) & (freqs < high)].sum(axis=1)

    level = 10 * np.log10((power.sum(axis=1) + 1e-10) / power.shape[1] + 1e-10)
    loudness = np.clip((level - (np.percentile(level, 98) - 40)) / 40, 0, 1)
    fricative = band(3500, 8000) / (band(80, 2500) + band(3500, 8000) + 1e-10)
    openness = band(550, 1100) / (band(550, 1100) + band(80, 550) + 1e-10)
    lip_open = loudness ** 1.3 * (0.55 + 0.6 * openness) * (1 - 0.6 * fricative)
    return gaussian_filter1d(loudness, 0.8, mode="nearest"), np.clip(gaussian_filter1d(lip_open, 0.8, mode="nearest"), 0, 1)


def test_streamed_motion_matches_the_whole_clip_computation(spoken):
    """Pushing speech in uneven pieces gives the same motion as the whole clip at once (no seam),
    and that is close to what the whole-clip analysis gave before it streamed."""
    from runtime.media.speech_motion import FaceMotion, SpeechMotion

    whole = face_motion(spoken, 25)
    stream = SpeechMotion(spoken.sample_rate, 25)
    pieces, position = [], 0
    for size in np.random.default_rng(7).integers(200, 9000, size=1000):
        if position >= len(spoken.samples):
            break
        pieces.append(stream.push(spoken.samples[position:position + size]))
        position += size
    pieces.append(stream.finish())
    streamed = FaceMotion.concatenate(pieces)
    assert streamed.n_frames == whole.n_frames == frame_count(spoken.duration, 25)
    assert [p.first_frame for p in pieces if p.n_frames] == sorted({p.first_frame for p in pieces if p.n_frames})
    # Blinks and sway are functions of time alone; the mouth differs only while the loudness
    # reference is still being learned from the first second of speech.
    np.testing.assert_array_equal(streamed.blink, whole.blink)
    np.testing.assert_array_equal(streamed.head_yaw, whole.head_yaw)
    assert np.abs(streamed.mouth.lip_open - whole.mouth.lip_open).max() < 0.1
    assert np.abs(streamed.head_pitch - whole.head_pitch).max() < 0.5  # degrees
    # No seam: no jump between frames bigger than the whole clip's largest.
    assert np.abs(np.diff(streamed.mouth.lip_open)).max() <= np.abs(np.diff(whole.mouth.lip_open)).max() + 0.05
    loudness, lip_open = _today_face_motion_mouth(spoken, 25)
    assert np.abs(whole.mouth.loudness - loudness).max() < 0.03
    assert np.abs(whole.mouth.lip_open - lip_open).max() < 0.03


def test_streamed_motion_needs_only_a_small_lookahead_and_bounded_memory(spoken):
    from runtime.media.speech_motion import SpeechMotion, lookahead_frames

    stream = SpeechMotion(spoken.sample_rate, 25)
    per_frame = spoken.sample_rate / 25
    out = stream.push(spoken.samples[: int(40 * per_frame)])
    assert lookahead_frames(25) <= 13  # about half a second
    assert out.n_frames >= 40 - lookahead_frames(25) - 2
    silence = np.zeros(int(per_frame * 25), np.float32)
    for _ in range(200):  # 200 s of idle: what is kept does not grow
        stream.push(silence)
    samples, frames = stream.held
    assert samples < 4 * per_frame and frames < 80
