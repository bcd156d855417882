"""The official LivePortrait checkpoint layout under MODELS_DIR/liveportrait (as upstream ships it).

Kept free of torch so the backend factory can ask whether the weights are there on a light install.
"""
from __future__ import annotations

from pathlib import Path

BASE_MODEL_FILES = {
    "appearance_feature_extractor": "base_models/appearance_feature_extractor.pth",
    "motion_extractor": "base_models/motion_extractor.pth",
    "warping_module": "base_models/warping_module.pth",
    "spade_generator": "base_models/spade_generator.pth",
}
RETARGETING_FILE = "retargeting_models/stitching_retargeting_module.pth"
ALL_FILES = tuple(BASE_MODEL_FILES.values()) + (RETARGETING_FILE,)


def missing_files(liveportrait_dir: Path) -> list[Path]:
    """Official files absent under `liveportrait_dir` (MODELS_DIR/liveportrait)."""
    return [liveportrait_dir / name for name in ALL_FILES if not (liveportrait_dir / name).is_file()]
