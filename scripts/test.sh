#!/usr/bin/env bash
# Run the test suite: installs what is missing (including the engines' CPU torch and test references),
# then runs pytest. With no arguments it runs every tier (what CI runs); extra arguments go to pytest:
#   ./scripts/test.sh -m "not slow"     the fast tier (under 3 minutes on a 2-core machine)
#   ./scripts/test.sh -m service -k health
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --dev
exec "${VENV:-.venv}/bin/python" -m pytest "$@"
