"""Decode an mp4 for scoring: frames as a lazy iterator, the audio whole, the container's timing."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import av
import numpy as np

from ..errors import InvalidVideoError, UserInputError, VideoTooLargeError

Source = Union[Path, bytes]


@dataclass(frozen=True)
class ClipInfo:
    """What the container says. Times in seconds; offsets positive when audio starts after video."""

    fps: float
    frames: int  # decoded video frames
    width: int
    height: int
    video_duration: float
    audio_duration: float  # nan without an audio stream
    audio_start_offset: float  # audio stream start - video stream start
    samples: np.ndarray  # (n,) mono float32 in [-1, 1]; empty without audio
    sample_rate: int


def _open(source: Source):
    return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r")


def _stream_start(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def read_audio_and_timing(source: Source, max_seconds: float) -> tuple[np.ndarray, int, float, float, float, float]:
    """(samples, sample_rate, audio_duration, audio_start - video_start, fps, declared video duration)."""
    try:
        with _open(source) as container:
            if not container.streams.video:
                raise InvalidVideoError("the file has no video stream")
            video = container.streams.video[0]
            fps = float(video.average_rate or video.guessed_rate or 0)
            if fps <= 0:
                raise InvalidVideoError("the video stream has no frame rate")
            video_duration = float(video.duration * video.time_base) if video.duration else float(container.duration or 0) / 1e6
            if video_duration > max_seconds:
                raise VideoTooLargeError(f"the video lasts {video_duration:.1f} s; the limit is {max_seconds:g} s")
            if not container.streams.audio:
                return np.zeros(0, np.float32), 0, float("nan"), float("nan"), fps, video_duration
            audio = container.streams.audio[0]
            rate = audio.codec_context.sample_rate
            offset = _stream_start(audio) - _stream_start(video)
            mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = [m.to_ndarray().reshape(-1) for frame in container.decode(audio) for m in mono.resample(frame)]
            samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            duration = float(audio.duration * audio.time_base) if audio.duration else len(samples) / rate
            return samples, rate, duration, offset, fps, video_duration
    except UserInputError:
        raise
    except Exception as exc:  # PyAV raises many kinds for garbage input
        raise InvalidVideoError(f"the video could not be decoded: {exc}") from exc


def iter_frames(source: Source) -> Iterator[np.ndarray]:
    """Video frames, (H, W, 3) RGB uint8, one at a time."""
    try:
        with _open(source) as container:
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")
    except Exception as exc:
        raise InvalidVideoError(f"the video could not be decoded: {exc}") from exc
