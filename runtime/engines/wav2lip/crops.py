"""The refiner's image geometry, batched in torch on the device: face boxes cropped and resized to
the network's 96 px, and its faces resized back into their boxes through the feathered mask.

A batch travels as one region of its frames (the union of its face boxes), so only that region
goes to the device and back. Resizing samples pixel centres as cv2.resize (INTER_LINEAR) does.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

FACE_SIZE = 96  # px, the network's input and output side
# The mask, as fractions of the face box: 0 above MASK_TOP, ramping to 1 by MASK_FULL (mouth and
# chin), ramping back to 0 over the outer EDGE_FEATHER on the sides and the bottom.
MASK_TOP, MASK_FULL = 0.52, 0.64
EDGE_FEATHER = 0.12


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)


def feather_weights(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Mask weights at box-relative positions: rows (..., H, 1) and cols (..., 1, W), 0 at the box's
    top-left pixel and 1 at its bottom-right one -> (..., H, W). Exactly 0 above MASK_TOP, on the
    box's border and outside it; 1 over the mouth and chin; smooth between."""
    vertical = _smoothstep((rows - MASK_TOP) / (MASK_FULL - MASK_TOP)) * _smoothstep((1 - rows) / (EDGE_FEATHER / 2))
    horizontal = _smoothstep(cols / EDGE_FEATHER) * _smoothstep((1 - cols) / EDGE_FEATHER)
    return vertical * horizontal


@lru_cache(maxsize=64)
def feather_mask(height: int, width: int) -> np.ndarray:
    """(height, width, 1) float32 weights of the refined face inside a face box of that size."""
    rows = torch.linspace(0.0, 1.0, height)[:, None]
    cols = torch.linspace(0.0, 1.0, width)[None, :]
    return feather_weights(rows, cols)[:, :, None].numpy()


def crop_faces(region: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """region (B, C, H, W) float, boxes (B, 4) float x0, y0, x1, y1 in region pixels -> (B, C, 96, 96):
    each box resized to the network's input."""
    _, _, height, width = region.shape
    steps = (torch.arange(FACE_SIZE, device=region.device, dtype=torch.float32) + 0.5) / FACE_SIZE
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (B, 96) pixel-centre positions
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    grid = torch.stack(torch.broadcast_tensors((2 * xs / width - 1)[:, None, :], (2 * ys / height - 1)[:, :, None]),
                       dim=-1)
    return F.grid_sample(region, grid, mode="bilinear", padding_mode="border", align_corners=False)


def paste_faces(region: torch.Tensor, faces: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """region (B, C, H, W) float 0-255, faces (B, C, 96, 96) float 0-255, boxes (B, 4) float in region
    pixels -> (B, H, W, C) uint8: each face resized into its box and blended through the feathered
    mask. Where the mask is 0 (outside the box, above the nose) the region's pixels are returned as
    they were."""
    _, _, height, width = region.shape
    xs = torch.arange(width, device=region.device, dtype=torch.float32)[None]  # (1, W) pixel indices
    ys = torch.arange(height, device=region.device, dtype=torch.float32)[None]
    x0, y0, x1, y1 = (boxes[:, k:k + 1] for k in range(4))
    grid = torch.stack(torch.broadcast_tensors((2 * (xs - x0 + 0.5) / (x1 - x0) - 1)[:, None, :],
                                               (2 * (ys - y0 + 0.5) / (y1 - y0) - 1)[:, :, None]), dim=-1)
    resized = F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # linspace(0, 1) over the box's pixels, as feather_mask lays it out
    mask = feather_weights(((ys - y0) / (y1 - y0 - 1).clamp(min=1))[:, :, None],
                           ((xs - x0) / (x1 - x0 - 1).clamp(min=1))[:, None, :])[:, None]
    blended = region + mask * (resized - region)
    return blended.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
