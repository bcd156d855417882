"""Coqui where coqui-tts is not installed (the default and dev installs): the module stays cheap to
import, auto picks piper, and an explicit TTS_ENGINE=coqui falls back to Piper with a logged reason
that /health repeats. Runs in the main venv; the real Coqui model is in test_coqui_service.py."""
from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys

import pytest

from runtime.config import Settings
from runtime.device import DeviceChoice
from runtime.tts import coqui_engine
from runtime.tts.factory import load_tts_engine

from .server import REPO, start_server

pytestmark = pytest.mark.service

CPU = DeviceChoice("cpu", "test", torch_available=False)
XTTS = "tts_models/multilingual/multi-dataset/xtts_v2"
VITS = "tts_models/en/ljspeech/vits"

coqui_missing = pytest.mark.skipif(
    importlib.util.find_spec("TTS") is not None, reason="coqui-tts is installed in this venv"
)


def test_importing_the_coqui_module_imports_neither_torch_nor_tts():
    probe = (
        "import json, sys\n"
        "from runtime.tts.coqui_engine import named_model_downloaded\n"
        f"downloaded = named_model_downloaded({XTTS!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'TTS': 'TTS' in sys.modules, 'downloaded': downloaded}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "TTS": False, "downloaded": False}


@pytest.fixture
def fake_coqui_install(tmp_path, monkeypatch):
    """A `TTS` package that only has the model catalogue: found by find_spec, never imported
    (its __init__ raises), as the real one would need torch. TTS_HOME points at an empty folder."""
    package = tmp_path / "site" / "TTS"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('the catalogue lookup must not import TTS')\n")
    catalogue = {
        "tts_models": {
            "en": {"ljspeech": {"vits": {"github_rls_url": "https://example.invalid/vits.zip"}}},
            "multilingual": {"multi-dataset": {"xtts_v2": {"repo_id": "tts-hub/XTTS-v2", "tos_required": True}}},
        }
    }
    (package / ".models.json").write_text(json.dumps(catalogue))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    home = tmp_path / "tts-home"
    monkeypatch.setenv("TTS_HOME", str(home))
    monkeypatch.delenv("COQUI_TOS_AGREED", raising=False)
    return home / "tts"


def test_named_model_is_found_where_coqui_downloads_it(fake_coqui_install):
    assert coqui_engine.coqui_data_dir() == fake_coqui_install
    status = coqui_engine.named_model_status(VITS)
    assert not status.present and "scripts/setup_coqui.sh" in status.reason
    folder = fake_coqui_install / "tts_models--en--ljspeech--vits"
    folder.mkdir(parents=True)
    (folder / "model_file.pth").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    assert coqui_engine.named_model_downloaded(VITS)


def test_named_model_lookup_never_raises(fake_coqui_install):
    assert not coqui_engine.named_model_downloaded("vits")  # not type/language/dataset/model
    assert not coqui_engine.named_model_downloaded("tts_models/en/ljspeech/nope")
    status = coqui_engine.named_model_status("tts_models/en/ljspeech/nope")
    assert "is not a model coqui-tts knows" in status.reason


def test_xtts_needs_its_terms_agreed_before_it_counts_as_present(fake_coqui_install, monkeypatch):
    status = coqui_engine.named_model_status(XTTS)
    assert not status.present and status.tos_required and "license terms" in status.reason
    monkeypatch.setenv("COQUI_TOS_AGREED", "1")
    status = coqui_engine.named_model_status(XTTS)
    assert not status.present and "not downloaded" in status.reason  # agreed, but not in the HF cache


@coqui_missing
def test_auto_picks_piper_when_the_coqui_model_is_absent():
    engine, selection = load_tts_engine(Settings(tts_engine="auto", coqui_model=XTTS), CPU)
    assert engine.name == "piper"
    assert selection.as_dict() == {"requested": "auto", "loaded": "piper", "fallback_reason": None}


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({}, "needs COQUI_MODEL"),
        ({"coqui_model_path": "/nonexistent/model.pth"}, "does not exist"),
        ({"coqui_model": XTTS}, "coqui-tts is not installed"),
    ],
)
@coqui_missing
def test_explicit_coqui_that_cannot_load_falls_back_to_piper(settings, reason, caplog):
    caplog.set_level(logging.INFO)
    engine, selection = load_tts_engine(Settings(tts_engine="coqui", **settings), CPU)
    assert engine.name == "piper" and selection.loaded == "piper"
    assert reason in selection.fallback_reason
    assert "Failed to load Coqui TTS" in caplog.text and "Falling back to Piper" in caplog.text


@coqui_missing
def test_service_falls_back_to_piper_and_says_why(tmp_path):
    """A user's checkpoint is all there, but coqui-tts is not installed: piper speaks instead."""
    model, config = tmp_path / "model.pth", tmp_path / "config.json"
    model.write_bytes(b"not read: the import fails first")
    config.write_text("{}")
    env = dict(
        TTS_ENGINE="coqui", COQUI_MODEL_PATH=str(model), COQUI_CONFIG_PATH=str(config),
        AVATAR_BACKEND="meshwarp", MODELS_DIR=str(tmp_path / "no-models"),
    )
    with start_server(**env) as server:
        tts = server.health()["detail"]["tts"]
        assert tts["requested"] == "coqui" and tts["loaded"] == "piper" and tts["engine"] == "piper"
        assert "coqui-tts cannot be imported" in tts["fallback_reason"]
        assert "pip install .[coqui]" in tts["fallback_reason"]
        log = server.log()
        assert "ERROR - Failed to load Coqui TTS: coqui-tts cannot be imported" in log
        assert "INFO - Falling back to Piper..." in log
        with server.client() as client:
            response = client.post("/generate", json={"text": "Piper speaks instead."})
        assert response.status_code == 200, response.text
        assert response.headers["x-tts-engine"] == "piper"
