"""Wav2Lip's audio front end, computed as upstream's audio.py does (on librosa 0.7, which its
requirements pin), in numpy: 16 kHz speech -> pre-emphasis -> STFT -> 80 mel bands -> dB ->
symmetric normalization to [-4, 4]; then one 16-frame mel window per video frame.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 16_000  # Hz
N_FFT = 800
HOP = 200  # 12.5 ms: 80 mel frames a second
WINDOW = 800
MEL_BANDS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_WINDOW_FRAMES = 16  # mel frames the network sees per video frame (0.2 s)
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asanyarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, log_step = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / log_step, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asanyarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, log_step = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(log_step * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """(80, 401) float32 triangular filters, Slaney area-normalized, as librosa.filters.mel builds them."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), MEL_BANDS + 2))
    spacing = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / spacing[:-1, None]
    falling = ramps[2:] / spacing[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """Periodic Hann window (scipy.signal.get_window('hann', 800, fftbins=True))."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)


def stft_magnitude(samples: np.ndarray) -> np.ndarray:
    """|STFT| (401, frames): centred frames (reflect-padded by n_fft/2), hop 200, Hann 800."""
    padded = np.pad(samples, N_FFT // 2, mode="reflect")
    frames = 1 + (len(padded) - N_FFT) // HOP
    strided = np.lib.stride_tricks.as_strided(
        padded, shape=(frames, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0]), writeable=False
    )
    spectrum = np.fft.rfft(strided * _hann(), axis=1).astype(np.complex64)  # librosa 0.7 returns complex64
    return np.abs(spectrum).T


def melspectrogram(samples: np.ndarray) -> np.ndarray:
    """(80, frames) float32 normalized log-mel of 16 kHz mono speech (float in [-1, 1]); 80 frames/s.

    Speech shorter than the FFT size is padded with silence so that reflection is defined."""
    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) <= N_FFT // 2:
        samples = np.pad(samples, (0, N_FFT // 2 + 1 - len(samples)))
    emphasized = lfilter([1.0, -PREEMPHASIS], [1.0], samples).astype(np.float32)
    magnitude = stft_magnitude(emphasized)
    mel = mel_basis() @ magnitude
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    level_db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    normalized = (2 * MAX_ABS_VALUE) * ((level_db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(normalized, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def window_start(frame_index: int, fps: float, mel_frames: int) -> int:
    """First mel frame of video frame `frame_index`'s window: upstream's int(i * 80 / fps), and the last
    full window for frames past the end of the mel."""
    return max(0, min(int(frame_index * (MEL_FRAMES_PER_SECOND / fps)), mel_frames - MEL_WINDOW_FRAMES))


def mel_windows(mel: np.ndarray, fps: float, frame_indices, *, mel_offset: int = 0, clamp: bool = True) -> np.ndarray:
    """(len(frame_indices), 1, 80, 16) float32 windows for the given video frames.

    mel: (80, T), the clip's mel frames from mel_offset on (a stream keeps only its recent part).
    clamp: windows past the end take the clip's last full window (the clip has ended); without it
    the caller guarantees every window is inside. A clip shorter than one window is padded with
    silence (the normalized floor, -4)."""
    total = mel_offset + mel.shape[1]
    if total < MEL_WINDOW_FRAMES:
        mel = np.pad(mel, ((0, 0), (0, MEL_WINDOW_FRAMES - total)), constant_values=-MAX_ABS_VALUE)
        total = mel_offset + mel.shape[1]
    starts = []
    for index in frame_indices:
        start = window_start(index, fps, total) if clamp else int(index * (MEL_FRAMES_PER_SECOND / fps))
        if start < mel_offset or start + MEL_WINDOW_FRAMES > total:
            raise ValueError(f"frame {index}'s mel window [{start}, {start + MEL_WINDOW_FRAMES}) is outside "
                             f"the mel frames held [{mel_offset}, {total})")
        starts.append(start - mel_offset)
    return np.stack([mel[:, start:start + MEL_WINDOW_FRAMES] for start in starts])[:, None]
