"""Inference-time fusion both engines' SPADE decoders use."""
from __future__ import annotations

import torch
from torch import nn


def concat_convs(convs: list[nn.Conv2d]) -> nn.Conv2d:
    """One conv computing several same-input convs at once (outputs concatenated on channels,
    in the order given): one wide GEMM instead of several narrow ones. Exact."""
    first = convs[0]
    fused = nn.Conv2d(first.in_channels, sum(c.out_channels for c in convs), kernel_size=first.kernel_size,
                      padding=first.padding).to(first.weight.device, first.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([c.weight for c in convs]))
        fused.bias.copy_(torch.cat([c.bias for c in convs]))
    return fused
