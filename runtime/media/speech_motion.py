"""Speech -> per-frame face motion targets, shared by every backend.

From the waveform alone: how open and how rounded the lips are, how loud the frame is, when
the eyes blink and how the head sways and nods. Values are smooth (zero-phase filtered, so the
mouth neither jitters nor lags the sound) and deterministic for a given waveform.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

from .audio import Speech, frame_count

# Bands (Hz) for the mouth-shape cues.
_VOICED_BAND = (80.0, 2500.0)  # vowels and voiced consonants carry most energy here
_FRICATIVE_BAND = (3500.0, 8000.0)  # s, sh, f, t bursts: mouth nearly closed, teeth showing
_OPEN_VOWEL_BAND = (550.0, 1100.0)  # a high first formant means a wide jaw (a, ae)
_LOW_BAND = (80.0, 550.0)
_ROUND_BAND = (80.0, 1000.0)  # rounded vowels (o, u) keep both formants below ~1 kHz
_LOUDNESS_RANGE_DB = 40.0  # frames this far below the loudest count as silence


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame mouth targets; each array (n_frames,) float32 in [0, 1]."""

    loudness: np.ndarray
    lip_open: np.ndarray  # 0 closed .. 1 wide open
    lip_round: np.ndarray  # 0 neutral/spread .. 1 rounded (o, u)


@dataclass(frozen=True)
class FaceMotion:
    """Everything a backend needs to animate one clip; arrays (n_frames,) float32."""

    fps: int
    mouth: MouthTrack
    blink: np.ndarray  # 0 eyes open .. 1 closed
    head_pitch: np.ndarray  # degrees, positive = chin down (a nod)
    head_yaw: np.ndarray  # degrees, positive = turns to the viewer's right
    head_roll: np.ndarray  # degrees, positive = clockwise in the image

    @property
    def n_frames(self) -> int:
        return len(self.blink)


def _frame_spectra(speech: Speech, fps: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectra of Hann windows two frames long centred on each video frame.

    Returns (power (n_frames, n_bins), bin frequencies in Hz (n_bins,))."""
    hop = speech.sample_rate / fps
    window_len = int(2 * hop) // 2 * 2
    half = window_len // 2
    padded = np.pad(speech.samples.astype(np.float32), (half, half + window_len))
    centres = (np.arange(n_frames) * hop + hop / 2).astype(np.int64) + half
    index = centres[:, None] + np.arange(-half, half)[None, :]
    windows = padded[index] * np.hanning(window_len).astype(np.float32)
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    return power, np.fft.rfftfreq(window_len, 1.0 / speech.sample_rate)


def _band(power: np.ndarray, freqs: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    low, high = band
    return power[:, (freqs >= low) & (freqs < high)].sum(axis=1)


def _smooth(values: np.ndarray, fps: int, sigma_at_25fps: float = 0.8) -> np.ndarray:
    return gaussian_filter1d(values, sigma=sigma_at_25fps * fps / 25.0, mode="nearest")


def mouth_track(speech: Speech, fps: int) -> MouthTrack:
    """Loudness and mouth shape for each of frame_count(speech.duration, fps) frames."""
    n_frames = frame_count(speech.duration, fps)
    power, freqs = _frame_spectra(speech, fps, n_frames)
    eps = 1e-10
    total = power.sum(axis=1) + eps

    level_db = 10 * np.log10(total / power.shape[1] + eps)
    peak_db = np.percentile(level_db, 98)
    loudness = np.clip((level_db - (peak_db - _LOUDNESS_RANGE_DB)) / _LOUDNESS_RANGE_DB, 0, 1)

    voiced = _band(power, freqs, _VOICED_BAND)
    fricative_share = _band(power, freqs, _FRICATIVE_BAND) / (voiced + _band(power, freqs, _FRICATIVE_BAND) + eps)
    open_vowel = _band(power, freqs, _OPEN_VOWEL_BAND)
    openness_cue = open_vowel / (open_vowel + _band(power, freqs, _LOW_BAND) + eps)
    round_share = _band(power, freqs, _ROUND_BAND) / (voiced + eps)

    # Loudness drives the jaw; open vowels open it further, fricatives hold it near closed.
    lip_open = loudness ** 1.3 * (0.55 + 0.6 * openness_cue) * (1.0 - 0.6 * fricative_share)
    # Rounding needs voicing with energy packed below 1 kHz, and fades with openness (o vs a).
    lip_round = np.clip((round_share - 0.72) / 0.2, 0, 1) * np.clip(loudness * 1.5, 0, 1) * (1 - fricative_share)

    return MouthTrack(
        loudness=_smooth(loudness, fps).astype(np.float32),
        lip_open=np.clip(_smooth(lip_open, fps), 0, 1).astype(np.float32),
        lip_round=np.clip(_smooth(lip_round, fps, 1.2), 0, 1).astype(np.float32),
    )


def blink_track(n_frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure per frame: a blink (0.1 s closing, 0.15 s opening) every 2-5 s."""
    closure = np.zeros(n_frames, dtype=np.float32)
    times = np.arange(n_frames) / fps
    start = rng.uniform(0.6, 2.0)
    while start < times[-1] + 1:
        closing = np.clip((times - start) / 0.1, 0, 1)
        opening = np.clip((times - start - 0.1) / 0.15, 0, 1)
        closure = np.maximum(closure, np.where(times < start + 0.1, closing, 1 - opening))
        start += rng.uniform(2.0, 5.0)
    return np.sin(closure * np.pi / 2).astype(np.float32) ** 2


def head_motion(loudness: np.ndarray, fps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Idle sway (slow sinusoids, a degree or two) plus a nod where the voice rises above its recent level."""
    t = np.arange(len(loudness)) / fps
    phase = rng.uniform(0, 2 * np.pi, size=5)
    yaw = 1.8 * np.sin(2 * np.pi * 0.11 * t + phase[0]) + 0.7 * np.sin(2 * np.pi * 0.29 * t + phase[1])
    roll = 1.0 * np.sin(2 * np.pi * 0.08 * t + phase[2])
    pitch = 0.8 * np.sin(2 * np.pi * 0.17 * t + phase[3]) + 0.4 * np.sin(2 * np.pi * 0.37 * t + phase[4])
    recent = uniform_filter1d(loudness, size=max(1, fps), mode="nearest")
    emphasis = gaussian_filter1d(np.clip(loudness - recent, 0, None), sigma=0.12 * fps, mode="nearest")
    pitch = pitch + 6.0 * emphasis
    # Start from the portrait's own pose so the first frame matches the input image.
    ease_in = np.clip(t / 0.4, 0, 1)
    return tuple((values * ease_in).astype(np.float32) for values in (pitch, yaw, roll))


def face_motion(speech: Speech, fps: int) -> FaceMotion:
    """All motion targets for a clip. Deterministic: the random parts are seeded by the waveform."""
    mouth = mouth_track(speech, fps)
    seed = zlib.crc32(np.ascontiguousarray(speech.samples[:4096]).tobytes()) ^ len(speech.samples)
    rng = np.random.default_rng(seed)
    blink = blink_track(len(mouth.loudness), fps, rng)
    pitch, yaw, roll = head_motion(mouth.loudness, fps, rng)
    return FaceMotion(fps=fps, mouth=mouth, blink=blink, head_pitch=pitch, head_yaw=yaw, head_roll=roll)
