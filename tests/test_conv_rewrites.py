"""The exact conv rewrites (runtime/engines/conv_rewrites.py) against the convs they replace."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from runtime.engines.conv_rewrites import RewrittenConv, _phase_plan

pytestmark = pytest.mark.unit

TOLERANCE = 1e-5  # fp32: the rewrites only reorder sums


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _conv(cls, *args, **kwargs):
    torch.manual_seed(1)
    return cls(*args, **kwargs)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_conv_of_an_upsampled_input_computed_at_low_resolution(scale):
    conv = _conv(torch.nn.Conv2d, 5, 7, 3, padding=1)
    x = _randn(2, 5, 6, 9)
    expected = conv(F.interpolate(x, scale_factor=scale, mode="nearest"))
    with torch.no_grad():
        got = RewrittenConv(conv, upsample=scale)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < TOLERANCE


def test_upsample_rewrite_shares_kernels_between_phases():
    """2x: two distinct window kernels per axis; 4x: three, phases 1 and 2 read one input row."""
    assert len(_phase_plan(2)[0]) == 2
    kernels, phase_kernel = _phase_plan(4)
    assert len(kernels) == 3 and phase_kernel[1] == phase_kernel[2]


@pytest.mark.parametrize("depth_slices", [False, True], ids=["conv3d", "depth-slices"])
def test_3d_conv_of_an_input_upsampled_in_h_and_w(depth_slices):
    conv = _conv(torch.nn.Conv3d, 5, 7, 3, padding=1)
    x = _randn(2, 5, 4, 6, 9)
    expected = conv(F.interpolate(x, scale_factor=(1, 2, 2)))
    with torch.no_grad():
        got = RewrittenConv(conv, upsample=2, depth_slices=depth_slices)(x)
    assert (got - expected).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("kernel", [3, 7])
def test_3d_conv_as_2d_conv_over_depth_slices(kernel):
    conv = _conv(torch.nn.Conv3d, 5, 7, kernel, padding=kernel // 2)
    x = _randn(2, 5, 4, 6, 9)
    with torch.no_grad():
        got = RewrittenConv(conv, depth_slices=True)(x)
    assert (got - conv(x)).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("align", [1, 16])
def test_conv_taps_as_channels(outputs, align):
    conv = _conv(torch.nn.Conv2d, 40, outputs, 7, padding=3)
    x = _randn(2, 40, 8, 9)
    rewritten = RewrittenConv(conv, taps_as_channels=True, align_outputs=align)
    assert rewritten.weight.shape[0] % align == 0
    with torch.no_grad():
        got = rewritten(x)
    assert (got - conv(x)).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("case", ["conv2d", "conv3d", "depth-slices", "upsample"])
def test_outputs_aligned_with_zero_channels_are_sliced_off(case):
    x = _randn(2, 5, 4, 6, 9) if case != "conv2d" and case != "upsample" else _randn(2, 5, 6, 9)
    conv = _conv(torch.nn.Conv2d if x.dim() == 4 else torch.nn.Conv3d, 5, 11, 3, padding=1)
    options = {"depth-slices": {"depth_slices": True}, "upsample": {"upsample": 2}}.get(case, {})
    rewritten = RewrittenConv(conv, align_outputs=16, **options)
    assert rewritten.weight.shape[0] % 16 == 0
    expected = conv(F.interpolate(x, scale_factor=2)) if case == "upsample" else conv(x)
    with torch.no_grad():
        got = rewritten(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < TOLERANCE


def test_rewrites_refuse_convs_they_do_not_cover():
    with pytest.raises(ValueError, match="same"):
        RewrittenConv(torch.nn.Conv2d(3, 3, 3, padding=0))
    with pytest.raises(ValueError, match="3x3"):
        RewrittenConv(torch.nn.Conv2d(3, 3, 5, padding=2), upsample=2)
    with pytest.raises(ValueError, match="3-D"):
        RewrittenConv(torch.nn.Conv2d(3, 3, 3, padding=1), depth_slices=True)


def test_rewritten_weights_follow_the_module_but_stay_out_of_state_dicts():
    module = torch.nn.Sequential(RewrittenConv(torch.nn.Conv2d(4, 4, 3, padding=1), upsample=2))
    assert module.state_dict() == {}
    module.to(torch.float64)
    assert module[0].weight.dtype == torch.float64 and module[0].gather_rows.dtype == torch.int64
