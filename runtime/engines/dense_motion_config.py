"""The dense-motion network's hyperparameters, apart from its torch code: the engines' configs
import it, and a backend's weights_present() reads those configs on the light install, which has
no torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DenseMotionConfig:
    """The dense-motion network's 3-D hourglass (both engines' checkpoints use these values)."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4
