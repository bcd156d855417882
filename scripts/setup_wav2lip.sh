#!/usr/bin/env bash
# Download the official Wav2Lip checkpoint for the lip refiner (LIP_REFINER=wav2lip) into
# $MODELS_DIR/wav2lip/, named as the official release names it. The official release sits on a
# SharePoint folder that scripts cannot fetch reliably; the Hugging Face repo camenduru/Wav2Lip mirrors
# the same files (checkpoints/wav2lip_gan.pth, checkpoints/wav2lip.pth). Files already present with
# the hub's size are skipped. Needs: python3 with huggingface_hub (the engines extra).
#   MODELS_DIR=/data/weights ./scripts/setup_wav2lip.sh            # wav2lip_gan.pth (sharper mouths)
#   WAV2LIP_CHECKPOINTS="wav2lip_gan wav2lip" ./scripts/setup_wav2lip.sh   # both releases
# Licence: Wav2Lip's checkpoints are for research and non-commercial use (see Rudrabha/Wav2Lip).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/runtime/pretrained_weights}"
PYTHON="${PYTHON:-python3}"
MIRROR="camenduru/Wav2Lip"
TARGET="$MODELS_DIR/wav2lip"

for name in ${WAV2LIP_CHECKPOINTS:-wav2lip_gan}; do
  # hf_fetch keeps the repo's path (checkpoints/...) under .hub; the official name is a hard link to it.
  "$PYTHON" "$REPO_ROOT/scripts/hf_fetch.py" "$MIRROR" "$TARGET/.hub" "checkpoints/$name.pth"
  ln -f "$TARGET/.hub/checkpoints/$name.pth" "$TARGET/$name.pth" 2>/dev/null \
    || cp -f "$TARGET/.hub/checkpoints/$name.pth" "$TARGET/$name.pth"
done
echo "Wav2Lip checkpoints ready in $TARGET; serve with LIP_REFINER=wav2lip"
