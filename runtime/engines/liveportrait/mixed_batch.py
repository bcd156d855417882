"""Frames of several portraits in one LivePortrait batch, for the render scheduler
(runtime/scheduling): each frame names its portrait, W and G render them all at once, and each
frame is pasted back into its own portrait.

W reads one source volume per frame here (the portraits' F volumes gathered by frame), which
`warp_volume` takes as it is; `LivePortraitEngine.render` keeps its path for one portrait, where
the whole batch samples a single volume in place. This path runs eagerly: the compiled W + G and
its CUDA graph are built for the one-volume shape.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .engine import LivePortraitEngine, PreparedSource


def _portrait_rows(portrait_index: Sequence[int], sources: Sequence[PreparedSource], frames: int) -> torch.Tensor:
    index = torch.as_tensor(list(portrait_index), dtype=torch.long)
    if index.shape != (frames,):
        raise ValueError(f"{index.numel()} portrait indices for {frames} frames")
    if frames and (index.min() < 0 or index.max() >= len(sources)):
        raise ValueError(f"portrait indices must lie in [0, {len(sources)})")
    return index


@torch.no_grad()
def render_mixed_crops(engine: LivePortraitEngine, sources: Sequence[PreparedSource],
                       portrait_index: Sequence[int], kp_driving: torch.Tensor) -> torch.Tensor:
    """W then G for frames of several portraits: frame i renders sources[portrait_index[i]]
    driven by kp_driving[i] (B, 21, 3) -> crops (B, 3, 512, 512) in [0, 1], render dtype.

    A batch shorter than the engine's batch size is padded to it (one shape for cuDNN's tuned
    kernels); a longer one is refused (the scheduler forms batches of at most that size)."""
    frames = kp_driving.shape[0]
    if frames > engine.batch_size:
        raise ValueError(f"{frames} frames exceed the engine's batch size {engine.batch_size}")
    index = _portrait_rows(portrait_index, sources, frames).to(engine.device)
    padded = torch.cat([index, index[-1:].expand(engine.batch_size - frames)])
    kp_padded = torch.cat([kp_driving, kp_driving[-1:].expand(engine.batch_size - frames, -1, -1)])
    volumes = torch.cat([source.feature_3d for source in sources]).float()  # (V, 32, 16, 64, 64)
    kp_sources = torch.cat([source.kp_source for source in sources]).float()  # (V, 21, 3)
    crops = engine._warp_decode(volumes.index_select(0, padded).contiguous(), kp_padded.float().contiguous(),
                                kp_sources.index_select(0, padded).contiguous())
    return crops[:frames]


@torch.no_grad()
def paste_mixed(engine: LivePortraitEngine, sources: Sequence[PreparedSource], portrait_index: Sequence[int],
                crops: torch.Tensor) -> list[np.ndarray]:
    """Crops (B, 3, 512, 512) of a mixed batch -> full-portrait frames (H_v, W_v, 3) uint8 in order;
    frame i is sources[portrait_index[i]]'s portrait with crop i pasted into its face box."""
    index = _portrait_rows(portrait_index, sources, crops.shape[0])
    frames: list[np.ndarray] = [np.empty(0)] * len(index)
    for portrait, source in enumerate(sources):
        rows = torch.nonzero(index == portrait).flatten()
        if rows.numel() == 0:
            continue
        boxes = engine._compose_box(source, crops[rows.to(crops.device)]).cpu().numpy()
        x0, y0, x1, y1 = source.paste.box
        for row, box in zip(rows.tolist(), boxes):
            frame = source.portrait.copy()
            frame[y0:y1, x0:x1] = box
            frames[row] = frame
    return frames


def render_mixed(engine: LivePortraitEngine, sources: Sequence[PreparedSource],
                 portrait_index: Sequence[int], kp_driving: torch.Tensor) -> list[np.ndarray]:
    """Full-portrait frames (H_v, W_v, 3) uint8, one per row of kp_driving, in order; frame i is
    sources[portrait_index[i]]'s portrait with its face re-rendered."""
    return paste_mixed(engine, sources, portrait_index, render_mixed_crops(engine, sources, portrait_index, kp_driving))
