"""scripts/setup_voices.sh: a language or voice name becomes the official rhasspy/piper-voices file
pair, laid out where PIPER_VOICES_DIR looks. The download itself is hf_fetch.py's (stood in for here)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.packaging


def run_setup(tmp_path: Path, *names: str) -> subprocess.CompletedProcess:
    # A stand-in python: writes the files hf_fetch.py would have fetched (REPO TARGET FILE...).
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\nshift\nrepo="$1"; target="$2"; shift 2\necho "$repo" >> "$target.repos"\n'
                    'for f in "$@"; do mkdir -p "$target/$(dirname "$f")"; echo x > "$target/$f"; done\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "PIPER_VOICES_DIR": str(tmp_path / "voices")}
    return subprocess.run(["bash", str(REPO / "scripts/setup_voices.sh"), *names], env=env, capture_output=True, text=True)


def test_a_language_fetches_its_official_voice_into_the_voices_folder(tmp_path):
    result = run_setup(tmp_path, "de", "fr_FR-siwis-medium")
    assert result.returncode == 0, result.stderr
    voices = tmp_path / "voices"
    for name, path in (("de_DE-thorsten-medium", "de/de_DE/thorsten/medium"), ("fr_FR-siwis-medium", "fr/fr_FR/siwis/medium")):
        assert (voices / f"{name}.onnx").resolve() == (voices / ".hub" / path / f"{name}.onnx").resolve()
        assert (voices / f"{name}.onnx.json").is_file()
    assert (voices / ".hub.repos").read_text().split() == ["rhasspy/piper-voices"] * 2


def test_an_unknown_language_is_refused_with_the_known_ones(tmp_path):
    result = run_setup(tmp_path, "xx")
    assert result.returncode == 2
    assert "unknown language or voice 'xx'" in result.stderr and " de " in f" {result.stderr} "
