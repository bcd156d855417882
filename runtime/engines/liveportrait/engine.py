"""The LivePortrait engine: official networks on one device, a cached source preparation per
portrait, and batched rendering of every frame's driving keypoints into the full portrait.

    engine = LivePortraitEngine.load(models_dir / "liveportrait", torch.device("cuda"))
    source = engine.prepare_source(portrait_rgb, face_points_478)       # once per portrait
    kp_driving = engine.driving_keypoints(source, targets)              # all frames at once
    for frame in engine.render(source, kp_driving): ...                 # (H, W, 3) uint8

Speed on CUDA: W and G run in half precision (fp16 by default, bf16 on request) with
channels-last weights, BatchNorms folded into convs, the decoder's SPADE convs fused, cuDNN
autotuning, and double-buffered pinned copies so the host consumes batch i while the GPU
renders batch i+1. F, M and the MLPs run once per portrait or once per clip, in fp32.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from . import crop as crop_ops
from .checkpoints import LivePortraitNetworks, load_networks
from .driving import DrivingTargets, driving_keypoints
from .keypoints import SourceMotion

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_BATCH = {"cuda": 32, "mps": 4, "cpu": 2}


@dataclass
class PasteBack:
    """How a 512 render goes back into the portrait: only the box the crop covers is touched.

    box: (x0, y0, x1, y1) in the portrait; grid (1, h, w, 2) crop coordinates in [-1, 1] for each
    box pixel; mask (1, 1, h, w) feathered weight of the render; background (1, 3, h, w) in [0, 1]."""

    box: tuple[int, int, int, int]
    grid: torch.Tensor
    mask: torch.Tensor
    background: torch.Tensor


@dataclass
class PreparedSource:
    """Everything that depends only on the portrait (cache it by image hash)."""

    portrait: np.ndarray  # (H, W, 3) uint8, the output frames' background
    crop: crop_ops.CropTransform
    feature_3d: torch.Tensor  # (1, 32, 16, 64, 64) fp32, F's appearance volume
    motion: SourceMotion  # M's reading of the crop
    kp_source: torch.Tensor  # (1, 21, 3) x_s
    lip_ratio: float  # inner-lip gap / mouth width of the portrait
    eye_ratios: np.ndarray  # (2,) lid gap / eye width, image-left eye first
    paste: PasteBack


def _image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) fp32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0


def _to_memory_format(module: torch.nn.Module) -> None:
    """channels-last for 4-D conv weights, channels-last-3d for 5-D ones (cuDNN's fast layouts)."""
    for parameter in module.parameters():
        if parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
        elif parameter.dim() == 5:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last_3d)


class LivePortraitEngine:
    """Official LivePortrait networks on one device. Thread-compatible, not thread-safe: the caller
    serializes `render` calls (the GPU is one resource anyway)."""

    def __init__(self, networks: LivePortraitNetworks, device: torch.device, precision: Precision | None = None,
                 batch_size: int | None = None, stacked_mask_conv: bool = False):
        """stacked_mask_conv: W's 7x7x7 mask conv as one wide 2-D conv (exact; an unmeasured speed
        experiment, off by default until a GPU benchmark shows it helps)."""
        self.device = torch.device(device)
        kind = self.device.type
        self.precision: Precision = precision or ("fp16" if kind == "cuda" else "fp32")
        self.render_dtype = _DTYPES[self.precision]
        self.batch_size = batch_size or DEFAULT_BATCH.get(kind, 2)
        self.networks = networks
        networks.warping.fold_norm()
        networks.generator.fuse()
        networks.to(self.device)
        networks.warping.to(self.render_dtype)
        networks.generator.to(self.render_dtype)
        if kind == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: autotune each conv once
            _to_memory_format(networks.warping)
            _to_memory_format(networks.generator)
        if stacked_mask_conv:
            networks.warping.dense_motion_network.use_stacked_mask_conv()  # after dtype and layout changes
        for network in networks.all():
            network.eval().requires_grad_(False)
        self._crop_mask = crop_ops.feather_mask()

    @classmethod
    def load(cls, liveportrait_dir: Path, device: torch.device | str, precision: Precision | None = None,
             batch_size: int | None = None) -> LivePortraitEngine:
        """Load the official files from MODELS_DIR/liveportrait (CheckpointError if any is missing)."""
        return cls(load_networks(Path(liveportrait_dir)), torch.device(device), precision, batch_size)

    # -- once per portrait ------------------------------------------------------------------

    @torch.no_grad()
    def prepare_source(self, portrait: np.ndarray, face_points: np.ndarray) -> PreparedSource:
        """portrait (H, W, 3) uint8 RGB; face_points (478, 2) MediaPipe mesh in portrait pixels."""
        transform = crop_ops.crop_transform(face_points)
        crop_512 = crop_ops.warp_to_crop(portrait, transform)
        network_in = _image_tensor(crop_ops.network_input(crop_512), self.device)
        feature_3d = self.networks.appearance(network_in).float()
        motion = SourceMotion.from_network(self.networks.motion(network_in))
        return PreparedSource(
            portrait=np.ascontiguousarray(portrait), crop=transform, feature_3d=feature_3d, motion=motion,
            kp_source=motion.keypoints(), lip_ratio=crop_ops.lip_open_ratio(face_points),
            eye_ratios=crop_ops.eye_open_ratios(face_points), paste=self._paste_back(portrait, transform),
        )

    def _paste_back(self, portrait: np.ndarray, transform: crop_ops.CropTransform) -> PasteBack:
        height, width = portrait.shape[:2]
        size = transform.size
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
        mapped = corners @ transform.crop_to_original[:2].T
        x0, y0 = np.clip(np.floor(mapped.min(0)).astype(int), 0, [width, height])
        x1, y1 = np.clip(np.ceil(mapped.max(0)).astype(int) + 1, 0, [width, height])
        if x1 <= x0 or y1 <= y0:
            raise ValueError("the face crop lies outside the portrait")
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        crop_xy = np.stack([xs, ys, np.ones_like(xs)], -1) @ transform.original_to_crop[:2].T
        grid = (2 * crop_xy + 1) / size - 1  # pixel centres, align_corners=False
        grid_t = torch.from_numpy(grid.astype(np.float32))[None].to(self.device)
        mask = F.grid_sample(torch.from_numpy(self._crop_mask)[None, None].to(self.device), grid_t,
                             mode="bilinear", padding_mode="zeros", align_corners=False)
        background = _image_tensor(portrait[y0:y1, x0:x1], self.device)
        return PasteBack(box=(int(x0), int(y0), int(x1), int(y1)), grid=grid_t, mask=mask, background=background)

    # -- once per clip ----------------------------------------------------------------------

    def driving_keypoints(self, source: PreparedSource, targets: DrivingTargets) -> torch.Tensor:
        """(N, 21, 3) fp32 driving keypoints for every frame, computed in one batch."""
        return driving_keypoints(self.networks.retargeting, source.motion, source.kp_source, source.lip_ratio,
                                 source.eye_ratios, targets)

    # -- per frame --------------------------------------------------------------------------

    @torch.no_grad()
    def render_crops(self, source: PreparedSource, kp_driving: torch.Tensor) -> torch.Tensor:
        """W then G for a batch: kp_driving (B, 21, 3) -> (B, 3, 512, 512) in [0, 1], render dtype."""
        batch = kp_driving.shape[0]
        warped = self.networks.warping(source.feature_3d.expand(batch, -1, -1, -1, -1), kp_driving,
                                       source.kp_source.expand(batch, -1, -1))
        return self.networks.generator(warped)

    @torch.no_grad()
    def _compose_box(self, source: PreparedSource, crops: torch.Tensor) -> torch.Tensor:
        """Renders into the portrait's crop box: (B, 3, 512, 512) -> (B, h, w, 3) uint8 on device."""
        paste = source.paste
        sampled = F.grid_sample(crops.float(), paste.grid.expand(crops.shape[0], -1, -1, -1), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        blended = paste.background + paste.mask * (sampled - paste.background)
        return (blended * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def render(self, source: PreparedSource, kp_driving: torch.Tensor) -> Iterator[np.ndarray]:
        """Full-portrait frames (H, W, 3) uint8, one per row of kp_driving, lazily and in order.

        The last batch is padded to the batch size (fixed shapes keep cuDNN's tuned kernels);
        while the caller consumes one batch, the device renders the next."""
        total = kp_driving.shape[0]
        use_cuda = self.device.type == "cuda"
        buffers: list[torch.Tensor] = []
        pending: tuple[torch.Tensor, int, torch.cuda.Event | None] | None = None
        for index, start in enumerate(range(0, total, self.batch_size)):
            chunk = kp_driving[start:start + self.batch_size]
            count = chunk.shape[0]
            if count < self.batch_size:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch_size - count, -1, -1)])
            boxes = self._compose_box(source, self.render_crops(source, chunk))
            if use_cuda:
                if len(buffers) < 2:
                    buffers.append(torch.empty(boxes.shape, dtype=torch.uint8, pin_memory=True))
                host = buffers[index % 2]
                host.copy_(boxes, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            else:
                host, event = boxes.cpu(), None
            if pending is not None:
                yield from self._frames_from(source, *pending)
            pending = (host, count, event)
        if pending is not None:
            yield from self._frames_from(source, *pending)

    @staticmethod
    def _frames_from(source: PreparedSource, host: torch.Tensor, count: int,
                     event: torch.cuda.Event | None) -> Iterator[np.ndarray]:
        if event is not None:
            event.synchronize()
        x0, y0, x1, y1 = source.paste.box
        boxes = host.numpy()
        for i in range(count):
            frame = source.portrait.copy()
            frame[y0:y1, x0:x1] = boxes[i]
            yield frame


def warm_up(engine: LivePortraitEngine) -> None:
    """Render one batch from a synthetic source, so cuDNN's autotuning and lazy CUDA start-up
    happen at load time, not in the first request."""
    device = engine.device
    batch = engine.batch_size
    with torch.no_grad():
        feature = torch.zeros(batch, 32, 16, 64, 64, device=device)
        kp_source = 0.1 * torch.randn(batch, 21, 3, device=device)
        warped = engine.networks.warping(feature, kp_source + 0.01, kp_source)
        engine.networks.generator(warped).float().cpu()
