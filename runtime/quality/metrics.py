"""Weight-free quality metrics from per-frame face-mesh points, frames and audio.

Each takes arrays and returns a JSON-ready dict. Points are (frames, 468, 2) pixels, nan where the
mesh was not found on a frame.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from ..media import landmarks as lm
from ..media.lipsync import frame_loudness_db, lag_correlations

MAX_LAG = 8  # frames each way for the lip-sync correlation (finds offsets up to 0.32 s at 25 fps)
STILL_MOUTH = 0.002  # lip-opening std (face heights) below which the mouth is taken as not moving
# Points that move only with the head: eye corners, nose bridge and tip, forehead, brow ends.
STABLE_POINTS = [33, 133, 263, 362, 6, 168, 1, 4, 10, 151, 70, 300]
# The upper face, compared with the portrait for identity: brows, eyes, nose, forehead.
UPPER_FACE = sorted(set(STABLE_POINTS) | {105, 66, 107, 336, 296, 334, 159, 145, 386, 374, 5, 195, 197, 9, 8})
MOUTH_POINTS = sorted(set(lm.OUTER_LIP_UPPER) | set(lm.OUTER_LIP_LOWER))
IDENTITY_SIDE = 64  # px of the canonical upper-face patch
MOUTH_PATCH = (96, 48)  # px (width, height) the mouth is resized to before measuring sharpness


def _round(value: float, digits: int = 4) -> Optional[float]:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def face_heights(points: np.ndarray) -> np.ndarray:
    """(frames,) forehead-top to chin distance, px."""
    return np.linalg.norm(points[:, lm.FOREHEAD_TOP] - points[:, lm.CHIN_BOTTOM], axis=-1)


def lip_openings(points: np.ndarray) -> np.ndarray:
    """(frames,) inner-lip gap over face height (the judge's measure, runtime.media.lipsync)."""
    gap = np.linalg.norm(points[:, lm.UPPER_LIP_MID] - points[:, lm.LOWER_LIP_MID], axis=-1)
    return gap / face_heights(points)


def lip_sync(points: np.ndarray, samples: np.ndarray, sample_rate: int, fps: float) -> dict:
    """Rank correlation of lip opening with loudness at lags -8..8 frames, and its best lag."""
    openings = lip_openings(points)
    frames = len(openings)
    motion = float(np.nanstd(openings)) if np.isfinite(openings).any() else float("nan")
    # score: the correlation at lag 0, and 0 for a mouth that does not move, so that clips rank by it.
    result = {"score": 0.0, "mouth_motion": _round(motion), "correlation_at_0": None, "best_lag_frames": None,
              "best_correlation": None, "correlations": {}}
    if not len(samples) or not np.isfinite(openings).sum() > 3:
        result["note"] = "no audio" if not len(samples) else "no face on enough frames"
        return result
    if motion < STILL_MOUTH:
        result["note"] = "the mouth does not move"
        return result
    loudness = frame_loudness_db(samples, sample_rate, fps, frames)
    correlations = lag_correlations(openings, loudness, min(MAX_LAG, frames // 2))
    finite = {lag: rho for lag, rho in correlations.items() if np.isfinite(rho)}
    result["correlations"] = {str(lag): _round(rho, 3) for lag, rho in correlations.items()}
    if finite:
        best = max(finite, key=finite.get)
        result.update(correlation_at_0=_round(correlations[0], 3), best_lag_frames=best,
                      best_correlation=_round(finite[best], 3), score=_round(np.nan_to_num(correlations[0]), 3))
    return result


def landmark_jitter(points: np.ndarray) -> dict:
    """Frame-to-frame acceleration of the head-fixed points, per mille of face height: smooth head
    motion scores low, trembling landmarks (a flickering render) high."""
    stable = points[:, STABLE_POINTS]
    acceleration = np.linalg.norm(stable[2:] - 2 * stable[1:-1] + stable[:-2], axis=-1).mean(axis=1)
    relative = acceleration / face_heights(points)[1:-1]
    valid = relative[np.isfinite(relative)]
    if not len(valid):
        return {"mean_per_mille": None, "p95_per_mille": None, "note": "fewer than 3 consecutive frames with a face"}
    return {"mean_per_mille": _round(1000 * valid.mean(), 3), "p95_per_mille": _round(1000 * np.percentile(valid, 95), 3)}


def mouth_sharpness(image: np.ndarray, points: np.ndarray) -> float:
    """Variance of the Laplacian of the mouth region (outer lips, 40% margin) resized to 96x48 grey."""
    lips = points[MOUTH_POINTS]
    centre, size = lips.mean(axis=0), (lips.max(axis=0) - lips.min(axis=0)) * 1.4 + 4
    x0, y0 = np.maximum(0, (centre - size / 2).astype(int))
    x1, y1 = (centre + size / 2).astype(int)
    patch = image[y0:y1, x0:x1]
    if patch.size == 0:
        return float("nan")
    grey = cv2.cvtColor(cv2.resize(patch, MOUTH_PATCH, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())


def upper_face_patch(image: np.ndarray, points: np.ndarray, reference_points: np.ndarray) -> Optional[np.ndarray]:
    """The upper face of `image` aligned (similarity transform) onto `reference_points`' frame and cut to
    their upper-face box: (64, 64) float32 grey, zero mean, unit norm; None if alignment fails."""
    matrix, _ = cv2.estimateAffinePartial2D(points[UPPER_FACE].astype(np.float32),
                                            reference_points[UPPER_FACE].astype(np.float32))
    if matrix is None:
        return None
    ref = reference_points[UPPER_FACE]
    margin = (ref.max(axis=0) - ref.min(axis=0)) * 0.1
    (x0, y0), (x1, y1) = ref.min(axis=0) - margin, ref.max(axis=0) + margin
    # Map straight into the 64 px patch: scale the box to IDENTITY_SIDE after the alignment.
    to_patch = np.array([[IDENTITY_SIDE / (x1 - x0), 0, -x0 * IDENTITY_SIDE / (x1 - x0)],
                         [0, IDENTITY_SIDE / (y1 - y0), -y0 * IDENTITY_SIDE / (y1 - y0)], [0, 0, 1]])
    combined = (to_patch @ np.vstack([matrix, [0, 0, 1]]))[:2]
    patch = cv2.warpAffine(image, combined, (IDENTITY_SIDE, IDENTITY_SIDE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey -= grey.mean()
    norm = np.linalg.norm(grey)
    return grey / norm if norm > 0 else None


def identity(similarities: list[float], reference: str) -> dict:
    """Summary of the upper-face correlations (1 = the same face, pixel for pixel, after alignment)."""
    values = np.array(similarities, dtype=float)
    if not len(values):
        return {"reference": reference, "similarity_mean": None, "similarity_min": None, "frames_compared": 0,
                "note": "no frame could be aligned to the reference"}
    return {"reference": reference, "similarity_mean": _round(values.mean()), "similarity_min": _round(values.min()),
            "frames_compared": len(values)}


def sharpness(frame_values: list[float], portrait_value: Optional[float]) -> dict:
    values = np.array([v for v in frame_values if np.isfinite(v)])
    mean = float(values.mean()) if len(values) else float("nan")
    result = {"mouth_laplacian_var": _round(mean, 2), "portrait_mouth_laplacian_var": _round(portrait_value, 2),
              "ratio_to_portrait": None}
    if portrait_value:
        result["ratio_to_portrait"] = _round(mean / portrait_value, 3)
    return result
