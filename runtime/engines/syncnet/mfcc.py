"""The MFCC upstream SyncNet feeds its audio stream: python_speech_features.mfcc with its defaults
(25 ms frames every 10 ms, 512-point FFT, 26 mel filters, 13 cepstra, lifter 22, c0 replaced by
the log frame energy), on 16 kHz samples at int16 scale as upstream reads them from a wav file.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.fft import dct

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms: 100 MFCC frames a second, 4 per 25 fps video frame
FFT_SIZE = 512
FILTERS = 26
CEPSTRA = 13
LIFTER = 22
PREEMPHASIS = 0.97


def _hz_to_mel(hz):
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
    return 700 * (10 ** (np.asarray(mel) / 2595.0) - 1)


@lru_cache(maxsize=1)
def filterbank() -> np.ndarray:
    """(26, 257) triangular filters on FFT bins, HTK mel scale, 0 Hz to 8 kHz."""
    mel_points = np.linspace(_hz_to_mel(0), _hz_to_mel(SAMPLE_RATE / 2), FILTERS + 2)
    bins = np.floor((FFT_SIZE + 1) * _mel_to_hz(mel_points) / SAMPLE_RATE)
    bank = np.zeros((FILTERS, FFT_SIZE // 2 + 1))
    for j in range(FILTERS):
        for i in range(int(bins[j]), int(bins[j + 1])):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return bank


def mfcc(samples: np.ndarray) -> np.ndarray:
    """(frames, 13) MFCC of 16 kHz mono samples at int16 scale (float or int)."""
    signal = np.asarray(samples, dtype=np.float64)
    signal = np.append(signal[0], signal[1:] - PREEMPHASIS * signal[:-1])
    count = 1 if len(signal) <= FRAME_LENGTH else 1 + int(math.ceil((len(signal) - FRAME_LENGTH) / FRAME_STEP))
    padded = np.concatenate((signal, np.zeros((count - 1) * FRAME_STEP + FRAME_LENGTH - len(signal))))
    index = np.arange(FRAME_LENGTH)[None, :] + FRAME_STEP * np.arange(count)[:, None]
    frames = padded[index]
    power = np.abs(np.fft.rfft(frames, FFT_SIZE)) ** 2 / FFT_SIZE
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    bands = power @ filterbank().T
    bands = np.where(bands == 0, eps, bands)
    cepstra = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :CEPSTRA]
    cepstra *= 1 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(CEPSTRA) / LIFTER)
    cepstra[:, 0] = np.log(energy)
    return cepstra
