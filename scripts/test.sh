#!/usr/bin/env bash
# Run the test suite: installs what is missing (including the engines' CPU torch and test references),
# then runs pytest. With no arguments it runs every tier (what CI runs); extra arguments go to pytest:
#   ./scripts/test.sh -m "not slow" -n 2   the fast tier on two pytest-xdist workers (under 3 minutes on 2 cores)
#   ./scripts/test.sh -m service -k health
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --dev
exec "${VENV:-.venv}/bin/python" -m pytest "$@"
