#!/usr/bin/env bash
# Run the test suite: installs what is missing (including the engines' CPU torch and test references),
# then runs pytest. Extra arguments go to pytest, e.g. ./scripts/test.sh -k health
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --dev
exec "${VENV:-.venv}/bin/python" -m pytest "$@"
