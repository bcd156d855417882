"""Blend rendered face crops into the portrait's face region, on the render device, in batches.

Upstream pastes with OpenCV's seamlessClone per frame on the CPU; we blend with a feathered
mask instead (one fused op per batch). Only the region the crop covers leaves the device; the
host puts it into a copy of the portrait (runtime.engines.batched_render).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .alignment import FaceCrop

FEATHER_FRACTION = 0.12  # width of the blend ramp, as a fraction of the crop side


@dataclass
class PastePlan:
    """Everything per-portrait the paste needs, already on the device."""

    background: torch.Tensor  # (3, rh, rw) the portrait's region in [0, 1], render dtype
    region: tuple[int, int, int, int]  # x0, y0, x1, y1 integer pixels of the portrait
    grid: torch.Tensor  # (1, rh, rw, 2) sampling grid into the crop, grid_sample coordinates
    alpha: torch.Tensor  # (1, 1, rh, rw) blend weight of the rendered face


def plan_paste(portrait: np.ndarray, crop: FaceCrop, device: torch.device, dtype: torch.dtype) -> PastePlan:
    height, width = portrait.shape[:2]
    bx0, by0, bx1, by1 = crop.box()
    x0, y0 = max(0, int(np.floor(bx0))), max(0, int(np.floor(by0)))
    x1, y1 = min(width, int(np.ceil(bx1))), min(height, int(np.ceil(by1)))
    # Pixel centres of the region in crop-normalised coordinates u, v in [0, 1].
    xs = (np.arange(x0, x1) + 0.5 - bx0) / crop.side
    ys = (np.arange(y0, y1) + 0.5 - by0) / crop.side
    u, v = np.meshgrid(xs, ys)
    grid = np.stack([u * 2 - 1, v * 2 - 1], axis=-1)[None]  # align_corners=False convention
    # Feathered square: 0 at the crop border, 1 inside a FEATHER_FRACTION-wide margin.
    edge = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v)) / FEATHER_FRACTION
    ramp = np.clip(edge, 0, 1)
    alpha = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    background = torch.from_numpy(np.ascontiguousarray(portrait[y0:y1, x0:x1])).to(device).permute(2, 0, 1).to(dtype) / 255
    return PastePlan(
        background=background,
        region=(x0, y0, x1, y1),
        grid=torch.from_numpy(grid.astype(np.float32)).to(device, dtype),
        alpha=torch.from_numpy(alpha[None, None].astype(np.float32)).to(device, dtype),
    )


@torch.inference_mode()
def paste_boxes(rendered: torch.Tensor, plan: PastePlan) -> torch.Tensor:
    """rendered (B, 3, S, S) in [0, 1] -> the portrait's region of each frame (B, rh, rw, 3) uint8,
    on the device."""
    b = rendered.shape[0]
    face = F.grid_sample(rendered.to(plan.background.dtype), plan.grid.expand(b, -1, -1, -1), mode="bilinear",
                         padding_mode="border", align_corners=False)
    blended = plan.background + plan.alpha * (face - plan.background)
    return (blended * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
