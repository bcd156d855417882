"""The lip refiner: Wav2Lip re-draws the lower face of frames another backend made, from the speech.

Per batch of frames: the face box from our MediaPipe locator (on every few frames, interpolated
between; upstream used s3fd on each frame), the box padded downwards to take in the chin as
upstream's default pads do, cropped and resized to 96 px, the network run on the device with each
frame's 16-frame mel window, and its lower face pasted back through a feathered mask, so that
everything above the nose and outside the face box keeps the backend's pixels exactly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np
import torch

from ...media.audio import Speech, resample
from ...media.landmarks import FaceLocator
from .checkpoint import find_checkpoint, load_wav2lip
from .mel import HOP, MEL_FRAMES_PER_SECOND, MEL_WINDOW_FRAMES, N_FFT, SAMPLE_RATE, mel_windows, melspectrogram
from .network import Wav2Lip

log = logging.getLogger(__name__)

FACE_SIZE = 96  # px, the network's input and output side
CHIN_PAD = 0.10  # box height added below the detected box (upstream pads 10 px at ~100 px faces)
# The mask, as fractions of the face box: 0 above MASK_TOP, ramping to 1 by MASK_FULL (mouth and
# chin), ramping back to 0 over the outer EDGE_FEATHER on the sides and the bottom.
MASK_TOP, MASK_FULL = 0.52, 0.64
EDGE_FEATHER = 0.12

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@lru_cache(maxsize=64)
def feather_mask(height: int, width: int) -> np.ndarray:
    """(height, width, 1) float32 weights of the refined face inside a face box of that size: exactly
    0 above MASK_TOP of its height and on its border, 1 over the mouth and chin, smooth between."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)  # first and last row and column: exactly 0
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)
    vertical = _smoothstep((rows - MASK_TOP) / (MASK_FULL - MASK_TOP)) * _smoothstep((1 - rows) / (EDGE_FEATHER / 2))
    horizontal = _smoothstep(cols / EDGE_FEATHER) * _smoothstep((1 - cols) / EDGE_FEATHER)
    return (vertical[:, None] * horizontal[None, :])[:, :, None]


def face_box(detected: Box, frame_shape: tuple[int, ...]) -> Box:
    """The crop Wav2Lip sees: the detected box padded downwards by CHIN_PAD, clipped to the frame."""
    x0, y0, x1, y1 = detected
    height, width = frame_shape[:2]
    return max(0, x0), max(0, y0), min(width, x1), min(height, int(round(y1 + CHIN_PAD * (y1 - y0))))


@dataclass
class RefineStats:
    """What a refine() call did, for logs and /health."""

    frames: int = 0
    refined: int = 0  # frames with a face, re-drawn
    no_face: int = 0  # frames passed through unchanged: no face found in or near them


class LipRefiner:
    """Wav2Lip over any backend's frames. Loads once; refine() runs per clip, not thread-safe."""

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

    @classmethod
    def load(cls, models_dir: Path, device: str, locator: Optional[FaceLocator] = None, **options) -> "LipRefiner":
        """From MODELS_DIR/wav2lip (wav2lip_gan.pth, else wav2lip.pth); CheckpointError if neither loads."""
        path = find_checkpoint(Path(models_dir) / "wav2lip")
        return cls(load_wav2lip(path), device, locator or FaceLocator(), checkpoint=path.name, **options)

    def describe(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint, "device": self.device.type,
                "dtype": str(self.dtype).removeprefix("torch."), "batch_size": self.batch_size}

    @torch.inference_mode()
    def predict(self, faces: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """faces (B, 96, 96, 3) RGB uint8, windows (B, 1, 80, 16) mel -> (B, 96, 96, 3) RGB float32 0-255."""
        bgr = torch.from_numpy(np.ascontiguousarray(faces[..., ::-1])).to(self.device)
        bgr = bgr.permute(0, 3, 1, 2).to(self.dtype) / 255.0
        masked = bgr.clone()
        masked[:, :, FACE_SIZE // 2:] = 0  # upstream blanks the lower half: the network must draw it
        inputs = torch.cat((masked, bgr), dim=1).contiguous(memory_format=self.memory_format)
        mel = torch.from_numpy(windows).to(self.device, self.dtype)
        out = self.network(mel, inputs).float() * 255.0
        return out.permute(0, 2, 3, 1).flip(-1).cpu().numpy()

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

    def refine_batch(self, frames: list[np.ndarray], windows: np.ndarray,
                     previous: Optional[Box], stats: RefineStats) -> tuple[list[np.ndarray], Optional[Box]]:
        """frames with their mel windows (len(frames), 1, 80, 16) -> the refined frames, and the last
        face box (for the next batch's tracking)."""
        boxes = self.track_boxes(frames, previous)
        stats.frames += len(frames)
        with_face = [i for i, box in enumerate(boxes) if box is not None]
        stats.refined += len(with_face)
        stats.no_face += len(frames) - len(with_face)
        if not with_face:
            return frames, previous
        crops = np.stack([
            cv2.resize(frames[i][boxes[i][1]:boxes[i][3], boxes[i][0]:boxes[i][2]], (FACE_SIZE, FACE_SIZE))
            for i in with_face
        ])
        predicted = self.predict(crops, windows[with_face])
        out = list(frames)
        for face, i in zip(predicted, with_face):
            out[i] = paste(frames[i], face, boxes[i])
        return out, boxes[with_face[-1]]

    def track_boxes(self, frames: list[np.ndarray], previous: Optional[Box]) -> list[Optional[Box]]:
        """A face box per frame: detected on every `detect_every`-th frame and the last, linearly
        interpolated between; frames before the first detection take `previous` (the last batch's)."""
        probes = sorted(set(range(0, len(frames), self.detect_every)) | {len(frames) - 1})
        found: dict[int, np.ndarray] = {}
        for index in probes:
            try:
                found[index] = np.array(face_box(self.locator.detect_box(frames[index]), frames[index].shape), float)
            except Exception:  # NoFaceError, or a face too small: keep the neighbours' boxes
                continue
        if not found:
            return [previous] * len(frames)
        known = sorted(found)
        boxes: list[Optional[Box]] = []
        for index in range(len(frames)):
            if index <= known[0]:
                box = found[known[0]] if previous is None else None
                if box is None:  # between the last batch's box and this batch's first detection
                    weight = (index + 1) / (known[0] + 1)
                    box = (1 - weight) * np.array(previous, float) + weight * found[known[0]]
            elif index >= known[-1]:
                box = found[known[-1]]
            else:
                after = next(k for k in known if k >= index)
                before = max(k for k in known if k <= index)
                weight = 0.0 if after == before else (index - before) / (after - before)
                box = (1 - weight) * found[before] + weight * found[after]
            boxes.append(tuple(int(round(v)) for v in box))
        return boxes


class RefineSession:
    """Frames and speech of one stream, arriving piece by piece, refined as soon as the speech for a
    frame's mel window (0.2 s from the frame's start, plus the STFT's half window) has arrived; frames
    come out in order. Speech is kept from a little before the oldest frame still waiting, so memory
    stays bounded however long the stream runs; mel frames are those the whole clip would give
    (speech resampled to 16 kHz piece by piece may differ at the seams by the resampler's filter).
    """

    def __init__(self, refiner: LipRefiner, fps: float, stats: Optional[RefineStats] = None):
        self.refiner = refiner
        self.fps = fps
        self.stats = stats if stats is not None else RefineStats()
        self._samples = np.zeros(0, np.float32)  # 16 kHz speech from global sample _origin on
        self._origin = 0  # a multiple of the mel hop, so buffer mel frames line up with the clip's
        self._pending: list[np.ndarray] = []  # frames waiting for their speech
        self._next_frame = 0  # global index of _pending[0]
        self._previous_box: Optional[Box] = None

    def add_speech(self, speech: Speech) -> None:
        self._samples = np.concatenate([self._samples, resample(speech, SAMPLE_RATE).samples.astype(np.float32)])

    def add_frames(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Queue frames; returns those whose speech has arrived, refined, in order."""
        self._pending.extend(frames)
        heard = self._origin + len(self._samples)
        ready = 0
        while ready < len(self._pending):
            last_mel = int((self._next_frame + ready) * (MEL_FRAMES_PER_SECOND / self.fps)) + MEL_WINDOW_FRAMES - 1
            if last_mel * HOP + N_FFT // 2 > heard:
                break
            ready += 1
        return self._refine(ready, final=False)

    def finish(self) -> list[np.ndarray]:
        """The frames still waiting (the clip's end: their windows clamp to its last mel frames)."""
        return self._refine(len(self._pending), final=True)

    def _refine(self, count: int, final: bool) -> list[np.ndarray]:
        if count == 0:
            return []
        frames, self._pending = self._pending[:count], self._pending[count:]
        first = self._next_frame
        indices = list(range(first, first + count))
        mel = melspectrogram(self._samples)  # this buffer's mel frames = the clip's from _origin / HOP on
        offset = self._origin // HOP
        if final:
            windows = mel_windows(mel, self.fps, [i for i in indices], mel_offset=offset)
        else:
            windows = mel_windows(mel, self.fps, indices, mel_offset=offset, clamp=False)
        out: list[np.ndarray] = []
        for start in range(0, count, self.refiner.batch_size):
            stop = min(count, start + self.refiner.batch_size)
            refined, self._previous_box = self.refiner.refine_batch(
                frames[start:stop], windows[start:stop], self._previous_box, self.stats)
            out.extend(refined)
        self._next_frame += count
        self._forget_heard_speech()
        if final and self.stats.no_face:
            log.warning("lip refiner: no face on %d of %d frames; those kept the backend's pixels",
                        self.stats.no_face, self.stats.frames)
        return out

    def _forget_heard_speech(self) -> None:
        """Drop speech before the next frame's window, keeping a few mel hops for the STFT's reach."""
        first_mel = int(self._next_frame * (MEL_FRAMES_PER_SECOND / self.fps))
        keep_from = max(0, (first_mel - 4) * HOP)
        if keep_from > self._origin:
            self._samples = self._samples[keep_from - self._origin:]
            self._origin = keep_from


def paste(frame: np.ndarray, face: np.ndarray, box: Box) -> np.ndarray:
    """frame (H, W, 3) uint8 with `face` (96, 96, 3) float 0-255 resized into `box` through the
    feathered mask; pixels where the mask is 0 are returned unchanged."""
    x0, y0, x1, y1 = box
    region = frame[y0:y1, x0:x1].astype(np.float32)
    resized = cv2.resize(face, (x1 - x0, y1 - y0))
    mask = feather_mask(y1 - y0, x1 - x0)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(region + mask * (resized - region)), 0, 255).astype(np.uint8)
    return out
