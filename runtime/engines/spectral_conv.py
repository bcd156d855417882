"""A 3-D 'same' convolution computed in the frequency domain, its DFTs written as matrix products.

Why: W's mask conv (7x7x7, 144 -> 22 channels over a 16x64x64 volume) costs 142 GFLOP a frame as
a direct conv, the largest single cost of a render. In the frequency domain it is one 144 -> 22
complex matrix product per frequency (43k of them, ~1 GFLOP) plus the transforms.

Exact up to rounding (the convolution theorem): per axis, a circular convolution of size
N >= n + k // 2 over the zero-padded input equals the 'same' convolution (padding k // 2) on the
n outputs kept. The transforms are dense DFT matrices applied one axis at a time: GEMMs on tensor
cores, any N (the smallest valid one is used), no complex tensors, so torch.compile and CUDA graphs
take the module as it is.

Precision: every product runs in `compute_dtype` (fp16 on CUDA, with fp32 accumulation). Each
axis's forward DFT is scaled by 1/n, so every intermediate stays within about the input's (or
the output's) magnitude: an unscaled DC term of 65k voxels would overflow fp16. bf16 is refused:
its 8-bit mantissa made the output's error 10x that of the direct fp16 conv.
"""
from __future__ import annotations

import math

import torch
from torch import nn

_BITS = {torch.float16: torch.int16, torch.float32: torch.int32}


def _angles(frequencies: int, samples: int, size: int) -> torch.Tensor:
    """(frequencies, samples) angles 2 pi k n / N, float64."""
    k = torch.arange(frequencies, dtype=torch.float64)
    n = torch.arange(samples, dtype=torch.float64)
    return 2 * math.pi * torch.outer(k, n) / size


def _complex_dft(out_count: int, in_count: int, size: int, sign: int, out_major_reim: bool) -> torch.Tensor:
    """Real matrix of a complex DFT along one axis, acting on interleaved (re, im) values.

    Columns are indexed (reim, in) -- in the input's memory order, re/im major -- and rows
    (out, reim) when out_major_reim is False, else (reim, out). sign -1: forward (e^{-i theta}),
    +1: inverse (e^{+i theta}); no scaling."""
    angle = _angles(out_count, in_count, size)  # (out, in)
    cos, sin = torch.cos(angle), sign * torch.sin(angle)
    # out_re = cos * in_re - sin * in_im; out_im = sin * in_re + cos * in_im
    blocks = torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])  # (reim_out, reim_in, out, in)
    if out_major_reim:
        matrix = blocks.permute(0, 2, 1, 3)  # (reim_out, out, reim_in, in)
    else:
        matrix = blocks.permute(2, 0, 1, 3)  # (out, reim_out, reim_in, in)
    return matrix.reshape(2 * out_count, 2 * in_count)


class SpectralConv3d(nn.Module):
    """Computes `conv(x)` for a stride-1, padding-k//2 Conv3d with a cubic odd kernel, on inputs of
    one spatial size `volume` = (D, H, W). Output (B, out_channels, D, H, W) fp32, contiguous."""

    def __init__(self, conv: nn.Conv3d, volume: tuple[int, int, int], compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        kernel = tuple(conv.kernel_size)
        if len(set(kernel)) != 1 or kernel[0] % 2 == 0 or tuple(conv.padding) != (kernel[0] // 2,) * 3 \
                or tuple(conv.stride) != (1, 1, 1) or tuple(conv.dilation) != (1, 1, 1) or conv.groups != 1:
            raise ValueError("the spectral form covers stride-1 'same' 3-D convs with a cubic odd kernel")
        if compute_dtype not in _BITS:
            raise ValueError(f"compute_dtype must be fp16 or fp32, not {compute_dtype}")
        self.compute_dtype = compute_dtype
        self.volume = tuple(volume)
        self.out_channels, self.in_channels = conv.out_channels, conv.in_channels
        self.padded_outputs = -(-conv.out_channels // 4) * 4
        pad = kernel[0] // 2
        depth, height, width = self.volume
        self.sizes = (depth + pad, height + pad, width + pad)  # circular size per axis: no wrap-around reaches a kept output
        n_d, n_h, n_w = self.sizes
        self.half_width = n_w // 2 + 1  # rfft: frequencies 0 .. N/2 along w
        f_w = self.half_width

        # Forward: w (real -> complex), rows (reim, kw); h, then d (complex), cols (n, reim) as laid out, rows (reim, k).
        angle = _angles(f_w, width, n_w)
        forward_w = torch.cat([torch.cos(angle), -torch.sin(angle)]) / width
        forward_h = self._interleaved_columns(_complex_dft(n_h, height, n_h, -1, out_major_reim=True), height) / height
        forward_d = self._interleaved_columns(_complex_dft(n_d, depth, n_d, -1, out_major_reim=True), depth) / depth
        # Inverse: d then h (complex; rows (n, reim), columns (reim, k) as laid out), then w
        # (Hermitian half spectrum -> real): y = sum_k alpha_k (re cos - im sin) / N, alpha 1 at k = 0 and N/2.
        unscale = depth * height * width / (n_d * n_h * n_w)  # undo the forward's 1/n scaling, and the inverse's 1/N
        inverse_d = _complex_dft(depth, n_d, n_d, +1, out_major_reim=False) * unscale
        inverse_h = _complex_dft(height, n_h, n_h, +1, out_major_reim=False)
        alpha = torch.full((f_w, 1), 2.0, dtype=torch.float64)
        alpha[0] = 1
        if n_w % 2 == 0:
            alpha[-1] = 1
        angle = _angles(f_w, width, n_w)
        inverse_w = torch.cat([alpha * torch.cos(angle), -alpha * torch.sin(angle)])  # (2 f_w, width): rows (reim, kw)

        for name, matrix in (("forward_w", forward_w), ("forward_h", forward_h), ("forward_d", forward_d),
                             ("inverse_d", inverse_d), ("inverse_h", inverse_h), ("inverse_w", inverse_w)):
            self._register_bits(name, matrix.to(compute_dtype))
        self._register_bits("spectrum", self._kernel_spectrum(conv.weight.detach(), pad, compute_dtype))
        bias = conv.bias.detach() if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
        self._register_bits("bias", bias.float().reshape(1, -1, 1, 1, 1).clone())

    def _register_bits(self, name: str, tensor: torch.Tensor) -> None:
        """Stored as raw bits (int16 / int32): `.to(torch.bfloat16)` of the enclosing network must
        leave these alone (the forward needs fp16, the inverse fp32), `.to(device)` still moves them."""
        self.register_buffer(f"_{name}_bits", tensor.contiguous().view(_BITS[tensor.dtype]), persistent=False)

    def _get(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        return getattr(self, f"_{name}_bits").view(dtype)

    @staticmethod
    def _interleaved_columns(matrix: torch.Tensor, count: int) -> torch.Tensor:
        """Columns (reim, n) -> (n, reim): the axis's input arrives with re/im inside each sample."""
        return matrix.reshape(matrix.shape[0], 2, count).transpose(1, 2).reshape(matrix.shape[0], 2 * count)

    def _kernel_spectrum(self, weight: torch.Tensor, pad: int, dtype: torch.dtype) -> torch.Tensor:
        """(bins, C, 2 * O') = [Re | Im] of the kernel's DFT per frequency (kd, kh, kw), kw in the half spectrum.

        The 'same' cross-correlation y[m] = sum_t w[t] x[m + t - p] is the circular convolution of x
        with g[j] = w[p - j], whose DFT is G[k] = sum_t w[t] exp(-2 pi i k (p - t) / N): separable,
        so three small products per output channel (complex64: the table is stored in fp16 or fp32)."""
        n_d, n_h, n_w = self.sizes
        in_channels, taps = weight.shape[1], weight.shape[-1]

        def factors(frequencies: int, size: int) -> torch.Tensor:  # (frequencies, taps)
            k = torch.arange(frequencies, dtype=torch.float64)[:, None]
            t = torch.arange(taps, dtype=torch.float64)[None, :]
            return torch.exp(-2j * math.pi * k * (pad - t) / size).to(torch.complex64)

        e_d, e_h, e_w = factors(n_d, n_d), factors(n_h, n_h), factors(self.half_width, n_w)
        # Output channels padded to a multiple of 4 with zero columns: GEMM rows of 2 * 24 halves are 16-byte aligned.
        table = torch.zeros(2, self.padded_outputs, n_d * n_h * self.half_width, in_channels, dtype=dtype)
        for o, out_weight in enumerate(weight.float().cpu()):  # (C, k, k, k): one output channel at a time (memory)
            spectrum = torch.einsum("czyx,ax->czya", out_weight.to(torch.complex64), e_w)
            spectrum = torch.einsum("czya,by->czba", spectrum, e_h)
            spectrum = torch.einsum("czba,dz->dbac", spectrum, e_d).reshape(-1, in_channels)  # (bins, C)
            table[0, o], table[1, o] = spectrum.real, spectrum.imag
        return table.permute(2, 3, 0, 1).reshape(-1, in_channels, 2 * self.padded_outputs).to(weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        if tuple(x.shape[2:]) != self.volume or channels != self.in_channels:
            raise ValueError(f"SpectralConv3d was built for (B, {self.in_channels}, {self.volume}), got {tuple(x.shape)}")
        depth, height, width = self.volume
        n_d, n_h, _ = self.sizes
        f_w, outs, dtype = self.half_width, self.out_channels, self.compute_dtype
        # (B, D, H, W, C): a view of a channels-last-3d input, a copy otherwise.
        volume = x.permute(0, 2, 3, 4, 1).to(dtype).contiguous()
        spectrum = torch.matmul(self._get("forward_w", dtype), volume.view(batch * depth * height, width, channels))
        spectrum = torch.matmul(self._get("forward_h", dtype), spectrum.view(batch * depth, 2 * height, f_w * channels))
        spectrum = torch.matmul(self._get("forward_d", dtype),
                                spectrum.view(batch, 2 * depth, n_h * f_w * channels))  # (B, [reim, kd], [kh, kw, C])
        bins = n_d * n_h * f_w
        # Per frequency, one (2B, C) @ (C, 2 O') product: rows (b, reim of x) are a strided view (row
        # stride bins * C, batch stride C), so no copy; columns [Re | Im] of the kernel.
        rows = spectrum.view(batch, 2, bins, channels).permute(2, 0, 1, 3).reshape(bins, 2 * batch, channels)
        product = torch.bmm(rows, self._get("spectrum", dtype)).view(bins, batch, 2, 2, self.padded_outputs)
        x_re, x_im = product[:, :, 0, :, :outs], product[:, :, 1, :, :outs]  # (bins, B, [Kr | Ki], O)
        product = torch.stack([x_re[:, :, 0] - x_im[:, :, 1], x_re[:, :, 1] + x_im[:, :, 0]])  # (reim, bins, B, O)
        product = product.permute(2, 3, 0, 1).contiguous()  # (B, O, reim, bins)
        out = torch.matmul(self._get("inverse_d", dtype), product.view(batch * outs, 2 * n_d, n_h * f_w))
        out = torch.matmul(self._get("inverse_h", dtype), out.view(batch * outs * depth, 2 * n_h, f_w))
        out = torch.matmul(out.view(-1, 2 * f_w), self._get("inverse_w", dtype))
        return out.view(batch, outs, depth, height, width).float() + self._get("bias", torch.float32)
