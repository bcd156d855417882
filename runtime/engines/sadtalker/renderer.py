"""Face renderer: coefficient windows -> frames, batched against one cached source portrait.

Per portrait (once): canonical keypoints, the source keypoints posed by the source
coefficients, and the generator's source feature volumes. Per batch of frames, one fixed-shape
function (compiled and replayed as a CUDA graph on CUDA): mapping net -> posed driving
keypoints -> generator render. Keypoint math runs in fp32; the generator in
the renderer's dtype (fp16 on GPUs), its two heavy conv stacks optionally in `conv_dtype`
(bf16 on CPUs that have native bf16 dot products).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..batched_render import CapturedBatch, capture_if_cuda
from ..dense_motion import DenseMotionNetwork
from .generator import SourceEncoding
from .motion import transform_keypoints
from .mps import adapt_for_mps
from .networks import SadTalkerNetworks

VOLUME_DEPTH = 16  # depth of the generator's feature volume (its H and W are the render size / 4)


@dataclass
class PreparedSource:
    encoding: SourceEncoding
    canonical_keypoints: torch.Tensor  # (1, 15, 3) fp32
    source_keypoints: torch.Tensor  # (1, 15, 3) fp32

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The portrait's inputs of `FaceRenderer.render_windows`, in its order."""
        return (self.encoding.feature_3d, self.encoding.compressed, self.canonical_keypoints,
                self.source_keypoints)


class FaceRenderer:
    def __init__(self, nets: SadTalkerNetworks, device: torch.device, dtype: torch.dtype,
                 conv_dtype: torch.dtype | None = None):
        """dtype: the generator's precision. conv_dtype: a different precision for its two heavy
        conv stacks alone, the SPADE decoder and the dense-motion hourglass (bf16 on CPUs with
        native bf16 dot products: about 80% of the CPU cost). Keypoints, Gaussians, masks and
        every grid sample stay in `dtype`: those are what bf16 visibly hurts.

        The renderer takes ownership of `nets`' face-renderer networks: they are moved,
        converted and fused in place."""
        self.device, self.dtype = device, dtype
        if device.type == "cuda":
            spectral_dtype = torch.float32 if dtype == torch.float32 else torch.float16  # it has no bf16
            rewrite_dense_motion(nets.generator.dense_motion_network, nets.size, spectral_dtype)
        self.keypoint_detector = nets.keypoint_detector.to(device=device, dtype=torch.float32)
        self.mapping = nets.mapping.to(device=device, dtype=torch.float32)
        self.generator = nets.generator.to(device=device, dtype=dtype)
        self.conv_dtype = conv_dtype or dtype
        if self.conv_dtype != dtype:
            self.generator.decoder.to(dtype=self.conv_dtype)
            self.generator.conv_dtype = self.conv_dtype
            self.generator.dense_motion_network.hourglass.to(dtype=self.conv_dtype)  # its input follows its weights
        if self.generator.decoder.up_1.fused is None:
            self.generator.decoder.fuse()
        if device.type == "mps":
            adapt_for_mps(self.generator)
            adapt_for_mps(self.keypoint_detector)
        # What renders a batch: render_windows itself, its torch.compile, or a CUDA graph of that;
        # one for a batch of one portrait, one for a batch whose frames each bring their portrait's
        # tensors (mixed_batch.py): two shapes of the same function, each with its own graph.
        self._batch: Callable[..., torch.Tensor] = self.render_windows
        self._gathered_batch: Callable[..., torch.Tensor] = self.render_windows
        # CUDA graphs of the eager batch for a few frame counts below the batch size (capture_small),
        # of one portrait and gathered (mixed), by frame count.
        self._small_batches: dict[int, Callable[..., torch.Tensor]] = {}
        self._small_gathered: dict[int, Callable[..., torch.Tensor]] = {}
        self.compiled = False

    def compile(self) -> None:
        """Route the batch (mapping net, keypoints, generator) through torch.compile: inductor
        fuses the instance-norm / SPADE-modulation / activation chains that run as separate
        memory-bound kernels in eager mode. One graph (fullgraph) for one batch shape (static):
        the engine pads the last batch, so it compiles once per size, at warm-up."""
        if not self.compiled:
            self._batch = self._gathered_batch = torch.compile(self.render_windows, fullgraph=True, dynamic=False)
            self.compiled = True

    def uncompile(self) -> None:
        self._batch = self._gathered_batch = self.render_windows
        self.compiled = False

    def capture(self, prepared: "PreparedSource", target_windows: torch.Tensor) -> None:
        """On CUDA, replace both batches (one portrait; each frame its own) by CUDA graphs of
        them, captured for target_windows' shape (call after each compiled batch has run once at
        that shape, see `gathered_example`)."""
        windows = target_windows.to(self.device, torch.float32).contiguous()
        with torch.inference_mode():
            self._batch = capture_if_cuda(self._batch, windows, *prepared.tensors())
            self._gathered_batch = capture_if_cuda(self._gathered_batch, windows,
                                                   *gathered_example(prepared, windows.shape[0]))

    def capture_small(self, prepared: "PreparedSource", window: torch.Tensor, frame_counts: tuple[int, ...]) -> None:
        """On CUDA, CUDA graphs of the eager batch (nothing to compile), of one portrait and
        gathered, for each frame count, captured with `window` (1, C, 27) repeated: a short render
        unit (a stream's first frames, a short clip) pads to one of them rather than to the full
        compiled batch."""
        window = window.to(self.device, torch.float32)
        with torch.inference_mode():
            for frames in frame_counts:
                example = window.expand(frames, -1, -1).contiguous()
                one = capture_if_cuda(self.render_windows, example, *prepared.tensors())
                gathered = capture_if_cuda(self.render_windows, example, *gathered_example(prepared, frames))
                self._small_batches[frames], self._small_gathered[frames] = one, gathered

    @property
    def small_batches(self) -> tuple[int, ...]:
        return tuple(sorted(self._small_batches))

    @property
    def captured(self) -> bool:
        return isinstance(self._batch, CapturedBatch) and isinstance(self._gathered_batch, CapturedBatch)

    @property
    def precision(self) -> str:
        name = str(self.dtype).removeprefix("torch.")
        if self.conv_dtype != self.dtype:
            name += f" (decoder and hourglass {str(self.conv_dtype).removeprefix('torch.')})"
        return name

    @torch.inference_mode()
    def prepare_source(self, image: torch.Tensor, source_window: torch.Tensor) -> PreparedSource:
        """image (1, 3, S, S) in [0, 1]; source_window (1, C, 27) source coefficients."""
        image = image.to(self.device, torch.float32)
        canonical = self.keypoint_detector(image)
        source_kp = transform_keypoints(canonical, self.mapping(source_window.to(self.device, torch.float32)))
        encoding = self.generator.encode_source(image.to(self.dtype))
        return PreparedSource(encoding, canonical, source_kp)

    def render_windows(self, target_windows: torch.Tensor, feature_3d: torch.Tensor, compressed: torch.Tensor,
                       canonical_keypoints: torch.Tensor, source_keypoints: torch.Tensor) -> torch.Tensor:
        """The fixed-shape batch: target_windows (B, C, 27) fp32 and the portrait's tensors
        (PreparedSource.tensors) -> frames (B, 3, S, S) in [0, 1], renderer dtype."""
        driving = transform_keypoints(canonical_keypoints, self.mapping(target_windows))
        source_kp = source_keypoints.expand(driving.shape[0], -1, -1)
        return self.generator.render(SourceEncoding(feature_3d, compressed), source_kp, driving)

    @torch.inference_mode()
    def render_batch(self, prepared: PreparedSource, target_windows: torch.Tensor) -> torch.Tensor:
        """target_windows (B, C, 27) -> frames (B, 3, S, S) in [0, 1], renderer dtype, on device.
        Compiled or captured: B must be the batch size it was made for, or it compiles again."""
        # A fresh inference-mode tensor, whatever came in: a compiled batch is guarded on the
        # input's dispatch keys, and a request's windows are made outside inference mode.
        windows = target_windows.to(self.device, torch.float32, memory_format=torch.contiguous_format, copy=True)
        return self._small_batches.get(windows.shape[0], self._batch)(windows, *prepared.tensors())

    @torch.inference_mode()
    def render_gathered(self, target_windows: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        """A batch whose frames each bring their portrait: target_windows (B, C, 27) and
        PreparedSource.tensors() gathered per frame (each (B, ...)) -> frames (B, 3, S, S) in
        [0, 1], renderer dtype. Compiled or captured: B must be the batch size it was made for."""
        windows = target_windows.to(self.device, torch.float32, memory_format=torch.contiguous_format, copy=True)
        batch = self._small_gathered.get(windows.shape[0], self._gathered_batch)
        return batch(windows, *(tensor.contiguous() for tensor in tensors))

    @torch.inference_mode()
    def driving_keypoints(self, prepared: PreparedSource, target_windows: torch.Tensor) -> torch.Tensor:
        """target_windows (B, C, 27) -> posed driving keypoints (B, 15, 3) fp32."""
        head = self.mapping(target_windows.to(self.device, torch.float32))
        return transform_keypoints(prepared.canonical_keypoints, head)


def gathered_example(prepared: PreparedSource, frames: int) -> tuple[torch.Tensor, ...]:
    """prepared's tensors repeated for `frames` frames: a mixed batch's inputs, all one portrait."""
    return tuple(tensor.expand(frames, *tensor.shape[1:]).contiguous() for tensor in prepared.tensors())


def rewrite_dense_motion(motion: DenseMotionNetwork, size: int, spectral_dtype: torch.dtype) -> None:
    """The exact inference rewrites LivePortrait's W runs on CUDA, for SadTalker's dense-motion
    network (the same network): BatchNorms folded into the convs, the hourglass's up-block convs
    computed at the low resolution, the 7x7x7 mask conv in the frequency domain (in
    spectral_dtype), the one-output occlusion conv as taps. Equal up to rounding; call before the
    network changes precision."""
    motion.fold_norm()
    motion.hourglass.rewrite_3d_convs(low_res_upsample=True)
    motion.use_spectral_mask_conv((VOLUME_DEPTH, size // 4, size // 4), spectral_dtype)
    motion.use_occlusion_taps()


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16), which oneDNN
    uses for bf16 convolutions (1.6-2.6x faster than fp32 on the 2-core CI CPU). Read from the
    CPU flags, not timed, so the choice does not depend on the machine's load."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:  # not Linux: keep fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
