"""Speech -> per-frame mel windows, as upstream's Wav2Lip front end computes them.

16 kHz waveform -> pre-emphasis -> STFT (800-sample Hann window, hop 200, centred with zero
padding, as librosa 0.9.2 does) -> 80-band Slaney mel (55-7600 Hz) -> dB -> clipped to [-4, 4].
That gives 80 mel columns per second; video frame t at 25 fps sees the 16 columns starting at
int(80 * (t - 2) / 25), clamped to the spectrogram.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

from .config import AudioConfig

AUDIO = AudioConfig()


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz a mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_region = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_region, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_region = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_region, linear)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(80, n_fft/2 + 1) triangular filters, area-normalised (librosa `norm='slaney'`)."""
    fft_hz = np.linspace(0, AUDIO.sample_rate / 2, AUDIO.n_fft // 2 + 1)
    edges_mel = np.linspace(_hz_to_slaney_mel(AUDIO.fmin), _hz_to_slaney_mel(AUDIO.fmax), AUDIO.num_mels + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def _stft_magnitude(signal: np.ndarray) -> np.ndarray:
    """|STFT| (n_fft/2 + 1, frames) with a periodic Hann window, centred frames."""
    n_fft, hop = AUDIO.n_fft, AUDIO.hop_length
    padded = np.pad(signal, n_fft // 2)  # zeros: librosa 0.9.2 default (pinned upstream)
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(count, n_fft), strides=(padded.strides[0] * hop, padded.strides[0]))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def mel_spectrogram(samples_16k: np.ndarray) -> np.ndarray:
    """Mono float waveform at 16 kHz -> normalised mel spectrogram (frames, 80) in [-4, 4]."""
    samples = np.asarray(samples_16k, dtype=np.float64)
    emphasised = lfilter([1.0, -AUDIO.preemphasis], [1.0], samples)
    mel = mel_filterbank() @ _stft_magnitude(emphasised)
    min_level = np.exp(AUDIO.min_level_db / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - AUDIO.ref_level_db
    scaled = 2 * AUDIO.max_abs_value * (db - AUDIO.min_level_db) / -AUDIO.min_level_db - AUDIO.max_abs_value
    return np.clip(scaled, -AUDIO.max_abs_value, AUDIO.max_abs_value).T.astype(np.float32)


def frame_mel_windows(mel: np.ndarray, num_frames: int) -> np.ndarray:
    """(mel_frames, 80) -> (num_frames, 80, 16): the mel window each 25 fps video frame hears."""
    mel_per_second = AUDIO.sample_rate / AUDIO.hop_length  # 80
    starts = np.trunc(mel_per_second * (np.arange(num_frames) - 2) / AUDIO.fps).astype(np.int64)
    index = np.clip(starts[:, None] + np.arange(AUDIO.mel_steps_per_frame)[None, :], 0, len(mel) - 1)
    return np.ascontiguousarray(mel[index].transpose(0, 2, 1))


def speech_frame_windows(samples_16k: np.ndarray, num_frames: int) -> np.ndarray:
    """16 kHz waveform -> (num_frames, 80, 16) mel windows at 25 fps.

    The waveform is cut or zero-padded to exactly num_frames video frames first, as upstream
    does, so the spectrogram length matches the clip."""
    samples_per_frame = AUDIO.sample_rate // AUDIO.fps
    wanted = num_frames * samples_per_frame
    samples = np.zeros(wanted, dtype=np.float32)
    samples[: min(wanted, len(samples_16k))] = samples_16k[:wanted]
    return frame_mel_windows(mel_spectrogram(samples), num_frames)
