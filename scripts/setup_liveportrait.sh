#!/usr/bin/env bash
# Download the official LivePortrait checkpoints (MIT) from the Hugging Face repo KwaiVGI/LivePortrait
# into $MODELS_DIR/liveportrait/, in upstream's layout. Files already present with the right size are
# skipped; every file's size is checked against the hub's. Needs: python3 with huggingface_hub.
#   MODELS_DIR=/data/weights ./scripts/setup_liveportrait.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/runtime/pretrained_weights}"
PYTHON="${PYTHON:-python3}"
export MODELS_DIR

"$PYTHON" - <<'PY'
import os
import sys
from pathlib import Path

try:
    from huggingface_hub import HfApi, hf_hub_download
except ImportError:
    sys.exit("huggingface_hub is missing: pip install huggingface_hub (or the 'engines' extra)")

REPO = "KwaiVGI/LivePortrait"
FILES = [
    "liveportrait/base_models/appearance_feature_extractor.pth",
    "liveportrait/base_models/motion_extractor.pth",
    "liveportrait/base_models/warping_module.pth",
    "liveportrait/base_models/spade_generator.pth",
    "liveportrait/retargeting_models/stitching_retargeting_module.pth",
]
models_dir = Path(os.environ["MODELS_DIR"])
expected = {info.path: info.size for info in HfApi().get_paths_info(REPO, FILES)}
missing_on_hub = sorted(set(FILES) - set(expected))
if missing_on_hub:
    sys.exit(f"{REPO} no longer has {missing_on_hub}")

for name in FILES:
    target = models_dir / name
    if target.is_file() and target.stat().st_size == expected[name]:
        print(f"present  {target}")
        continue
    print(f"download {name} ({expected[name] / 1e6:.1f} MB)")
    hf_hub_download(REPO, name, local_dir=models_dir)  # shows a progress bar
    size = target.stat().st_size
    if size != expected[name]:
        sys.exit(f"{target} has {size} bytes, the hub says {expected[name]}: delete it and run again")
print(f"LivePortrait checkpoints ready in {models_dir / 'liveportrait'}")
PY
