"""Frames of several portraits in one SadTalker batch, for the render scheduler
(runtime/scheduling): each frame names its portrait, the generator renders them all at once, and
each frame is pasted back into its own portrait.

Each portrait's tensors are gathered by frame (`FaceRenderer.render_gathered`: on CUDA the
compiled batch at the engine's batch size, replayed as its own CUDA graph); a shorter batch is
padded to that size, or to a short batch's graph where warm-up found that quicker, so nothing
recompiles. `SadTalkerEngine.animate` keeps its path for one
portrait, where the whole batch samples a single volume in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..batched_render import FaceBox, HostFrames, PortraitRows, pad_rows, portrait_index_tensor, rows_by_portrait, to_device
from .engine import PreparedPortrait, SadTalkerEngine
from .paste import paste_boxes


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
    index = portrait_index_tensor(portrait_index, len(portraits), frames)
    windows = target_windows
    renderer = engine.renderers[size]
    if renderer.compiled or engine.device.type != "cpu":
        # Shapes the engine has ready, as in SadTalkerEngine.render: the full batch, or the
        # quickest short one that holds the frames; the padding frames are dropped.
        padded = engine.padded_batch_size(size)(frames) if frames < batch_size else batch_size
        index, windows = pad_rows(index, padded), pad_rows(windows, padded)
    index, windows = to_device(index, engine.device), to_device(windows, engine.device, torch.float32)
    per_portrait = zip(*(portrait.source.tensors() for portrait in portraits))  # each (1, ...) per portrait
    gathered = [torch.cat(tensors).index_select(0, index) for tensors in per_portrait]
    return renderer.render_gathered(windows, *gathered)[:frames]


def _portrait_rows(portraits: Sequence[PreparedPortrait], portrait_index: Sequence[int],
                   faces: torch.Tensor) -> list[PortraitRows]:
    """Each portrait's faces blended into its region on the device, with the rows they fill."""
    index = portrait_index_tensor(portrait_index, len(portraits), faces.shape[0])
    pieces = []
    for position, rows in rows_by_portrait(index, len(portraits)):
        portrait = portraits[position]
        boxes = paste_boxes(faces[to_device(rows, faces.device)], portrait.paste)
        pieces.append(PortraitRows(boxes, FaceBox(portrait.portrait, portrait.paste.region), rows))
    return pieces


@torch.inference_mode()
def paste_mixed(portraits: Sequence[PreparedPortrait], portrait_index: Sequence[int],
                faces: torch.Tensor, engine: SadTalkerEngine | None = None) -> list[np.ndarray]:
    """Faces (B, 3, S, S) of a mixed batch -> full-portrait frames (H_v, W_v, 3) uint8 in order;
    frame i is portraits[portrait_index[i]] with face i pasted back. With the engine, through its
    pinned host buffers on CUDA (as `SadTalkerEngine.animate`); without, a plain copy to the host."""
    host_frames = engine.mixed_host_frames if engine is not None else HostFrames(faces.device)
    return list(host_frames.mixed_frames([_portrait_rows(portraits, portrait_index, faces)]))


def render_mixed(engine: SadTalkerEngine, portraits: Sequence[PreparedPortrait],
                 portrait_index: Sequence[int], target_windows: torch.Tensor) -> list[np.ndarray]:
    """Full-portrait frames (H_v, W_v, 3) uint8, one per row of target_windows, in order; frame i
    is portraits[portrait_index[i]] with its face re-rendered and pasted back."""
    faces = render_mixed_faces(engine, portraits, portrait_index, target_windows)
    return paste_mixed(portraits, portrait_index, faces, engine)
