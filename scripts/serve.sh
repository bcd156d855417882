#!/usr/bin/env bash
# Start the service: installs what is missing for the configured backends, then serves on PORT (8001).
#   ./scripts/serve.sh                              embedded default (Piper + meshwarp), CPU, no download
#   AVATAR_BACKEND=liveportrait ./scripts/serve.sh  adds the engines (torch); weights: scripts/setup_liveportrait.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec "${VENV:-.venv}/bin/python" -m runtime.gpu_service
