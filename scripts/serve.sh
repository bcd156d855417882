#!/usr/bin/env bash
# Start the service: installs what is missing for the configured backends, then serves on PORT (8001).
#   ./scripts/serve.sh                              embedded default (Piper + meshwarp), CPU, no download
#   AVATAR_BACKEND=liveportrait ./scripts/serve.sh  adds the engines (torch); weights: scripts/setup_liveportrait.sh
#   SERVE_ENGINE=ray ./scripts/serve.sh             the same service on Ray Serve (adds the ray extra): a local
#                                                   Ray cluster with serve_config.yaml, one replica per GPU,
#                                                   autoscaling; with RAY_ADDRESS set, onto that cluster instead
set -euo pipefail
cd "$(dirname "$0")/.."
case "${SERVE_ENGINE:=uvicorn}" in
  uvicorn|ray) ;;
  *) echo "SERVE_ENGINE is uvicorn (one process, the default) or ray, not '$SERVE_ENGINE'" >&2; exit 2 ;;
esac
./scripts/install.sh
if [[ "$SERVE_ENGINE" == "ray" ]]; then
  exec "${VENV:-.venv}/bin/python" -m runtime.serve_app "$@"
fi
exec "${VENV:-.venv}/bin/python" -m runtime.gpu_service
