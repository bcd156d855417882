"""Which language a text is written in, so that a voice of that language reads it.

Detection is py3langid's (langid.py's model, bundled in its wheel: offline, ~1 MB, numpy only),
limited to the languages Piper has voices for plus a few it has none for but users write in.
Short texts are ambiguous ("Hallo Welt." scores as Italian), so a guess is only *decisive* when the
text is long enough and the model sure, or its script alone says it (Han, kana, Hangul...).
"""
from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass

# Languages of the official Piper voices (rhasspy/piper-voices), as ISO 639-1 family codes, plus
# widely written ones without a Piper voice, so that their texts are recognised rather than
# mistaken for the nearest voiced language.
PIPER_LANGUAGES = (
    "ar", "ca", "cs", "cy", "da", "de", "el", "en", "es", "fa", "fi", "fr", "hu", "is", "it", "ka",
    "kk", "lb", "lv", "ml", "ne", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sl", "sr", "sv", "sw",
    "tr", "uk", "vi", "zh", "hi", "id",
)
UNVOICED_LANGUAGES = ("ja", "ko", "he", "th", "bg", "hr", "et", "lt", "ms", "tl", "bn", "ta", "ur")
_MIN_WORDS = 3  # fewer distinct words than this never decide a language on their own
_MIN_CONFIDENCE = 0.95
# Scripts that name their language outright: the Unicode name's first word -> language.
_SCRIPT_LANGUAGES = {"CJK": "zh", "HIRAGANA": "ja", "KATAKANA": "ja", "HANGUL": "ko", "THAI": "th",
                     "HEBREW": "he", "GEORGIAN": "ka", "DEVANAGARI": "hi", "ARABIC": None, "CYRILLIC": None,
                     "GREEK": "el"}


@dataclass(frozen=True)
class LanguageGuess:
    language: str  # ISO 639-1 code, e.g. "de"
    confidence: float  # 0..1
    decisive: bool  # sure enough to refuse a text that no installed voice speaks


def _scripts(text: str) -> tuple[dict[str, int], int]:
    """Letters per script (the Unicode name's first word: LATIN, CYRILLIC...) and the letter count."""
    counts: dict[str, int] = {}
    letters = 0
    for character in text:
        if not character.isalpha():
            continue
        letters += 1
        script = unicodedata.name(character, "").split(" ")[0]
        counts[script] = counts.get(script, 0) + 1
    return counts, letters


def _script_language(counts: dict[str, int], letters: int) -> str | None:
    """The language a text's letters name by their script alone, when most letters share one.
    Japanese text mixes Han with kana: any kana makes it Japanese."""
    if not letters:
        return None
    if counts.get("HIRAGANA", 0) + counts.get("KATAKANA", 0) > 0 and counts.get("LATIN", 0) < letters / 2:
        return "ja"
    script, count = max(counts.items(), key=lambda item: item[1])
    return _SCRIPT_LANGUAGES.get(script) if count >= letters / 2 else None


class LanguageDetector:
    """Guesses a text's language; safe to share between threads."""

    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._identifier = LanguageIdentifier.from_pickled_model(MODEL_FILE, norm_probs=True)
        self._identifier.set_languages(list(PIPER_LANGUAGES + UNVOICED_LANGUAGES))
        self._lock = threading.Lock()  # set_languages state is shared

    def detect(self, text: str) -> LanguageGuess:
        counts, letters = _scripts(text)
        by_script = _script_language(counts, letters)
        if by_script is not None:
            return LanguageGuess(by_script, 1.0, True)
        with self._lock:
            language, confidence = self._identifier.classify(text)
        words = {word.lower() for word in text.split() if any(c.isalpha() for c in word)}
        # Cyrillic or Arabic letters are never English, however short the text.
        mostly_latin = counts.get("LATIN", 0) >= letters / 2
        decisive = not mostly_latin or (len(words) >= _MIN_WORDS and float(confidence) >= _MIN_CONFIDENCE)
        return LanguageGuess(str(language), float(confidence), decisive)
