"""Exact inference rewrites of convolutions: same result (up to rounding), fewer FLOPs or faster kernels.

`RewrittenConv(conv, ...)` computes what `conv` computes, from the conv's current weights:

- `upsample=s`: conv(nearest_upsample(x, s)) from x itself (h and w upsampled, depth not). Each
  output pixel's 3x3 window covers at most 2x2 input pixels, so every output phase (r mod s,
  c mod s) is a 2x2 conv of the small input with its own summed kernel; phases that share a kernel
  share the work (for s = 4, phases 1 and 2 do). One 2x2 conv at low resolution yields them all,
  then a gather interleaves them: 44% of the FLOPs for s = 2, 25% for s = 4.
- `depth_slices=True` (3-D convs): one 2-D conv over every depth slice with kd times the output
  channels (one block per depth tap), then the taps summed with their depth shifts. Same
  arithmetic as the 3-D conv, but cuDNN's 2-D tensor-core kernels run it about twice as fast.
- `taps_as_channels=True` (2-D convs with few outputs): a k x k conv to n outputs as a 1x1 conv to
  n * k * k outputs, each output tap a channel, then the shifted taps summed. A GEMM n * k * k
  wide instead of n wide (W's occlusion conv has n = 1).
- `align_outputs=m`: the GEMM's output channels padded with zero weights to a multiple of m, and
  sliced off after. cuDNN runs channel counts that are not a multiple of 8 (154, 49, 12) on slow
  pre-Hopper kernels with an extra padding pass.

The rewritten weights are non-persistent buffers: they follow `.to()`, stay out of state dicts,
and are computed once, after BatchNorm folding and channel padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _phase_plan(scale: int) -> tuple[list[tuple[int, tuple[int, ...]]], list[int]]:
    """For a 3-tap kernel (padding 1) on an input nearest-upsampled by `scale`, along one axis.

    Output row s*i + a, tap t reads upsampled row s*i + a + t - 1, i.e. input row
    i + (a + t - 1) // s. A 2-tap window over input rows (p - 1, p) (a 2x2 conv with padding 1)
    holds every phase's taps at p = i + offset. Returns the distinct (offset, slot of each tap)
    kernels and, per phase a, which of them it uses."""
    kernels: list[tuple[int, tuple[int, ...]]] = []
    phase_kernel = []
    for phase in range(scale):
        shifts = [(phase + tap - 1) // scale for tap in range(3)]  # each in {-1, 0, 1}
        offset = 1 if max(shifts) == 1 else 0
        slots = tuple(shift + 1 - offset for shift in shifts)
        if (offset, slots) not in kernels:
            kernels.append((offset, slots))
        phase_kernel.append(kernels.index((offset, slots)))
    return kernels, phase_kernel


def _tap_matrix(slots: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """(2, 3) 0/1 matrix summing the kernel's 3 taps into the 2 window slots."""
    matrix = like.new_zeros(2, 3)
    for tap, slot in enumerate(slots):
        matrix[slot, tap] = 1
    return matrix


class RewrittenConv(nn.Module):
    """Computes `conv(x)` (or `conv(nearest_upsample(x, upsample))`) by the rewrites above."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d, *, upsample: int = 1, depth_slices: bool = False,
                 taps_as_channels: bool = False, align_outputs: int = 1):
        super().__init__()
        weight = conv.weight.detach().float()
        bias = conv.bias.detach().float() if conv.bias is not None else weight.new_zeros(conv.out_channels)
        self.dims = weight.dim() - 2
        self.out_channels = conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.padding = tuple(conv.padding)
        if any(p != k // 2 for p, k in zip(self.padding, self.kernel_size)) or tuple(conv.stride) != (1,) * self.dims:
            raise ValueError("only stride-1 'same' convs can be rewritten")
        if depth_slices and self.dims != 3:
            raise ValueError("depth_slices rewrites 3-D convs")
        if taps_as_channels and (self.dims != 2 or upsample != 1):
            raise ValueError("taps_as_channels rewrites plain 2-D convs")
        self.upsample = upsample
        self.depth_slices = depth_slices
        self.taps_as_channels = taps_as_channels
        self.phases = 1
        if upsample > 1:
            if self.kernel_size[-2:] != (3, 3):
                raise ValueError("the upsample rewrite needs a 3x3 kernel in h and w")
            weight, phase_rows = self._polyphase(weight, upsample)
            self.phases = weight.shape[0] // self.out_channels
            bias = bias.repeat(self.phases)
            self.register_buffer("gather_rows", phase_rows, persistent=False)
        if depth_slices:  # (n, c, kd, kh, kw) -> (kd * n, c, kh, kw): one block of outputs per depth tap
            weight = weight.permute(2, 0, 1, 3, 4).reshape(-1, *weight.shape[1:2], *weight.shape[3:])
        if taps_as_channels:  # (n, c, k, k) -> (n * k * k, c, 1, 1): output o * k * k + ky * k + kx
            n, c, k, _ = weight.shape
            weight = weight.permute(0, 2, 3, 1).reshape(n * k * k, c, 1, 1)
        self.gemm_outputs = weight.shape[0]
        padding = -self.gemm_outputs % align_outputs
        if padding:
            weight = torch.cat([weight, weight.new_zeros(padding, *weight.shape[1:])])
            if not (depth_slices or taps_as_channels):  # there the bias is added after the GEMM
                bias = torch.cat([bias, bias.new_zeros(padding)])
        self.register_buffer("weight", weight.contiguous(), persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def _polyphase(self, weight: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        kernels, phase_kernel = _phase_plan(scale)
        matrices = [_tap_matrix(slots, weight) for _, slots in kernels]
        # (U, U, n, c, ..., 2, 2): kernel (u, v) = M_u W M_v^T over the last two axes.
        per_pair = torch.stack([torch.stack([m_row @ weight @ m_col.T for m_col in matrices]) for m_row in matrices])
        stacked = per_pair.reshape(-1, *weight.shape[1:-2], 2, 2)
        # Gather rows (and the same for columns): output row s*i + a <- window row
        # kernel(a) * (h + 1) + i + offset(kernel(a)), in a (U * (h + 1))-row stack; h is known per call.
        rows = torch.tensor([[phase_kernel[a], kernels[phase_kernel[a]][0]] for a in range(scale)])
        return stacked, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        spatial_padding = (1, 1) if self.upsample > 1 else self.padding[-2:]
        if self.depth_slices:
            out = self._depth_sliced(x, weight, spatial_padding)
        elif self.taps_as_channels:
            out = self._sum_of_taps(F.conv2d(x, weight)[:, :self.gemm_outputs])
        else:
            convolve = F.conv3d if self.dims == 3 else F.conv2d
            padding = (self.padding[0], *spatial_padding) if self.dims == 3 else spatial_padding
            out = convolve(x, weight, self.bias, padding=padding)[:, :self.gemm_outputs]
        if self.upsample > 1:
            out = self._interleave_phases(out, x.shape[-2], x.shape[-1])
        return out

    def of_flattened_depth(self, volume: torch.Tensor) -> torch.Tensor:
        """forward(volume.reshape(B, C * D, h, w)) for a (B, C, D, h, w) volume (taps_as_channels),
        without that reshape: the 1x1 GEMM over the C * D planes is a 3-D conv whose kernel spans
        the depth. In channels-last-3d memory the reshape is a full copy of the volume."""
        if not self.taps_as_channels:
            raise ValueError("of_flattened_depth computes a taps_as_channels conv")
        batch, channels, depth = volume.shape[:3]
        weight = self.weight.reshape(self.weight.shape[0], channels, depth, 1, 1)
        return self._sum_of_taps(F.conv3d(volume, weight).squeeze(2)[:, :self.gemm_outputs])

    def _depth_sliced(self, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
        batch, channels, depth, height, width = x.shape
        kd, pd = self.kernel_size[0], self.padding[0]
        n_out = self.gemm_outputs // kd
        slices = x.transpose(1, 2).reshape(batch * depth, channels, height, width)
        per_tap = F.conv2d(slices, weight, padding=padding)[:, :self.gemm_outputs]
        height, width = per_tap.shape[-2:]
        # out[z] = sum_t tap_t(slice z + t - pd): pad depth with zeros, sum the shifted taps
        # (padded as a 3-D tensor: every backend, MPS included, pads those).
        per_tap = F.pad(per_tap.reshape(batch, depth, -1), (0, 0, pd, kd - 1 - pd))
        per_tap = per_tap.view(batch, depth + kd - 1, kd, n_out, height, width)
        out = per_tap[:, 0:depth, 0]
        for tap in range(1, kd):
            out = out + per_tap[:, tap:tap + depth, tap]
        out = out + self.bias.to(out.dtype)[None, None, :, None, None]
        return out.transpose(1, 2)  # (B, n_out, D, h, w)

    def _sum_of_taps(self, taps: torch.Tensor) -> torch.Tensor:
        """(B, n * k * k, h, w) per-tap products -> (B, n, h, w): out(y, x) = sum of tap (ky, kx) at (y + ky - p, x + kx - p)."""
        k = self.kernel_size[0]
        pad = k // 2
        height, width = taps.shape[-2:]
        padded = F.pad(taps, (pad, pad, pad, pad))
        out = None
        for ky in range(k):
            for kx in range(k):
                term = padded[:, ky * k + kx::k * k, ky:ky + height, kx:kx + width]
                out = term if out is None else out + term
        return out + self.bias.to(out.dtype)[None, :, None, None]

    def _interleave_phases(self, out: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, U * U * n, ..., h + 1, w + 1) per-kernel windows -> (B, n, ..., s * h, s * w)."""
        kernels = int(round(self.phases ** 0.5))
        batch, middle = out.shape[0], out.shape[2:-2]
        out = out.reshape(batch, kernels, kernels, self.out_channels, *middle, height + 1, width + 1)
        # Bring each kernel axis beside its spatial axis: (B, n, ..., U, h + 1, U, w + 1).
        order = [0, 3, *range(4, 4 + len(middle)), 1, 4 + len(middle), 2, 5 + len(middle)]
        out = out.permute(order).reshape(batch, self.out_channels, *middle, kernels * (height + 1),
                                         kernels * (width + 1))
        rows = self._gather_index(height)
        cols = self._gather_index(width)
        return out[..., rows[:, None], cols[None, :]]

    def _gather_index(self, size: int) -> torch.Tensor:
        """Index into the stacked windows for output rows 0 .. s * size - 1."""
        kernel, offset = self.gather_rows[:, 0], self.gather_rows[:, 1]  # per phase
        low = torch.arange(size, device=kernel.device)
        index = kernel[None, :] * (size + 1) + low[:, None] + offset[None, :]  # (size, s): row s*i + a
        return index.reshape(-1)


def _output_slice(conv: nn.Conv3d, start: int, stop: int) -> nn.Conv3d:
    """A conv computing outputs [start, stop) of `conv`."""
    part = nn.Conv3d(conv.in_channels, stop - start, kernel_size=conv.kernel_size, padding=conv.padding,
                     bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        part.weight.copy_(conv.weight[start:stop])
        if conv.bias is not None:
            part.bias.copy_(conv.bias[start:stop])
    return part


class SplitOutputsConv(nn.Module):
    """conv(x) for a 3-D conv as two convs of the same input, outputs [0, head) as a plain conv and
    the rest depth-sliced (a 2-D conv kd times wider), concatenated. For output counts that fit
    cuDNN's tiles badly: W's decoder conv, 144 outputs, runs in 128-wide tiles plus a mostly
    empty one."""

    def __init__(self, conv: nn.Conv3d, head: int):
        super().__init__()
        self.head = RewrittenConv(_output_slice(conv, 0, head))
        self.tail = RewrittenConv(_output_slice(conv, head, conv.out_channels), depth_slices=True, align_outputs=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.head(x), self.tail(x)], dim=1)
