"""The mapping net's input for speech that arrives piece by piece (a streaming session), with
the motion continuous across pieces.

Run per piece on its own, SadTalker's motion restarts: frame 0 takes the source pose, the pose
latents and blinks repeat, the smoothing and the mapping net's 27-frame windows end at the
piece's edges. Here the stream carries, from one piece to the next, the speech before it (the
mel windows of its first frames hear it, aligned to the whole stream's mel columns), the random
generators (latents and blinks go on), the last poses (smoothed together with the new ones, and
the new piece's first frames eased from what was already shown) and the last coefficients (the
windows' past). Only the future is missing at a piece's end: each frame's windows reach 13
frames (0.5 s) ahead and its mel window 0.12 s, and there they are clamped or silent.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from .audio_features import AUDIO, speech_frame_windows
from .coefficients import (PIPELINE, MotionRequest, blink_ratios, check_pose_style, coefficient_windows,
                           driving_coefficients, predict_motion, smooth_pose)

if TYPE_CHECKING:
    from .networks import SadTalkerNetworks

SAMPLES_PER_FRAME = AUDIO.sample_rate // AUDIO.fps  # 640 samples of 16 kHz speech per 25 fps frame
MEL_COLUMNS_CYCLE = 5  # every 5 frames (3.2 mel columns each) a frame starts on a whole mel column
EASE_FRAMES = PIPELINE.pose_smoothing_window  # frames over which a piece's pose joins the shown one


class DrivingStream:
    """Speech in, consecutive pieces of (frames, C, 27) mapping-net windows out, for one portrait.

    Motion is computed at the networks' 25 fps and resampled to the stream's fps, as
    `SadTalkerEngine.driving_windows` does for a whole clip. Not thread-safe (one per session)."""

    def __init__(self, nets: "SadTalkerNetworks", device: torch.device, channels: int, source_coeffs: np.ndarray,
                 fps: float, request: MotionRequest):
        """nets: the engine's networks for the portrait's render size; channels: the mapping net's
        coefficient channels; source_coeffs: the portrait's prepared 3DMM coefficients."""
        self.nets = nets
        check_pose_style(self.nets.audio2pose, request)
        self.device = device
        self.channels = channels
        self.source_coeffs = source_coeffs
        self.fps, self.request = fps, request
        self._source = torch.from_numpy(source_coeffs.astype(np.float32)).to(device)
        self._blink_rng = np.random.default_rng(request.seed)
        self._latents = torch.Generator().manual_seed(request.seed)
        self._speech = np.zeros(0, np.float32)  # 16 kHz speech from sample _speech_start of the stream on
        self._speech_start = 0
        self._motion_frames = 0  # 25 fps frames whose motion is computed
        self._raw_pose = np.zeros((0, 6), np.float32)  # the last unsmoothed poses, smoothed with the next
        self._shown_pose: np.ndarray | None = None  # (6,) the last frame's smoothed pose
        self._coeffs = np.zeros((0, len(source_coeffs)), np.float32)  # the last rows, the windows' past
        self._windows = np.zeros((0, self.channels * (2 * PIPELINE.semantic_radius + 1)), np.float32)
        self._windows_start = 0  # 25 fps frame of _windows[0]
        self.frames = 0  # output frames handed out so far

    def windows(self, samples_16k: np.ndarray, first_frame: int, frame_total: int) -> np.ndarray:
        """The next piece: its speech at 16 kHz (spanning exactly its frames) -> windows
        (frame_total, C, 27) float32 for output frames first_frame.. (which must follow the last
        piece's)."""
        if first_frame != self.frames:
            raise ValueError(f"the stream is at frame {self.frames}; a piece from frame {first_frame} was given")
        self._speech = np.concatenate([self._speech, np.asarray(samples_16k, np.float32)])
        end = self.frames + frame_total
        if frame_total == 0:
            return np.zeros((0, self.channels, 2 * PIPELINE.semantic_radius + 1), np.float32)
        # The 25 fps frames the piece's last output frame lies on or after.
        needed = math.floor(round((end - 1) * AUDIO.fps / self.fps, 6)) + 1
        if needed > self._motion_frames:
            self._advance(needed)
        positions = np.arange(self.frames, end) * (AUDIO.fps / self.fps)
        flat = _interpolate(self._windows, positions - self._windows_start)
        self.frames = end
        self._forget(math.floor(end * AUDIO.fps / self.fps) - 1)
        return flat.reshape(frame_total, self.channels, -1)

    def _advance(self, stop: int) -> None:
        """Motion and windows for 25 fps frames _motion_frames..stop-1."""
        start = self._motion_frames
        count = stop - start
        mels = self._mel_windows(start, stop)
        blink = torch.from_numpy(blink_ratios(count, self._blink_rng)).to(self.device)
        with torch.backends.cudnn.flags(enabled=True, benchmark=False):  # piece lengths vary: no autotuning
            expression, raw_pose = predict_motion(self.nets.audio2exp, self.nets.audio2pose,
                                                  torch.from_numpy(mels).to(self.device), self._source, blink,
                                                  self.request.pose_style, self._latents, starts_clip=start == 0)
        coeffs = driving_coefficients(self.source_coeffs, expression, self._continued_pose(raw_pose), self.request)
        history = np.concatenate([self._coeffs, coeffs])
        windows = coefficient_windows(history, self.channels)[len(self._coeffs):]
        self._coeffs = history[-PIPELINE.semantic_radius:]
        self._windows = np.concatenate([self._windows, windows.reshape(count, -1)])
        self._motion_frames = stop

    def _mel_windows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, 80, 16) mel windows of frames start..stop-1, computed from a few frames of
        speech before them, so each column is the one a whole-stream spectrogram has there."""
        context = min(start, MEL_COLUMNS_CYCLE + start % MEL_COLUMNS_CYCLE)
        first = (start - context) * SAMPLES_PER_FRAME - self._speech_start
        speech = self._speech[first:stop * SAMPLES_PER_FRAME - self._speech_start]
        return speech_frame_windows(speech, stop - start + context)[context:]

    def _continued_pose(self, raw_pose: np.ndarray) -> np.ndarray:
        """The new frames' unsmoothed poses (T, 6) -> smoothed, continuing the ones shown: smoothed
        together with the last unsmoothed ones, then eased over EASE_FRAMES from where the shown
        pose ended (the last shown frame was smoothed without the new ones)."""
        kept = len(self._raw_pose)
        joined = np.concatenate([self._raw_pose, raw_pose])
        smoothed = smooth_pose(joined)
        pose = smoothed[kept:].astype(np.float32)
        if self._shown_pose is not None and kept:
            offset = smoothed[kept - 1] - self._shown_pose  # the last shown frame, smoothed again, minus as shown
            ramp = np.clip(np.arange(len(pose)) / EASE_FRAMES, 0, 1)
            pose -= offset[None] * (1 - ramp * ramp * (3 - 2 * ramp))[:, None]
        self._raw_pose = joined[-PIPELINE.pose_smoothing_window:]
        self._shown_pose = pose[-1].copy()
        return pose

    def _forget(self, frame: int) -> None:
        """Drop windows before 25 fps frame `frame` and speech older than the mel context needs."""
        drop = max(0, min(frame - self._windows_start, len(self._windows) - 1))
        self._windows = self._windows[drop:]
        self._windows_start += drop
        keep_from = max(0, (self._motion_frames - 2 * MEL_COLUMNS_CYCLE) * SAMPLES_PER_FRAME)
        cut = max(0, keep_from - self._speech_start)
        self._speech = self._speech[cut:]
        self._speech_start += cut


def _interpolate(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of rows (N, D) at fractional row positions (clamped to [0, N-1])."""
    positions = np.clip(positions, 0, len(rows) - 1)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, len(rows) - 1)
    weight = (positions - below)[:, None]
    return (rows[below] * (1 - weight) + rows[above] * weight).astype(np.float32)
