"""Speech -> per-frame 3DMM motion coefficients at 25 fps (upstream `Audio2Coeff`).

Expression (64) comes from audio2exp per frame, head pose (3 angles + 3 translations) from the
audio2pose CVAE per 32-frame window, smoothed over time. All frames (and all windows) run as
single batches instead of upstream's loops of 10-frame and 32-frame chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import savgol_filter

from .audio2exp import Audio2Exp
from .audio2pose import Audio2Pose
from .config import PipelineConfig

PIPELINE = PipelineConfig()
EXP, POSE = slice(0, 64), slice(64, 70)


@dataclass(frozen=True)
class MotionRequest:
    expression_scale: float = 1.0
    pose_style: int = 0  # 0..45
    still: bool = False
    seed: int = 0  # blink timing and pose latents; fixed so a request is reproducible


def blink_ratios(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(num_frames,) eye-closure ratio: 5-frame blinks at random gaps (upstream's random
    blink sequence); none for clips of 20 frames or fewer."""
    ratio = np.zeros(num_frames, dtype=np.float32)
    if num_frames <= 20:
        return ratio
    frame = 0
    while frame < num_frames:
        low, high = min(10, num_frames), min(num_frames // 2, 70)
        if high <= low:
            break
        gap = int(rng.integers(low, high))
        if frame + gap + 5 > num_frames - 1:
            break
        ratio[frame + gap:frame + gap + 5] = [0.5, 0.9, 1.0, 0.9, 0.5]
        frame += gap + 5
    return ratio


@torch.inference_mode()
def predict_expression(audio2exp: Audio2Exp, mel_windows: torch.Tensor, source_exp: torch.Tensor,
                       blink: torch.Tensor) -> torch.Tensor:
    """mel_windows (T, 80, 16), source_exp (64,), blink (T,) -> expression (T, 64)."""
    t = mel_windows.shape[0]
    return audio2exp(mel_windows.unsqueeze(1), source_exp.expand(t, -1), blink.unsqueeze(1))


@torch.inference_mode()
def predict_pose(audio2pose: Audio2Pose, mel_windows: torch.Tensor, source_pose: torch.Tensor,
                 style: int, generator: torch.Generator, starts_clip: bool = True) -> torch.Tensor:
    """mel_windows (T, 80, 16), source_pose (6,) -> pose (T, 6).

    Frame 0 of a clip (starts_clip) keeps the source pose; the remaining frames are cut into
    32-frame windows, the last one aligned to the end (overlapping its predecessor), all decoded
    in one batch. A later piece of a stream (not starts_clip) windows all T frames.
    """
    seq = audio2pose.cfg.sequence_length
    lead = 1 if starts_clip else 0
    mels = mel_windows[lead:].unsqueeze(1)  # (T - lead, 1, 80, 16)
    remaining = mels.shape[0]
    if remaining == 0:
        return source_pose.unsqueeze(0)[:mel_windows.shape[0]]
    full, rest = divmod(remaining, seq)
    windows = [mels[i * seq:(i + 1) * seq] for i in range(full)]
    if rest:
        tail = mels[-seq:]
        if tail.shape[0] < seq:  # clip shorter than a window: repeat its first frame in front
            tail = torch.cat([tail[:1].expand(seq - tail.shape[0], -1, -1, -1), tail], dim=0)
        windows.append(tail)
    batch = torch.stack(windows)
    count = batch.shape[0]
    latent = audio2pose.cfg.latent_size
    z = torch.randn(count, latent, generator=generator).to(mels.device, mels.dtype)
    style_ids = torch.full((count,), style, dtype=torch.long, device=mels.device)
    motion = audio2pose.decode_windows(z, style_ids, source_pose.expand(count, -1), batch)
    pieces = [motion[i] for i in range(full)]
    if rest:
        pieces.append(motion[-1, -rest:])
    pose_motion = torch.cat([torch.zeros_like(source_pose).unsqueeze(0)[:lead], *pieces], dim=0)
    return source_pose.unsqueeze(0) + pose_motion


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    """Savitzky-Golay (window 13, order 2) along time; shorter clips use the longest odd window."""
    length = pose.shape[0]
    window = PIPELINE.pose_smoothing_window if length >= PIPELINE.pose_smoothing_window \
        else (length - 1) // 2 * 2 + 1
    if window <= PIPELINE.pose_smoothing_order:
        return pose
    return savgol_filter(pose, window, PIPELINE.pose_smoothing_order, axis=0)


def predict_motion(audio2exp: Audio2Exp, audio2pose: Audio2Pose, mels: torch.Tensor, source: torch.Tensor,
                   blink: torch.Tensor, style: int, generator: torch.Generator,
                   starts_clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """mels (T, 80, 16), source (73,) coefficients, blink (T,) on the device -> expression (T, 64)
    and unsmoothed pose (T, 6) on the host, in one transfer (one wait for the device)."""
    expression = predict_expression(audio2exp, mels, source[EXP], blink)
    pose = predict_pose(audio2pose, mels, source[POSE], style, generator, starts_clip)
    both = torch.cat([expression, pose], dim=1).cpu().numpy()
    return both[:, EXP], both[:, 64:]


def check_pose_style(audio2pose: Audio2Pose, request: MotionRequest) -> None:
    if not 0 <= request.pose_style < audio2pose.cfg.num_classes:
        raise ValueError(f"pose_style must be in 0..{audio2pose.cfg.num_classes - 1}")


def driving_coefficients(source_coeffs: np.ndarray, expression: np.ndarray, pose: np.ndarray,
                         request: MotionRequest) -> np.ndarray:
    """The source's (73,) coefficients with each frame's expression (T, 64) (scaled) and smoothed
    pose (T, 6) (unless still) -> (T, 73) float32."""
    coeffs = np.repeat(source_coeffs[None].astype(np.float32), expression.shape[0], axis=0)
    coeffs[:, EXP] = expression * request.expression_scale
    if not request.still:
        coeffs[:, POSE] = pose
    return coeffs


def motion_coefficients(audio2exp: Audio2Exp, audio2pose: Audio2Pose, mel_windows: np.ndarray,
                        source_coeffs: np.ndarray, request: MotionRequest,
                        device: torch.device) -> np.ndarray:
    """mel_windows (T, 80, 16) at 25 fps; source_coeffs (73,) = exp 64 | angles 3 | trans 3 |
    crop params 3 -> driving coefficients (T, 73) in the same layout (float32)."""
    check_pose_style(audio2pose, request)
    num_frames = mel_windows.shape[0]
    rng = np.random.default_rng(request.seed)
    generator = torch.Generator().manual_seed(request.seed)
    mels = torch.from_numpy(mel_windows).to(device)
    source = torch.from_numpy(source_coeffs.astype(np.float32)).to(device)
    blink = torch.from_numpy(blink_ratios(num_frames, rng)).to(device)
    expression, pose = predict_motion(audio2exp, audio2pose, mels, source, blink, request.pose_style, generator)
    return driving_coefficients(source_coeffs, expression, smooth_pose(pose), request)


def coefficient_windows(coeffs: np.ndarray, channels: int) -> np.ndarray:
    """(T, 73) -> (T, channels, 27): each frame's coefficients of frames t-13..t+13 (clamped),
    the mapping net's input. `channels` is 70 or 73 depending on the mapping checkpoint."""
    radius = PIPELINE.semantic_radius
    t = coeffs.shape[0]
    index = np.clip(np.arange(t)[:, None] + np.arange(-radius, radius + 1)[None, :], 0, t - 1)
    return np.ascontiguousarray(coeffs[index][:, :, :channels].transpose(0, 2, 1))


def resample_frames(coeffs: np.ndarray, source_fps: float, target_fps: float, count: int) -> np.ndarray:
    """Linear interpolation of a (T, C) sequence sampled at source_fps onto `count` frames at
    target_fps (frame i at time i / target_fps)."""
    if source_fps == target_fps and coeffs.shape[0] >= count:
        return coeffs[:count]
    # np.interp's result (clamped at both ends), for every column at once.
    positions = np.clip(np.arange(count) / target_fps * source_fps, 0, coeffs.shape[0] - 1)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, coeffs.shape[0] - 1)
    weight = (positions - below)[:, None]
    return (coeffs[below] * (1 - weight) + coeffs[above] * weight).astype(np.float32)
