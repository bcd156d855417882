#!/usr/bin/env bash
# Download the official LivePortrait checkpoints (MIT) from the Hugging Face repo KwaiVGI/LivePortrait
# into $MODELS_DIR/liveportrait/, in upstream's layout. Files already present with the right size are
# skipped; every file's size is checked against the hub's. Needs: python3 with huggingface_hub.
#   MODELS_DIR=/data/weights ./scripts/setup_liveportrait.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/runtime/pretrained_weights}"
PYTHON="${PYTHON:-python3}"

# The repo keeps them under liveportrait/, as MODELS_DIR does.
"$PYTHON" "$REPO_ROOT/scripts/hf_fetch.py" KwaiVGI/LivePortrait "$MODELS_DIR" \
  liveportrait/base_models/appearance_feature_extractor.pth \
  liveportrait/base_models/motion_extractor.pth \
  liveportrait/base_models/warping_module.pth \
  liveportrait/base_models/spade_generator.pth \
  liveportrait/retargeting_models/stitching_retargeting_module.pth
echo "LivePortrait checkpoints ready in $MODELS_DIR/liveportrait"
