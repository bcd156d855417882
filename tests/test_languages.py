"""A text is read by a voice of its own language, or refused with the languages that are installed."""
from __future__ import annotations

import json
import shutil

import pytest

from runtime.config import Settings
from runtime.device import DeviceChoice
from runtime.errors import InvalidTextError, UnsupportedLanguageError
from runtime.tts.language import LanguageDetector
from runtime.tts.piper_engine import BUNDLED_VOICE, PiperEngine, _bundled_voice_files

from .server import start_server

CPU = DeviceChoice("cpu", "test", False)
GERMAN = "Guten Morgen, wie geht es Ihnen heute? Das Wetter ist schön."
GERMAN_VOICE = "de_DE-test-medium"


def german_voice_folder(folder):
    """A voice in Piper's official file layout (<name>.onnx + <name>.onnx.json) that reads German:
    the bundled network with a German config (espeak voice "de", language de_DE)."""
    model, config = _bundled_voice_files()
    settings = json.loads(config.read_text(encoding="utf-8"))
    settings["espeak"] = {"voice": "de"}
    settings["language"] = {"code": "de_DE", "family": "de", "region": "DE", "name_native": "Deutsch",
                            "name_english": "German", "country_english": "Germany"}
    settings["dataset"] = "test"
    shutil.copy(model, folder / f"{GERMAN_VOICE}.onnx")
    (folder / f"{GERMAN_VOICE}.onnx.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


@pytest.mark.unit
@pytest.mark.parametrize("text, language", [
    ("Look, this is my own photo.", "en"),
    (GERMAN, "de"),
    ("Bonjour tout le monde, comment allez-vous?", "fr"),
    ("你好，今天天气怎么样？", "zh"),
    ("Привет, как дела?", "ru"),
])
def test_language_of_a_text_is_recognised(text, language):
    guess = LanguageDetector().detect(text)
    assert guess.language == language and guess.decisive


@pytest.mark.unit
def test_a_short_ambiguous_text_is_never_refused():
    assert not LanguageDetector().detect("Hallo Welt.").decisive  # langid scores this Italian
    engine = PiperEngine.load(Settings(), CPU)
    assert engine.voice_for("Hallo Welt.") == BUNDLED_VOICE


@pytest.mark.unit
def test_german_text_uses_an_installed_german_voice(tmp_path):
    engine = PiperEngine.load(Settings(piper_voices_dir=german_voice_folder(tmp_path)), CPU)
    assert engine.voice_languages() == {BUNDLED_VOICE: "en_US", GERMAN_VOICE: "de_DE"}
    assert engine.voice_for(GERMAN) == GERMAN_VOICE
    assert engine.voice_for("Good morning, how are you today?") == BUNDLED_VOICE
    # The German voice's phonemizer reads it: German phonemes, not English ones.
    german_phonemes = engine._voice(GERMAN_VOICE).phonemize("schön")
    english_phonemes = engine._voice(BUNDLED_VOICE).phonemize("schön")
    assert german_phonemes != english_phonemes
    assert engine.synthesize(GERMAN).duration > 2.0


@pytest.mark.unit
def test_german_text_without_a_german_voice_is_refused_naming_the_installed_languages():
    engine = PiperEngine.load(Settings(), CPU)
    with pytest.raises(UnsupportedLanguageError, match="en_US"):
        engine.synthesize(GERMAN)
    anyway = PiperEngine.load(Settings(speak_unsupported_languages=True), CPU)
    assert anyway.synthesize(GERMAN).duration > 2.0


@pytest.mark.unit
def test_emoji_only_text_has_nothing_to_say():
    engine = PiperEngine.load(Settings(), CPU)
    with pytest.raises(InvalidTextError, match="nothing to say"):
        engine.synthesize("🙂👍🏽🎉")


@pytest.mark.service  # the other tests here are unit tests
def test_service_speaks_german_with_a_german_voice_and_refuses_it_without(tmp_path, default_server):
    folder = german_voice_folder(tmp_path)
    with start_server(PIPER_VOICES_DIR=str(folder), MODELS_DIR=str(tmp_path / "no-models")) as server:
        with server.client() as client:
            health = client.get("/health").json()
            assert health["detail"]["tts"]["voice_languages"][GERMAN_VOICE] == "de_DE"
            spoken = client.post("/generate", json={"text": GERMAN})
            assert spoken.status_code == 200, spoken.text
            emoji_only = client.post("/generate", json={"text": "🙂👍🏽"})
            assert emoji_only.status_code == 422 and emoji_only.json()["error"] == "invalid_text"
    with default_server.client() as client:  # the bundled English voice only
        refused = client.post("/generate", json={"text": GERMAN})
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"] == "unsupported_language" and "en_US" in body["detail"] and body["request_id"]
