#!/usr/bin/env bash
# Download the official SadTalker checkpoints (v0.0.2-rc, Apache-2.0) from the Hugging Face repo
# vinthony/SadTalker-V002rc into $MODELS_DIR/sadtalker/, in upstream's file layout:
#   SadTalker_V0.0.2_256.safetensors, SadTalker_V0.0.2_512.safetensors,
#   mapping_00109-model.pth.tar, mapping_00229-model.pth.tar
# Downloads resume where an interrupted one stopped; files already present with the hub's size
# are skipped; every file's size is checked against the hub's. Needs python3 with huggingface_hub.
#   MODELS_DIR=/data/weights ./scripts/setup_sadtalker.sh
#   SADTALKER_SIZES=256 ./scripts/setup_sadtalker.sh      # skip the 512 model (725 MB less)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/runtime/pretrained_weights}"
SADTALKER_SIZES="${SADTALKER_SIZES:-256 512}"
PYTHON="${PYTHON:-python3}"

files=()
for size in $SADTALKER_SIZES; do
  case "$size" in
    256|512) files+=("SadTalker_V0.0.2_${size}.safetensors") ;;
    *) echo "SADTALKER_SIZES must list 256 and/or 512, got '$SADTALKER_SIZES'" >&2; exit 2 ;;
  esac
done
# mapping_00109: the paste-back ("full") mapping net the service uses; mapping_00229: crop-only.
files+=(mapping_00109-model.pth.tar mapping_00229-model.pth.tar)
"$PYTHON" "$REPO_ROOT/scripts/hf_fetch.py" vinthony/SadTalker-V002rc "$MODELS_DIR/sadtalker" "${files[@]}"
echo "SadTalker checkpoints ready in $MODELS_DIR/sadtalker"
