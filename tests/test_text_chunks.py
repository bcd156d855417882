"""Text is cut into bounded chunks before TTS: sentences, then clauses, then words."""
from __future__ import annotations

import pytest

from runtime.tts.chunking import split_text

pytestmark = pytest.mark.unit


def test_sentences_become_chunks_in_order():
    text = "Hello there! How are you today? I am fine.  Thanks for asking."
    assert split_text(text) == ["Hello there!", "How are you today?", "I am fine.", "Thanks for asking."]


def test_long_sentence_is_cut_at_clauses_then_words_and_nothing_is_lost():
    clause = "the river runs down from the mountain, "
    text = (clause * 20).strip() + " and then " + "word " * 80
    chunks = split_text(text, max_chars=120)
    assert all(len(chunk) <= 120 for chunk in chunks)
    assert " ".join(chunks).split() == text.split()
    # Clause cuts come after a comma where one is near.
    assert sum(chunk.endswith(",") for chunk in chunks) >= len(chunks) // 2


@pytest.mark.parametrize("text", ["7" * 2000, "https://example.com/" + "a" * 900, "x" * 45])
def test_a_run_without_spaces_or_punctuation_is_still_bounded(text):
    chunks = split_text(text, max_chars=100)
    assert all(1 <= len(chunk) <= 100 for chunk in chunks)
    assert "".join(chunks) == text


def test_whitespace_and_empty_text():
    assert split_text("  \n\t ") == []
    assert split_text("One.\n\nTwo.") == ["One.", "Two."]
