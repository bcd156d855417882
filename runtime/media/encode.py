"""H.264 + AAC in mp4 with PyAV, written as frames and speech arrive, never held as a list.

Two shapes of the same encoder: a regular mp4 file (moov first, for /generate), or a fragmented
MP4 stream (an init segment `ftyp`+`moov`, then `moof`+`mdat` fragments that each start on a
keyframe and carry the audio of the same span) for players that start while it downloads.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional

import av
import numpy as np

from .audio import Speech

AUDIO_SAMPLE_RATE = 48000  # AAC's native rate; speech is resampled to it once, here
_AUDIO_BLOCK = 8192  # samples handed to the AAC encoder at a time (it re-frames them to 1024)
_AAC_DELAY = 2048  # samples (48 kHz) the AAC encoder holds before their packet comes out: priming + a frame
# A stream's first fragment: short, so a player shows a frame after a few frames are encoded;
# the next ones double up to the regular length, each covering the time to encode the one after.
FIRST_FRAGMENT_SECONDS = 0.16


def fragment_lengths(fragment_frames: int, first_frames: int) -> Iterator[int]:
    """Frames in each fragment of a stream, forever: first_frames, doubling up to fragment_frames,
    then fragment_frames."""
    length = max(1, min(first_frames, fragment_frames))
    while True:
        yield length
        length = min(fragment_frames, 2 * length)


@dataclass(frozen=True)
class EncodeResult:
    path: Optional[Path]
    frames: int
    width: int
    height: int
    duration: float  # seconds of video (== audio)


class _Collector:
    """A write-only, unseekable file object that keeps what the muxer writes until taken."""

    def __init__(self):
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class Mp4Encoder:
    """Encode frames (H, W, 3) RGB uint8 and the speech that goes with them, incrementally.

    add_speech() takes the speech as it is synthesized (any sample rate, mono float32), add_frame()
    each video frame; close() pads or trims the audio to exactly frames / fps seconds, so audio
    and video end together (a stream encodes its audio 43 ms ahead of the frames: its speech must
    not outlast them, as the pipeline's never does). The AAC encoder's priming samples are trimmed
    by an edit list, so audio starts with the first frame.

    path given: a regular mp4 with the moov atom first (faststart). path None: a fragmented MP4
    whose bytes are returned by take() as they are ready; a fragment is cut at every keyframe,
    and x264 runs without lookahead, so a fragment leaves the encoder as the next one's first
    frame goes in. Keyframes are placed so that fragments last fragment_lengths(): the first
    FIRST_FRAGMENT_SECONDS, doubling up to fragment_frames (the GOP)."""

    def __init__(self, fps: int, *, path: Optional[Path] = None, fragment_frames: Optional[int] = None,
                 preset: str = "veryfast", crf: int = 20):
        if (path is None) == (fragment_frames is None):
            raise ValueError("give a path (regular mp4) or fragment_frames (fragmented stream), not both")
        self.fps = fps
        self.path = path
        self.fragment_frames = fragment_frames
        self._fragment_lengths = (fragment_lengths(fragment_frames, round(FIRST_FRAGMENT_SECONDS * fps))
                                  if fragment_frames is not None else None)
        self._next_keyframe = 0  # the frame that starts the next fragment
        # The muxer writes a video packet only once an audio packet at or after it is in: a stream's
        # audio is encoded the AAC delay ahead (speech there is known), so a fragment leaves as soon
        # as the next one's keyframe is in, not a frame later.
        self._audio_lead = _AAC_DELAY if fragment_frames is not None else 0
        self._preset, self._crf = preset, crf
        self._sink = _Collector() if path is None else None
        self._container = None
        self._video = None
        self._audio = None
        self._resampler: Optional[av.AudioResampler] = None
        self._speech_rate: Optional[int] = None
        self._pending_audio = np.zeros(0, np.float32)  # 48 kHz samples not yet encoded
        self._audio_written = 0  # 48 kHz samples handed to the AAC encoder
        self.frames = 0
        self._closed = False

    # -- input ------------------------------------------------------------------------------------

    def add_speech(self, speech: Speech) -> None:
        """Continue the soundtrack with speech (it must keep one sample rate for the whole stream)."""
        if self._speech_rate is None:
            self._speech_rate = speech.sample_rate
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_SAMPLE_RATE)
        elif speech.sample_rate != self._speech_rate:
            raise ValueError(f"speech changed sample rate: {self._speech_rate} -> {speech.sample_rate}")
        if len(speech.samples):
            self._resample(np.ascontiguousarray(speech.samples, dtype=np.float32))

    def add_frame(self, frame: np.ndarray) -> None:
        if self._video is None:
            self._open(frame.shape[1], frame.shape[0])
        # Converted here, not inside encode(), whose conversion drops the picture type.
        picture = av.VideoFrame.from_ndarray(frame[: self._video.height, : self._video.width], format="rgb24")
        picture = picture.reformat(format="yuv420p")
        picture.pts = self.frames
        if self._fragment_lengths is not None and self.frames == self._next_keyframe:
            picture.pict_type = av.video.frame.PictureType.I  # an IDR (closed GOP): the muxer cuts here
            self._next_keyframe += next(self._fragment_lengths)
        self._container.mux(self._video.encode(picture))
        self.frames += 1
        self._encode_audio(until=round(self.frames * AUDIO_SAMPLE_RATE / self.fps) + self._audio_lead)

    def take(self) -> bytes:
        """Fragmented stream only: the bytes written since the last call (the init segment comes
        with the first fragment)."""
        return self._sink.take() if self._sink is not None else b""

    def close(self) -> EncodeResult:
        """Flush everything; the fragmented stream's last bytes are then in take()."""
        if self._video is None:
            raise ValueError("no frames to encode")
        if not self._closed:
            self._closed = True
            self._container.mux(self._video.encode())
            if self._resampler is not None:
                self._collect(self._resampler.resample(None))
            self._encode_audio(until=round(self.frames * AUDIO_SAMPLE_RATE / self.fps), pad=True)
            self._container.mux(self._audio.encode())
            self._container.close()
        return EncodeResult(path=self.path, frames=self.frames, width=self._video.width, height=self._video.height,
                            duration=self.frames / self.fps)

    def abort(self) -> None:
        """Stop without finishing the file (cancelled work)."""
        if self._container is not None and not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # a half-written stream may refuse to close cleanly; it is discarded anyway
                pass

    # -- internals --------------------------------------------------------------------------------

    def _open(self, width: int, height: int) -> None:
        if self._sink is None:
            options = {"movflags": "+faststart"}
            target = str(self.path)
        else:
            # delay_moov: the init segment is written with the first fragment, once the AAC priming
            # is known, so its edit list trims it.
            options = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof", "flush_packets": "1"}
            target = self._sink
        self._container = av.open(target, mode="w", format="mp4", options=options)
        self._audio = self._container.add_stream("aac", rate=AUDIO_SAMPLE_RATE, layout="mono")
        self._audio.bit_rate = 96_000
        video = self._container.add_stream("libx264", rate=self.fps)
        video.width, video.height = width - width % 2, height - height % 2  # yuv420p needs even sides
        video.pix_fmt = "yuv420p"
        options = {"preset": self._preset, "crf": str(self._crf)}
        if self.fragment_frames is not None:
            gop = str(self.fragment_frames)
            options.update(g=gop, sc_threshold="0", tune="zerolatency")
        video.options = options
        video.codec_context.time_base = Fraction(1, self.fps)
        self._video = video

    def _resample(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = self._speech_rate
        self._collect(self._resampler.resample(frame))

    def _collect(self, frames) -> None:
        parts = [frame.to_ndarray().reshape(-1) for frame in frames]
        if parts:
            self._pending_audio = np.concatenate([self._pending_audio, *parts])

    def _encode_audio(self, until: int, pad: bool = False) -> None:
        """Hand the AAC encoder the soundtrack up to sample `until` (48 kHz): what is pending,
        and silence after it when pad (the speech ended before the video)."""
        wanted = until - self._audio_written
        if wanted <= 0:
            return
        take = min(wanted, len(self._pending_audio))
        if take < wanted and not pad:
            wanted = take
        if wanted <= 0:
            return
        block = np.zeros(wanted, np.float32)
        block[:take] = self._pending_audio[:take]
        self._pending_audio = self._pending_audio[take:]
        for start in range(0, wanted, _AUDIO_BLOCK):
            piece = block[start:start + _AUDIO_BLOCK]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="flt", layout="mono")
            frame.sample_rate = AUDIO_SAMPLE_RATE
            frame.pts = self._audio_written
            self._container.mux(self._audio.encode(frame))
            self._audio_written += len(piece)


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
    """Write frames (H, W, 3) RGB uint8 and the speech into a regular mp4 at `path`.

    The speech should last frames / fps (media.audio.pad_to_frames); it is padded or trimmed to it."""
    encoder = Mp4Encoder(fps, path=path, preset=preset, crf=crf)
    encoder.add_speech(speech)
    for frame in frames:
        encoder.add_frame(frame)
    if encoder.frames == 0:
        raise ValueError("no frames to encode")
    if expected_frames is not None and encoder.frames != expected_frames:
        encoder.abort()
        raise RuntimeError(f"the backend produced {encoder.frames} frames; {expected_frames} were expected")
    return encoder.close()
