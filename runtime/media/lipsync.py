"""Lip-sync judge: does the mouth that MediaPipe sees open and close with the sound?

For every video frame: the inner-lip opening (face-mesh points 13-14 over face height) and the
audio's loudness over that frame's span. Their Spearman rank correlation, at lags of a few frames,
says whether the lips follow the speech and whether they are early or late. Used by the tests and
benchmarks of every backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from . import landmarks as lm
from .landmarks import FaceLocator, square_around


@dataclass(frozen=True)
class LipSyncReport:
    frames: int
    fps: float
    face_frames: int  # frames on which the face mesh was found
    lip_opening: np.ndarray  # (frames,) inner-lip gap / face height; nan where no face
    loudness_db: np.ndarray  # (frames,) RMS level of each frame's audio, dB
    correlations: dict[int, float]  # lag in frames (positive: lips move after the sound) -> Spearman rho
    video_duration: float
    audio_duration: float

    @property
    def best_lag(self) -> int:
        return max(self.correlations, key=lambda lag: self.correlations[lag])

    @property
    def best_correlation(self) -> float:
        return self.correlations[self.best_lag]

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "face_frames": self.face_frames,
            "best_lag": self.best_lag,
            "best_correlation": round(self.best_correlation, 3),
            "correlation_at_0": round(self.correlations.get(0, float("nan")), 3),
            "video_duration": round(self.video_duration, 3),
            "audio_duration": round(self.audio_duration, 3),
        }


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (RGB uint8) and the frame rate of an mp4's first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate)


def read_audio(path: Path) -> tuple[np.ndarray, int, float]:
    """Mono float32 samples, sample rate and the stream's declared duration (s) of an mp4's audio."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else float("nan")
        mono = av.AudioResampler(format="flt", layout="mono", rate=stream.codec_context.sample_rate)
        chunks = [m.to_ndarray().reshape(-1) for frame in container.decode(stream) for m in mono.resample(frame)]
        return np.concatenate(chunks), stream.codec_context.sample_rate, duration


def video_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def lip_openings(frames: list[np.ndarray], locator: FaceLocator) -> np.ndarray:
    """Inner-lip gap over face height on each frame (nan where no face), tracking the face as video."""
    import mediapipe as mp

    box = locator.detect_box(frames[0])
    x0, y0, x1, y1 = square_around(box, frames[0].shape, scale=2.2)
    openings = np.full(len(frames), np.nan)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False) as mesh:
        for index, frame in enumerate(frames):
            result = mesh.process(np.ascontiguousarray(frame[y0:y1, x0:x1]))
            if not result.multi_face_landmarks:
                continue
            points = result.multi_face_landmarks[0].landmark
            xy = np.array([(points[i].x * (x1 - x0), points[i].y * (y1 - y0)) for i in
                           (lm.UPPER_LIP_MID, lm.LOWER_LIP_MID, lm.FOREHEAD_TOP, lm.CHIN_BOTTOM)])
            openings[index] = np.linalg.norm(xy[0] - xy[1]) / np.linalg.norm(xy[2] - xy[3])
    return openings


def frame_loudness_db(samples: np.ndarray, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """RMS level (dB) of the audio spanning each video frame."""
    per_frame = sample_rate / fps
    levels = np.empty(frames)
    for index in range(frames):
        span = samples[int(index * per_frame) : int((index + 1) * per_frame)]
        levels[index] = 10 * np.log10(np.mean(span.astype(np.float64) ** 2) + 1e-10) if len(span) else -100.0
    return levels


def lag_correlations(openings: np.ndarray, loudness_db: np.ndarray, max_lag: int) -> dict[int, float]:
    """Spearman rho of lip opening (frames,) against loudness (frames,) at lags -max_lag..max_lag
    frames (positive: lips move after the sound); nan where fewer than 4 frames have a face."""
    from scipy.stats import spearmanr  # here, not at the top: importing scipy.stats costs each server start ~0.5 s

    frames = len(openings)
    correlations = {}
    for lag in range(-max_lag, max_lag + 1):
        if abs(lag) >= frames:  # a clip shorter than the lag has nothing to compare
            correlations[lag] = float("nan")
            continue
        # lips at frame t against sound at frame t - lag
        lips = openings[max(lag, 0) : frames + min(lag, 0)]
        sound = loudness_db[max(-lag, 0) : frames - max(lag, 0)]
        valid = ~np.isnan(lips)
        rho = spearmanr(lips[valid], sound[valid]).statistic if valid.sum() > 3 else float("nan")
        correlations[lag] = float(rho)
    return correlations


def measure_lip_sync(path: Path, locator: FaceLocator | None = None, max_lag: int = 3) -> LipSyncReport:
    """Judge an mp4: correlations of lip opening with loudness at lags -max_lag..max_lag frames."""
    own_locator = locator is None
    locator = locator or FaceLocator()
    try:
        frames, fps = read_video(path)
        openings = lip_openings(frames, locator)
    finally:
        if own_locator:
            locator.close()
    samples, sample_rate, audio_duration = read_audio(path)
    loudness = frame_loudness_db(samples, sample_rate, fps, len(frames))
    correlations = lag_correlations(openings, loudness, max_lag)
    return LipSyncReport(
        frames=len(frames),
        fps=fps,
        face_frames=int((~np.isnan(openings)).sum()),
        lip_opening=openings,
        loudness_db=loudness,
        correlations=correlations,
        video_duration=video_duration(path),
        audio_duration=audio_duration,
    )
