"""The lip refiner: Wav2Lip re-draws the lower face of frames another backend made, from the speech.

Per batch of frames: the face box from our MediaPipe locator, tracked rather than detected on every
frame (tracking.FaceTracker; upstream used s3fd on each frame), padded downwards to take in the chin
as upstream's default pads do; then, on the device, the boxes cropped and resized to 96 px, the
network run with each frame's 16-frame mel window, and its lower face pasted back through a
feathered mask (crops.py), so that everything above the nose and outside the face box keeps the
backend's pixels exactly. Only the region of the frames that holds the batch's boxes travels to
the device and back.

The work runs on a thread of the refiner's own (and a CUDA stream of its own), so a stream's
frames are refined while the backend renders the next ones.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

from ...media.audio import Speech, resample
from ...media.landmarks import FaceLocator
from .checkpoint import find_checkpoint, load_wav2lip
from .crops import FACE_SIZE, crop_faces, feather_mask, paste_faces  # noqa: F401  (feather_mask re-exported)
from .mel import HOP, MEL_FRAMES_PER_SECOND, MEL_WINDOW_FRAMES, N_FFT, SAMPLE_RATE, mel_windows, melspectrogram
from .network import Wav2Lip
from .tracking import Box, FaceTracker, TrackingStats

log = logging.getLogger(__name__)

CHIN_PAD = 0.10  # box height added below the detected box (upstream pads 10 px at ~100 px faces)


def face_box(detected: Box, frame_shape: tuple[int, ...]) -> Box:
    """The crop Wav2Lip sees: the detected box padded downwards by CHIN_PAD, clipped to the frame."""
    x0, y0, x1, y1 = detected
    height, width = frame_shape[:2]
    return max(0, x0), max(0, y0), min(width, x1), min(height, int(round(y1 + CHIN_PAD * (y1 - y0))))


@dataclass
class RefineStats:
    """What a stream's refinement (or the refiner over its life) did, for logs, /health and benches."""

    frames: int = 0
    refined: int = 0  # frames with a face, re-drawn
    no_face: int = 0  # frames passed through unchanged: no face found in or near them
    tracking: TrackingStats = field(default_factory=TrackingStats)

    def add(self, other: "RefineStats") -> None:
        self.frames += other.frames
        self.refined += other.refined
        self.no_face += other.no_face
        self.tracking.add(other.tracking)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "refined": self.refined, "no_face": self.no_face,
                "detections": self.tracking.detections, "detection_hit_rate": self.tracking.hit_rate,
                "drift_frames": self.tracking.drift_frames}


class LipRefiner:
    """Wav2Lip over any backend's frames. Loads once; any number of sessions (streams) share it:
    their frames are refined one hand-over at a time on the refiner's worker thread."""

    name = "wav2lip"

    def __init__(
        self,
        network: Wav2Lip,
        device: str,
        locator: FaceLocator,
        *,
        checkpoint: str = "",
        batch_size: int = 32,
        detect_every: int = 8,
    ):
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.network = network.to(self.device, self.dtype, memory_format=memory_format).eval()
        self.memory_format = memory_format
        self.locator = locator
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.detect_every = detect_every
        self.totals = RefineStats()  # every session's, since load
        # One worker: the network and the trackers' detector calls never run concurrently.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lip-refiner")
        self._stream = None
        if self.device.type == "cuda":
            # the weights were copied on the default stream: done before the refiner's stream reads them
            torch.cuda.current_stream(self.device).synchronize()
            self._stream = torch.cuda.Stream(self.device)

    @classmethod
    def load(cls, models_dir: Path, device: str, locator: Optional[FaceLocator] = None, **options) -> "LipRefiner":
        """From MODELS_DIR/wav2lip (wav2lip_gan.pth, else wav2lip.pth); CheckpointError if neither loads."""
        path = find_checkpoint(Path(models_dir) / "wav2lip")
        return cls(load_wav2lip(path), device, locator or FaceLocator(), checkpoint=path.name, **options)

    def describe(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint, "device": self.device.type,
                "dtype": str(self.dtype).removeprefix("torch."), "batch_size": self.batch_size,
                "detect_every": self.detect_every, "since_start": self.totals.as_dict()}

    def submit(self, work, *args) -> Future:
        """Run work(*args) on the refiner's worker thread (in its CUDA stream)."""
        return self._worker.submit(self._in_stream, work, *args)

    def _in_stream(self, work, *args):
        if self._stream is None:
            return work(*args)
        with torch.cuda.stream(self._stream):
            return work(*args)

    @torch.inference_mode()
    def predict(self, faces: torch.Tensor, windows: np.ndarray) -> torch.Tensor:
        """faces (B, 3, 96, 96) RGB float 0-255 on the device, windows (B, 1, 80, 16) mel ->
        (B, 3, 96, 96) RGB float32 0-255 on the device."""
        bgr = faces.flip(1).to(self.dtype) / 255.0
        masked = bgr.clone()
        masked[:, :, FACE_SIZE // 2:] = 0  # upstream blanks the lower half: the network must draw it
        inputs = torch.cat((masked, bgr), dim=1).contiguous(memory_format=self.memory_format)
        mel = torch.from_numpy(windows).to(self.device, self.dtype)
        return self.network(mel, inputs).float().flip(1) * 255.0

    def refine_batch(self, frames: list[np.ndarray], windows: np.ndarray,
                     boxes: list[Optional[Box]]) -> list[np.ndarray]:
        """frames (H, W, 3) RGB uint8 with their mel windows (len(frames), 1, 80, 16) and face boxes
        (padded, in frame pixels; None: leave the frame) -> the refined frames (new arrays)."""
        out = list(frames)
        by_shape: dict[tuple, list[int]] = {}
        for index, box in enumerate(boxes):
            if box is not None:
                by_shape.setdefault(frames[index].shape, []).append(index)
        for indices in by_shape.values():
            corners = np.array([boxes[i] for i in indices])
            x0, y0 = corners[:, :2].min(axis=0)
            x1, y1 = corners[:, 2:].max(axis=0)
            regions = np.stack([frames[i][y0:y1, x0:x1] for i in indices])  # one upload for the batch
            redrawn = self.redraw(regions, corners - np.array([x0, y0, x0, y0]), windows[indices])
            for k, i in enumerate(indices):
                out[i] = frames[i].copy()
                out[i][y0:y1, x0:x1] = redrawn[k]
        return out

    @torch.inference_mode()
    def redraw(self, regions: np.ndarray, boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """On the device: regions (N, h, w, 3) RGB uint8 of frames, the face box of each (N, 4) in
        region pixels, their mel windows -> the regions with the network's lower faces pasted in."""
        region = torch.from_numpy(regions).to(self.device).permute(0, 3, 1, 2).float()
        in_region = torch.from_numpy(boxes.astype(np.float32)).to(self.device)
        drawn = self.predict(crop_faces(region, in_region), windows)
        return paste_faces(region, drawn, in_region).cpu().numpy()

    def session(self, fps: float, stats: Optional[RefineStats] = None) -> "RefineSession":
        """A stream of frames and speech arriving piece by piece (one clip or one conversation)."""
        return RefineSession(self, fps, stats)

    def refine(self, frames: Iterable[np.ndarray], speech: Speech, fps: float,
               stats: Optional[RefineStats] = None) -> Iterator[np.ndarray]:
        """Refined frames, lazily, batch by batch: frames (H, W, 3) RGB uint8 of a whole clip, the
        speech they go with (any rate), fps. Frames past the speech's end get its last mel window, as
        upstream does."""
        session = self.session(fps, stats)
        session.add_speech(speech)
        batch: list[np.ndarray] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == self.batch_size:
                yield from session.add_frames(batch)
                batch = []
        yield from session.add_frames(batch)
        yield from session.finish()


class RefineSession:
    """Frames and speech of one stream, arriving piece by piece, refined as soon as the speech for a
    frame's mel window (0.2 s from the frame's start, plus the STFT's half window) has arrived; frames
    come out in order. Speech is kept from a little before the oldest frame still waiting, so memory
    stays bounded however long the stream runs; mel frames are those the whole clip would give
    (speech resampled to 16 kHz piece by piece may differ at the seams by the resampler's filter).

    The frames and speech one call hands over are refined on the refiner's worker (mel, tracking,
    network, paste): add_frames() returns what is done, waiting only for what earlier calls handed
    over, so frames are refined while the caller renders the next; finish() waits for all.
    """

    def __init__(self, refiner: LipRefiner, fps: float, stats: Optional[RefineStats] = None):
        self.refiner = refiner
        self.fps = fps
        self.stats = stats if stats is not None else RefineStats()
        self.tracker = FaceTracker(refiner.locator, detect_every=refiner.detect_every, stats=self.stats.tracking)
        self._samples = np.zeros(0, np.float32)  # 16 kHz speech from global sample _origin on
        self._origin = 0  # a multiple of the mel hop, so buffer mel frames line up with the clip's
        self._pending: list[np.ndarray] = []  # frames waiting for their speech
        self._next_frame = 0  # global index of _pending[0]
        self._in_flight: deque[tuple[Future, int]] = deque()  # (frames handed over, by which add_frames call)
        self._calls = 0

    def add_speech(self, speech: Speech) -> None:
        self._samples = np.concatenate([self._samples, resample(speech, SAMPLE_RATE).samples.astype(np.float32)])

    def add_frames(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Queue frames; returns refined frames in order: those already done, and at least
        every frame handed over before this call."""
        self._calls += 1
        self._pending.extend(frames)
        heard = self._origin + len(self._samples)
        ready = 0
        while ready < len(self._pending):
            if self._last_mel(self._next_frame + ready) * HOP + N_FFT // 2 > heard:
                break
            ready += 1
        self._hand_over(ready, final=False)
        return self._collect(wait_before=self._calls)

    def finish(self) -> list[np.ndarray]:
        """The frames still waiting (the clip's end: their windows clamp to its last mel frames)."""
        self._hand_over(len(self._pending), final=True)
        out = self._collect(wait_before=self._calls + 1)
        if self.stats.no_face:
            log.warning("lip refiner: no face on %d of %d frames; those kept the backend's pixels",
                        self.stats.no_face, self.stats.frames)
        return out

    def _last_mel(self, frame_index: int) -> int:
        return int(frame_index * (MEL_FRAMES_PER_SECOND / self.fps)) + MEL_WINDOW_FRAMES - 1

    def _hand_over(self, count: int, final: bool) -> None:
        """Start refining the first `count` waiting frames on the worker."""
        if count == 0:
            return
        frames, self._pending = self._pending[:count], self._pending[count:]
        samples = self._samples  # add_speech and _forget_heard_speech replace the buffer, never write it
        if not final:  # the mel frames these windows need, not the whole buffer's
            needed = self._last_mel(self._next_frame + count - 1) * HOP + N_FFT // 2 + 1 - self._origin
            samples = samples[:min(len(samples), needed)]
        future = self.refiner.submit(self._refine, frames, self._next_frame, samples, self._origin, final)
        self._in_flight.append((future, self._calls))
        self._next_frame += count
        self._forget_heard_speech()

    def _refine(self, frames: list[np.ndarray], first: int, samples: np.ndarray, origin: int,
                final: bool) -> list[np.ndarray]:
        """On the worker: the mel windows of frames first.. (16 kHz samples from stream sample `origin`
        on), then batch by batch: track the faces, redraw, count what happened."""
        mel = melspectrogram(samples)  # the buffer's mel frames = the clip's from origin / HOP on
        windows = mel_windows(mel, self.fps, range(first, first + len(frames)), mel_offset=origin // HOP, clamp=final)
        out: list[np.ndarray] = []
        for start in range(0, len(frames), self.refiner.batch_size):
            batch = frames[start:start + self.refiner.batch_size]
            before = dataclasses.replace(self.stats.tracking)
            boxes = [None if box is None else face_box(box, frame.shape)
                     for box, frame in zip(self.tracker.track(batch), batch)]
            out += self.refiner.refine_batch(batch, windows[start:start + len(batch)], boxes)
            found = sum(box is not None for box in boxes)
            done = RefineStats(len(batch), found, len(batch) - found, self.stats.tracking.since(before))
            self.stats.frames, self.stats.refined, self.stats.no_face = (
                self.stats.frames + done.frames, self.stats.refined + done.refined, self.stats.no_face + done.no_face)
            self.refiner.totals.add(done)
        return out

    def _collect(self, wait_before: int) -> list[np.ndarray]:
        """Refined frames of the hand-overs done, in order, waiting for those of calls before `wait_before`."""
        out: list[np.ndarray] = []
        while self._in_flight and (self._in_flight[0][1] < wait_before or self._in_flight[0][0].done()):
            out.extend(self._in_flight.popleft()[0].result())
        return out

    def _forget_heard_speech(self) -> None:
        """Drop speech before the next frame's window, keeping a few mel hops for the STFT's reach."""
        first_mel = int(self._next_frame * (MEL_FRAMES_PER_SECOND / self.fps))
        keep_from = max(0, (first_mel - 4) * HOP)
        if keep_from > self._origin:
            self._samples = self._samples[keep_from - self._origin:]
            self._origin = keep_from
