"""Speech waveforms: the value every TTS engine returns and every backend consumes."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from ..errors import AudioTooLargeError, InvalidAudioError


@dataclass(frozen=True)
class Speech:
    """Mono speech. samples: float32 (n,) in [-1, 1]; sample_rate in Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self.samples) / self.sample_rate


def frame_count(duration_s: float, fps: int) -> int:
    """Video frames for a clip: enough to cover the audio, at least one."""
    return max(1, math.ceil(round(duration_s * fps, 6)))


def pad_to_frames(speech: Speech, fps: int) -> Speech:
    """Pad with silence so audio lasts exactly frame_count(duration, fps) / fps seconds."""
    target = round(frame_count(speech.duration, fps) * speech.sample_rate / fps)
    if target <= len(speech.samples):
        return Speech(speech.samples[:target], speech.sample_rate)
    padded = np.zeros(target, dtype=np.float32)
    padded[: len(speech.samples)] = speech.samples
    return Speech(padded, speech.sample_rate)


def resample(speech: Speech, sample_rate: int) -> Speech:
    """Band-limited resampling (polyphase) to sample_rate Hz."""
    if speech.sample_rate == sample_rate:
        return speech
    from scipy.signal import resample_poly

    divisor = math.gcd(speech.sample_rate, sample_rate)
    samples = resample_poly(speech.samples, sample_rate // divisor, speech.sample_rate // divisor)
    return Speech(samples.astype(np.float32), sample_rate)


def decode_audio(data: bytes, *, max_seconds: float, max_bytes: int) -> Speech:
    """Any audio file ffmpeg reads (wav, mp3, ogg, flac...) -> mono float32 at its own rate.

    Raises InvalidAudioError / AudioTooLargeError naming the problem."""
    import av

    if len(data) > max_bytes:
        raise AudioTooLargeError(f"audio is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise InvalidAudioError("audio is empty")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudioError("the file has no audio stream")
            stream = container.streams.audio[0]
            sample_rate = stream.codec_context.sample_rate or stream.rate
            to_mono = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks, total = [], 0
            max_samples = int(max_seconds * sample_rate)
            for frame in container.decode(stream):
                for mono in to_mono.resample(frame):
                    chunk = mono.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += len(chunk)
                if total > max_samples:
                    raise AudioTooLargeError(f"audio is longer than the limit of {max_seconds:g} s")
    except (InvalidAudioError, AudioTooLargeError):
        raise
    except Exception as exc:  # PyAV raises many kinds for garbage input
        # FFmpeg's own reason without PyAV's errno and file name ('<none>' for bytes in memory).
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InvalidAudioError(f"could not decode the audio: {reason}") from exc
    if total == 0 or not sample_rate:
        raise InvalidAudioError("the audio holds no samples")
    samples = np.clip(np.concatenate(chunks).astype(np.float32), -1.0, 1.0)
    return Speech(samples, int(sample_rate))


def wav_bytes(speech: Speech) -> bytes:
    """16-bit PCM wav of the speech (for tests, clients and debugging)."""
    import wave

    pcm = (np.clip(speech.samples, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(speech.sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
