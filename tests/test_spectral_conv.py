"""The frequency-domain 3-D conv (runtime/engines/liveportrait/spectral_conv.py) against F.conv3d."""
from __future__ import annotations

import pytest
import torch

from runtime.engines.spectral_conv import SpectralConv3d

pytestmark = pytest.mark.unit


def _conv(in_channels: int, out_channels: int, kernel: int, bias: bool = True) -> torch.nn.Conv3d:
    torch.manual_seed(1)
    return torch.nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Volumes whose circular sizes (n + k // 2) are odd and even along each axis; W's mask conv shape last.
@pytest.mark.parametrize("channels, kernel, volume", [
    ((5, 3), 7, (6, 9, 10)),
    ((4, 2), 3, (5, 8, 7)),
    ((3, 4), 5, (4, 4, 11)),
    pytest.param((6, 22), 7, (16, 64, 64), marks=pytest.mark.slow),
], ids=["k7-odd-even", "k3", "k5-thin", "mask-conv-volume"])
def test_matches_the_direct_conv(channels, kernel, volume):
    conv = _conv(*channels, kernel)
    x = _randn(2, channels[0], *volume)
    spectral = SpectralConv3d(conv, volume)
    with torch.no_grad():
        expected = conv(x)
        got = spectral(x)
        got_channels_last = spectral(x.contiguous(memory_format=torch.channels_last_3d))
    assert got.shape == expected.shape and got.dtype == torch.float32 and got.is_contiguous()
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 2e-5
    assert (got_channels_last - expected).abs().max().item() <= 2e-5


def test_without_bias_and_with_a_single_output():
    conv = _conv(4, 1, 3, bias=False)
    x = _randn(1, 4, 5, 6, 7, seed=2)
    with torch.no_grad():
        assert (SpectralConv3d(conv, (5, 6, 7))(x) - conv(x)).abs().max().item() <= 1e-5


def test_half_precision_transforms_stay_close_to_fp32():
    """fp16 transforms and product (each forward axis scaled by 1/n): error a few times a direct fp16
    conv's, far from fp16's range limits even on a large positive (ReLU-like) input."""
    conv = _conv(16, 8, 7)
    x = 4 * _randn(2, 16, 8, 24, 24, seed=3).abs()
    with torch.no_grad():
        expected = conv(x)
        got = SpectralConv3d(conv, (8, 24, 24), torch.float16)(x.half())
        direct_fp16 = torch.nn.functional.conv3d(x.half().float(), conv.weight.half().float(), conv.bias, padding=3)
    assert torch.isfinite(got).all()
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 2e-3 * scale  # measured 9e-4
    assert (got - expected).abs().mean().item() <= 4 * (direct_fp16 - expected).abs().mean().item()  # measured 2.8x


def test_buffers_keep_their_dtypes_and_stay_out_of_state_dicts():
    """The network is cast to bf16 for rendering; the spectral module's fp16/fp32 tables must not be."""
    conv = _conv(3, 2, 3)
    module = torch.nn.Sequential(SpectralConv3d(conv, (4, 5, 6), torch.float16))
    assert module.state_dict() == {}
    x = _randn(1, 3, 4, 5, 6)
    with torch.no_grad():
        before = module(x)
        module.to(torch.bfloat16)
        after = module(x)
    assert all(not buffer.is_floating_point() for buffer in module.buffers())
    assert torch.equal(before, after)


def test_refuses_what_it_does_not_cover():
    with pytest.raises(ValueError, match="cubic odd"):
        SpectralConv3d(torch.nn.Conv3d(2, 2, (3, 3, 5), padding=(1, 1, 2)), (4, 4, 4))
    with pytest.raises(ValueError, match="cubic odd"):
        SpectralConv3d(torch.nn.Conv3d(2, 2, 3, padding=0), (4, 4, 4))
    with pytest.raises(ValueError, match="fp16 or fp32"):
        SpectralConv3d(torch.nn.Conv3d(2, 2, 3, padding=1), (4, 4, 4), torch.bfloat16)
    spectral = SpectralConv3d(torch.nn.Conv3d(2, 2, 3, padding=1), (4, 4, 4))
    with pytest.raises(ValueError, match="built for"):
        spectral(torch.zeros(1, 2, 4, 4, 5))
