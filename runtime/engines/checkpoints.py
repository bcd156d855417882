"""Checkpoint handling both engines share: the error they raise, and folding spectral norm."""
from __future__ import annotations

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


def fold_spectral_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every (weight_orig, weight_u, weight_v) triple by the eval-mode weight.

    In eval mode torch's spectral norm does no power iteration: it divides weight_orig by
    sigma = u . (W v), W = weight_orig reshaped to (out, -1), with the stored u and v (fp32, as
    torch computes it)."""
    folded: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith((".weight_u", ".weight_v")):
            continue
        if key.endswith(".weight_orig"):
            prefix = key[: -len("weight_orig")]
            try:
                u, v = state_dict[prefix + "weight_u"], state_dict[prefix + "weight_v"]
            except KeyError as missing:
                raise CheckpointError(f"spectral-norm weight {key} has no {missing.args[0]}") from None
            weight = value.float()
            sigma = torch.dot(u.float(), weight.reshape(weight.shape[0], -1) @ v.float())
            folded[prefix + "weight"] = (weight / sigma).to(value.dtype)
        else:
            folded[key] = value
    return folded
