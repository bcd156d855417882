"""The dense-motion network both engines use (face-vid2vid's): sparse keypoint motion -> a dense
backward flow over the appearance volume and an occlusion map.

For each keypoint (plus an identity "background" motion) the compressed source volume is warped as
if only that keypoint moved; a 3-D hourglass looks at those candidates and the keypoints' heatmaps
and predicts, per voxel, a soft assignment to the motions, which blends them into one flow.
Exact inference rewrites (channel alignment, conv rewrites, a spectral mask conv) are opt-in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv_rewrites import RewrittenConv
from .dense_motion_config import DenseMotionConfig
from .face_vid2vid import Hourglass, fold_batchnorm_into_conv
from .motion_field import identity_grid_3d, keypoint_heatmaps, keypoint_motions, warp_volume
from .spectral_conv import SpectralConv3d


class DenseMotionNetwork(nn.Module):
    """(compressed source (1 or B, 4, D, H, W), x_d (B, K, 3), x_s (B, K, 3)) -> flow (B, D, H, W, 3),
    occlusion (B, 1, H, W); `compress_source` makes the compressed volume from the appearance
    volume, once per portrait (a batch of frames of one portrait shares it: batch 1).

    mask_floor: assignment weights below it are zeroed after the softmax (SadTalker's upstream
    does, LivePortrait's does not)."""

    def __init__(self, config: DenseMotionConfig, num_kp: int, feature_channel: int, mask_floor: float = 0.0):
        super().__init__()
        self.num_kp = num_kp
        self.mask_floor = mask_floor
        in_features = (num_kp + 1) * (config.compress + 1)
        self.hourglass = Hourglass(config.block_expansion, in_features, config.num_blocks, config.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, config.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(config.compress, affine=True)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * config.reshape_depth, 1, kernel_size=7, padding=3)
        self.norm_folded = False
        self.input_padding = 0  # zero channels appended to the hourglass input, see align_channels()
        self.rewritten_mask: SpectralConv3d | None = None  # see use_spectral_mask_conv()
        self.rewritten_occlusion: RewrittenConv | None = None  # see use_occlusion_taps()

    def use_spectral_mask_conv(self, volume_shape: tuple[int, int, int], compute_dtype: torch.dtype = torch.float32) -> None:
        """Compute the 7x7x7 mask conv over (D, H, W) = volume_shape in the frequency domain
        (spectral_conv): a 144 -> 22 matrix product per frequency instead of 343 taps per voxel
        (LivePortrait's sizes). Exact up to rounding; compute_dtype fp16 on CUDA. Its kernel
        spectrum takes ~0.6 GB in fp16."""
        self.rewritten_mask = SpectralConv3d(self.mask, volume_shape, compute_dtype)

    def use_occlusion_taps(self) -> None:
        """Compute the 7x7 occlusion conv (2272 channels -> 1) as a 1x1 conv to its 49 taps plus a
        shifted sum (conv_rewrites): cuDNN has no good kernel for a single output channel."""
        self.rewritten_occlusion = RewrittenConv(self.occlusion, taps_as_channels=True, align_outputs=16)  # 49 -> 64

    def align_channels(self, multiple: int = 8) -> None:
        """Pad the hourglass's odd channel counts (input 110, output 142) to a multiple of 8 with
        zero channels (-> 112 and 144), for inference after fold_norm().

        Why: cuDNN's half-precision tensor-core kernels want channel counts divisible by 8. A small
        win (H200, fp16, batch 32: W 2.57 -> 2.49 ms/frame; the 3-D mask conv stays slow either
        way, the spectral form is what fixes it). Exact, bit for bit: the added input channels are
        zeros and meet zero weights; the decoder's added output channels have zero weights and
        bias, so they are relu(0) = 0."""
        if self.input_padding:
            return
        if not (self.norm_folded and self.hourglass.decoder.norm_folded):
            raise RuntimeError("align_channels() needs fold_norm() first (the BatchNorms have the old widths)")
        if self.rewritten_mask is not None or self.rewritten_occlusion is not None or \
                self.hourglass.decoder.rewritten is not None:
            raise RuntimeError("align_channels() must come before the conv rewrites (they copy the weights)")
        first = self.hourglass.encoder.down_blocks[0].conv
        pad = -first.in_channels % multiple
        if pad == 0:
            return
        last = self.hourglass.decoder.conv
        _pad_conv_channels(first, pad_in=pad)
        _pad_conv_channels(last, pad_in=pad, pad_out=pad)  # its input ends with the padded hourglass input
        _pad_conv_channels(self.mask, pad_in=pad)
        # The occlusion conv reads the (C, D) volume flattened to C * D planes: pad per depth slice.
        weight = self.occlusion.weight.data
        depth = weight.shape[1] // self.hourglass.out_filters  # out_filters keeps the unpadded 142
        per_channel = weight.reshape(weight.shape[0], -1, depth, *weight.shape[2:])
        padded = torch.cat([per_channel, per_channel.new_zeros(weight.shape[0], pad, depth, *weight.shape[2:])], 1)
        self.occlusion.weight = nn.Parameter(padded.reshape(weight.shape[0], -1, *weight.shape[2:]),
                                             requires_grad=self.occlusion.weight.requires_grad)
        self.occlusion.in_channels = self.occlusion.weight.shape[1]
        self.input_padding = pad

    def fold_norm(self) -> None:
        self.hourglass.fold_norm()
        if not self.norm_folded:
            fold_batchnorm_into_conv(self.compress, self.norm)
            self.norm_folded = True

    def compress_source(self, feature: torch.Tensor) -> torch.Tensor:
        """Appearance volume (V, C, D, H, W) -> compressed volume (V, 4, D, H, W) fp32: the
        candidate motions warp this (fp32: it is small, and sampling precision is what counts)."""
        compressed = self.compress(feature.to(self.compress.weight.dtype))
        if not self.norm_folded:
            compressed = self.norm(compressed)
        return F.relu(compressed).float()

    def forward(self, compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor):
        """Convs run in their weights' dtypes (the hourglass may differ from the mask and occlusion
        convs); coordinates, sampling and the softmax stay fp32 (a half-precision flow would move
        features by a quarter voxel)."""
        batch = kp_driving.shape[0]
        channels, depth, height, width = compressed.shape[1:]
        compressed = compressed.float()
        kp_driving, kp_source = kp_driving.float(), kp_source.float()
        identity = identity_grid_3d(depth, height, width, device=compressed.device, dtype=torch.float32)

        # 1. Warp the compressed volume by each candidate motion.
        motions = keypoint_motions(identity, kp_driving, kp_source)  # (B, 1+K, D, H, W, 3)
        n_motions = motions.shape[1]
        deformed = warp_volume(compressed, motions.reshape(batch * n_motions, depth, height, width, 3))
        deformed = deformed.view(batch, n_motions, channels, depth, height, width)

        # 2. Where each keypoint moved to and from: difference of gaussians, zero for the background.
        heat = keypoint_heatmaps(kp_driving, identity) - keypoint_heatmaps(kp_source, identity)
        heat = torch.cat([heat.new_zeros(batch, 1, depth, height, width), heat], dim=1).unsqueeze(2)

        # 3. Predict the per-voxel soft assignment and the occlusion map.
        hourglass_in = torch.cat([heat, deformed], dim=2).reshape(batch, -1, depth, height, width)
        if self.input_padding:  # zero channels after the real ones, see align_channels()
            hourglass_in = F.pad(hourglass_in, (0, 0, 0, 0, 0, 0, 0, self.input_padding))
        hourglass_dtype = self.hourglass.encoder.down_blocks[0].conv.weight.dtype
        hourglass_in = hourglass_in.to(hourglass_dtype, memory_format=_memory_format_of(self.mask.weight))
        # The mask and occlusion convs read it channels-last; a split decoder conv's concatenation
        # would otherwise come back in the default layout and cost cuDNN a conversion.
        prediction = self.hourglass(hourglass_in).to(self.mask.weight.dtype).contiguous(
            memory_format=_memory_format_of(self.mask.weight))
        assignment = F.softmax((self.rewritten_mask or self.mask)(prediction).float(), dim=1)  # (B, 1+K, D, H, W)
        # sum_k a_k (grid + shift_k) = grid sum_k a_k + sum_k a_k shift_k, and the background's shift
        # is 0: a (1+K) x 3 product per voxel, not a 6-D sum. Without a floor the weights sum to 1.
        shifts = torch.cat([kp_source.new_zeros(batch, 1, 3), kp_source - kp_driving], dim=1)  # (B, 1+K, 3)
        if self.mask_floor:
            assignment = torch.where(assignment < self.mask_floor, torch.zeros_like(assignment), assignment)
            identity = identity * assignment.sum(dim=1).unsqueeze(-1)
        flow = identity + torch.einsum("bkdhw,bkc->bdhwc", assignment, shifts)
        if self.rewritten_occlusion is not None:
            occlusion = self.rewritten_occlusion.of_flattened_depth(prediction)  # no (C * D)-plane copy
        else:
            occlusion = self.occlusion(prediction.reshape(batch, -1, height, width))
        occlusion = torch.sigmoid(occlusion.float())
        return flow, occlusion


def _pad_conv_channels(conv: nn.Module, pad_in: int = 0, pad_out: int = 0) -> None:
    """Append zero input channels (weight columns) and zero output channels (weight rows, bias)."""
    with torch.no_grad():
        weight = conv.weight.data
        if pad_in:
            weight = torch.cat([weight, weight.new_zeros(weight.shape[0], pad_in, *weight.shape[2:])], 1)
        if pad_out:
            weight = torch.cat([weight, weight.new_zeros(pad_out, *weight.shape[1:])], 0)
            if conv.bias is not None:
                conv.bias = nn.Parameter(torch.cat([conv.bias.data, conv.bias.new_zeros(pad_out)]),
                                         requires_grad=conv.bias.requires_grad)
        conv.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
        conv.in_channels, conv.out_channels = weight.shape[1], weight.shape[0]


def _memory_format_of(weight: torch.Tensor) -> torch.memory_format:
    if weight.dim() == 5 and weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format
