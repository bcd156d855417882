"""Frames of several portraits in one LivePortrait batch, for the render scheduler
(runtime/scheduling): each frame names its portrait, W and G render them all at once, and each
frame is pasted back into its own portrait.

Each frame's source volume is gathered by its portrait index into a batch of volumes, which W
reads one per frame (`LivePortraitEngine.render_gathered_crops`: on CUDA the compiled W + G at the
engine's batch size, replayed as its own CUDA graph). A shorter batch is padded to that size, so
nothing recompiles. `LivePortraitEngine.render` keeps its path for one portrait, where the whole
batch samples a single volume in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..batched_render import FaceBox, PortraitRows, pad_rows, portrait_index_tensor, rows_by_portrait, to_device
from .engine import LivePortraitEngine, PreparedSource


@torch.no_grad()
def render_mixed_crops(engine: LivePortraitEngine, sources: Sequence[PreparedSource],
                       portrait_index: Sequence[int], kp_driving: torch.Tensor) -> torch.Tensor:
    """W then G for frames of several portraits: frame i renders sources[portrait_index[i]]
    driven by kp_driving[i] (B, 21, 3) -> crops (B, 3, 512, 512) in [0, 1], render dtype.

    A batch shorter than the engine's batch size is padded to it (one shape for the compiled
    batch, its CUDA graph and cuDNN's tuned kernels); a longer one is refused (the scheduler
    forms batches of at most that size)."""
    frames = kp_driving.shape[0]
    if frames > engine.batch_size:
        raise ValueError(f"{frames} frames exceed the engine's batch size {engine.batch_size}")
    padded = to_device(pad_rows(portrait_index_tensor(portrait_index, len(sources), frames), engine.batch_size),
                       engine.device)
    volumes = torch.cat([source.feature_3d for source in sources])  # (V, 32, 16, 64, 64)
    kp_sources = torch.cat([source.kp_source for source in sources])  # (V, 21, 3)
    kp_padded = pad_rows(to_device(kp_driving, engine.device, torch.float32), engine.batch_size)
    crops = engine.render_gathered_crops(volumes.index_select(0, padded), kp_padded, kp_sources.index_select(0, padded))
    return crops[:frames]


def _portrait_rows(engine: LivePortraitEngine, sources: Sequence[PreparedSource], portrait_index: Sequence[int],
                   crops: torch.Tensor) -> list[PortraitRows]:
    """Each portrait's crops composed into its face box on the device, with the rows they fill."""
    index = portrait_index_tensor(portrait_index, len(sources), crops.shape[0])
    pieces = []
    for portrait, rows in rows_by_portrait(index, len(sources)):
        source = sources[portrait]
        boxes = engine._compose_box(source, crops[to_device(rows, crops.device)])
        pieces.append(PortraitRows(boxes, FaceBox(source.portrait, source.paste.box), rows))
    return pieces


@torch.no_grad()
def paste_mixed(engine: LivePortraitEngine, sources: Sequence[PreparedSource], portrait_index: Sequence[int],
                crops: torch.Tensor) -> list[np.ndarray]:
    """Crops (B, 3, 512, 512) of a mixed batch -> full-portrait frames (H_v, W_v, 3) uint8 in order;
    frame i is sources[portrait_index[i]]'s portrait with crop i pasted into its face box (through
    pinned host memory on CUDA, as `LivePortraitEngine.render`)."""
    return list(engine.mixed_host_frames.mixed_frames([_portrait_rows(engine, sources, portrait_index, crops)]))


def render_mixed(engine: LivePortraitEngine, sources: Sequence[PreparedSource],
                 portrait_index: Sequence[int], kp_driving: torch.Tensor) -> list[np.ndarray]:
    """Full-portrait frames (H_v, W_v, 3) uint8, one per row of kp_driving, in order; frame i is
    sources[portrait_index[i]]'s portrait with its face re-rendered."""
    return paste_mixed(engine, sources, portrait_index, render_mixed_crops(engine, sources, portrait_index, kp_driving))

