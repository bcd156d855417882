"""H.264 + AAC in mp4 with PyAV: frames are encoded as they arrive, never held as a list."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from .audio import Speech

AUDIO_SAMPLE_RATE = 48000  # AAC's native rate; speech is resampled to it once, here


@dataclass(frozen=True)
class EncodeResult:
    path: Path
    frames: int
    width: int
    height: int
    duration: float  # seconds of video (== audio)


def encode_mp4(
    frames: Iterable[np.ndarray],
    speech: Speech,
    fps: int,
    path: Path,
    *,
    preset: str = "veryfast",
    crf: int = 20,
    expected_frames: int | None = None,
) -> EncodeResult:
    """Write frames (H, W, 3) RGB uint8 and the speech into an mp4 at `path`.

    The speech must already last exactly frames / fps (media.audio.pad_to_frames). The AAC
    encoder's priming samples are trimmed by an edit list, so audio starts with the first frame;
    the moov atom goes first (faststart) so players start before the download ends."""
    from .audio import resample

    audio = resample(speech, AUDIO_SAMPLE_RATE).samples
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = None
        audio_stream = container.add_stream("aac", rate=AUDIO_SAMPLE_RATE, layout="mono")
        audio_stream.bit_rate = 96_000
        count = 0
        for frame in frames:
            if video is None:
                height, width = frame.shape[:2]
                video = container.add_stream("libx264", rate=fps)
                video.width, video.height = width - width % 2, height - height % 2  # yuv420p needs even sides
                video.pix_fmt = "yuv420p"
                video.options = {"preset": preset, "crf": str(crf)}
                video.codec_context.time_base = Fraction(1, fps)
            picture = av.VideoFrame.from_ndarray(frame[: video.height, : video.width], format="rgb24")
            picture.pts = count
            container.mux(video.encode(picture))
            count += 1
        if video is None:
            raise ValueError("no frames to encode")
        container.mux(video.encode())
        if expected_frames is not None and count != expected_frames:
            raise RuntimeError(f"the backend produced {count} frames; {expected_frames} were expected")
        _write_audio(container, audio_stream, audio)
        return EncodeResult(path=path, frames=count, width=video.width, height=video.height, duration=count / fps)


def _write_audio(container, stream, samples: np.ndarray) -> None:
    chunk = 1024 * 8
    for start in range(0, len(samples), chunk):
        piece = samples[start : start + chunk].astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
