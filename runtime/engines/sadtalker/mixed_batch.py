"""Frames of several portraits in one SadTalker batch, for the render scheduler
(runtime/scheduling): each frame names its portrait, the generator renders them all at once, and
each frame is pasted back into its own portrait.

The batch (`FaceRenderer.render_windows`) reads one source volume per frame here (the portraits'
tensors gathered by frame), which `warp_volume` takes as it is; `SadTalkerEngine.animate` keeps
its path for one portrait, where the whole batch samples a single volume in place. This path runs
eagerly: the compiled batch and its CUDA graph are built for the one-volume shape.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .engine import PreparedPortrait, SadTalkerEngine
from .paste import paste_boxes


def _portrait_rows(portrait_index: Sequence[int], portraits: Sequence[PreparedPortrait], frames: int) -> torch.Tensor:
    index = torch.as_tensor(list(portrait_index), dtype=torch.long)
    if index.shape != (frames,):
        raise ValueError(f"{index.numel()} portrait indices for {frames} frames")
    if frames and (index.min() < 0 or index.max() >= len(portraits)):
        raise ValueError(f"portrait indices must lie in [0, {len(portraits)})")
    return index


@torch.inference_mode()
def render_mixed_faces(engine: SadTalkerEngine, portraits: Sequence[PreparedPortrait],
                       portrait_index: Sequence[int], target_windows: torch.Tensor) -> torch.Tensor:
    """Frame i renders portraits[portrait_index[i]] driven by its coefficient window
    target_windows[i] (B, C, 27) (`SadTalkerEngine.driving_windows` of its own portrait) -> faces
    (B, 3, S, S) in [0, 1], renderer dtype. Every portrait must be prepared at the same size S."""
    sizes = {portrait.size for portrait in portraits}
    if len(sizes) != 1:
        raise ValueError(f"a mixed batch renders one size; got portraits prepared at {sorted(sizes)}")
    size = sizes.pop()
    batch_size = engine.batch_sizes[size]
    frames = target_windows.shape[0]
    if frames > batch_size:
        raise ValueError(f"{frames} frames exceed the engine's batch size {batch_size} at {size} px")
    index = _portrait_rows(portrait_index, portraits, frames).to(engine.device)
    windows = target_windows.to(engine.device, torch.float32)
    if frames < batch_size and engine.device.type != "cpu":
        # One shape per batch size, as in SadTalkerEngine.animate; the padding frames are dropped.
        index = torch.cat([index, index[-1:].expand(batch_size - frames)])
        windows = torch.cat([windows, windows[-1:].expand(batch_size - frames, -1, -1)])
    per_portrait = zip(*(portrait.source.tensors() for portrait in portraits))  # each (1, ...) per portrait
    gathered = [torch.cat(tensors).index_select(0, index) for tensors in per_portrait]
    return engine.renderers[size].render_windows(windows.contiguous(), *gathered)[:frames]


@torch.inference_mode()
def paste_mixed(portraits: Sequence[PreparedPortrait], portrait_index: Sequence[int],
                faces: torch.Tensor) -> list[np.ndarray]:
    """Faces (B, 3, S, S) of a mixed batch -> full-portrait frames (H_v, W_v, 3) uint8 in order;
    frame i is portraits[portrait_index[i]] with face i pasted back."""
    index = _portrait_rows(portrait_index, portraits, faces.shape[0])
    frames: list[np.ndarray] = [np.empty(0)] * len(index)
    for position, portrait in enumerate(portraits):
        rows = torch.nonzero(index == position).flatten()
        if rows.numel() == 0:
            continue
        boxes = paste_boxes(faces[rows.to(faces.device)], portrait.paste).cpu().numpy()
        x0, y0, x1, y1 = portrait.paste.region
        for row, box in zip(rows.tolist(), boxes):
            frame = portrait.portrait.copy()
            frame[y0:y1, x0:x1] = box
            frames[row] = frame
    return frames


def render_mixed(engine: SadTalkerEngine, portraits: Sequence[PreparedPortrait],
                 portrait_index: Sequence[int], target_windows: torch.Tensor) -> list[np.ndarray]:
    """Full-portrait frames (H_v, W_v, 3) uint8, one per row of target_windows, in order; frame i
    is portraits[portrait_index[i]] with its face re-rendered and pasted back."""
    faces = render_mixed_faces(engine, portraits, portrait_index, target_windows)
    return paste_mixed(portraits, portrait_index, faces)
