#!/usr/bin/env bash
# Download the official SyncNet v2 weights (joonson/syncnet_python's download_model.sh source, the VGG
# group's site) into $MODELS_DIR/syncnet/syncnet_v2.model, for the LSE-C / LSE-D scores of
# POST /evaluate, `avatar score` and scripts/compare_backends.py. Skipped when already present.
#   MODELS_DIR=/data/weights ./scripts/setup_syncnet.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/runtime/pretrained_weights}"
URL="${SYNCNET_URL:-http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model}"
TARGET="$MODELS_DIR/syncnet/syncnet_v2.model"

mkdir -p "$(dirname "$TARGET")"
if [ -s "$TARGET" ]; then
  echo "present  $TARGET"
else
  echo "download $URL"
  curl -fL --retry 3 -o "$TARGET.part" "$URL"
  mv "$TARGET.part" "$TARGET"
fi
echo "SyncNet weights ready: $TARGET"
