#!/usr/bin/env bash
# Set up what is missing: a virtual environment with the packages the configured backends need.
# Used by serve.sh, test.sh and Dockerfile.gpu-service alike, so all three install the same way.
#
#   scripts/install.sh            light default (Piper + meshwarp), plus what AVATAR_BACKEND / TTS_ENGINE /
#                                 SERVE_ENGINE=ray need
#   scripts/install.sh --dev      everything the test suite needs (engines on the CPU build of torch, references)
#
# Environment: VENV (default .venv), PYTHON (default python3), AVATAR_BACKEND, TTS_ENGINE, SERVE_ENGINE,
# TORCH_VERSION (the torch installed, pinned so pip never picks a build for you: default 2.13.0, or
# 2.9.1 with TTS_ENGINE=coqui, whose torchaudio exists for that torch only).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

extras=()
case "${AVATAR_BACKEND:-auto}" in
  liveportrait|sadtalker) extras+=(engines) ;;
  auto) has_gpu && extras+=(engines) ;;
esac
[[ "${TTS_ENGINE:-auto}" == "coqui" ]] && extras+=(coqui)
[[ "${SERVE_ENGINE:-uvicorn}" == "ray" ]] && extras+=(ray)
if (( DEV )); then extras+=(engines dev); fi
extras_csv=$(printf '%s\n' "${extras[@]}" | sort -u | paste -sd, -)
if [[ ",$extras_csv," == *",coqui,"* ]]; then
  TORCH_VERSION=${TORCH_VERSION:-2.9.1}
else
  TORCH_VERSION=${TORCH_VERSION:-2.13.0}
fi

# Skip the whole install when nothing it depends on changed since the last one.
stamp_key=$(cat pyproject.toml scripts/install.sh scripts/test-references.txt 2>/dev/null | sha256sum | cut -c1-16)
stamp="$VENV/.installed-${stamp_key}-${extras_csv:-base}"
if [[ -f "$stamp" ]]; then
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "Creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

if [[ ",$extras_csv," == *",engines,"* || ",$extras_csv," == *",coqui,"* ]] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "Installing torch==$TORCH_VERSION"
  "${pip[@]}" install -q "torch==$TORCH_VERSION"
fi

target="."
[[ -n "$extras_csv" ]] && target=".[${extras_csv}]"
echo "Installing $target"
"${pip[@]}" install -q -e "$target"

if (( DEV )); then
  # Upstream packagings used only as references in equivalence tests; their own pins would
  # replace our torch and numpy, so they come without dependencies.
  echo "Installing test references"
  "${pip[@]}" install -q --no-deps -r scripts/test-references.txt
  # The page test drives Debian's chromium through Playwright (no browser download).
  if ! command -v chromium >/dev/null 2>&1; then
    echo "Installing chromium (apt)"
    if [[ $(id -u) -eq 0 ]]; then apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }
    else sudo apt-get install -y -q chromium; fi
  fi
fi

rm -f "$VENV"/.installed-*
touch "$stamp"
