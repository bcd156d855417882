"""Schemathesis against the real server's /openapi.json: generated requests (valid and invalid, a
bounded number) never get a 5xx, and every answer matches the schema (status, content type, body)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .server import start_server

pytestmark = [pytest.mark.service, pytest.mark.slow]

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(found).exists():
        pytest.fail("schemathesis is not installed: it is in the dev extra (pip install -e '.[dev]')")
    return found


def test_generated_requests_get_no_5xx_and_answers_match_the_schema(tmp_path):
    with start_server(MODELS_DIR=str(tmp_path / "none"), DATA_DIR=str(tmp_path / "data")) as server:
        run = subprocess.run(
            [_schemathesis(), "run", f"{server.url}/openapi.json", "--checks", CHECKS,
             "--phases", "coverage,fuzzing", "--max-examples", "5", "--max-time", "90", "--seed", "13",
             "--request-timeout", "60", "--workers", "1", "--suppress-health-check", "all", "--no-shrink"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,  # its .schemathesis/ cache goes there
        )
        assert server.alive()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1]
