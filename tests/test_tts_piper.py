"""The default TTS engine: the bundled voice, extra voices from a folder, clear errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from runtime.config import Settings
from runtime.device import DeviceChoice
from runtime.errors import BackendUnavailable, UnknownVoiceError
from runtime.tts.factory import load_tts_engine
from runtime.tts.piper_engine import BUNDLED_VOICE, PiperEngine, _bundled_voice_files

pytestmark = pytest.mark.unit

CPU = DeviceChoice("cpu", "test", False)


def test_bundled_voice_speaks_at_a_plausible_rate():
    engine, selection = load_tts_engine(Settings(tts_engine="auto"), CPU)
    assert selection.loaded == "piper" and engine.default_voice == BUNDLED_VOICE
    speech = engine.synthesize("The quick brown fox jumps over the lazy dog.")
    assert speech.sample_rate == 22050 and speech.samples.dtype == np.float32
    assert 1.5 < speech.duration < 5.0  # nine words
    assert np.abs(speech.samples).max() > 0.1


def test_voices_folder_adds_voices_by_file_name(tmp_path):
    model, config = _bundled_voice_files()
    shutil.copy(config, tmp_path / "en_US-second-medium.onnx.json")
    (tmp_path / "en_US-second-medium.onnx").symlink_to(model)
    (tmp_path / "orphan.onnx").symlink_to(model)  # no config: skipped
    engine = PiperEngine.load(Settings(piper_voices_dir=tmp_path), CPU)
    assert engine.voices() == [BUNDLED_VOICE, "en_US-second-medium"]
    assert engine.synthesize("Second voice.", voice="en_US-second-medium").duration > 0.3
    with pytest.raises(UnknownVoiceError, match="available: en_US-joe-medium, en_US-second-medium"):
        engine.synthesize("Hello.", voice="orphan")


def test_missing_voices_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailable, match="is not a folder"):
        PiperEngine.load(Settings(piper_voices_dir=tmp_path / "nope"), CPU)
