"""Text is cut into bounded chunks before TTS: sentences, then clauses, then words."""
from __future__ import annotations

import pytest

from runtime.tts.chunking import ramped_chunks, split_text

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


def test_a_stream_starts_on_small_chunks_that_grow():
    """The first chunks are cut small so that the first audio comes soon; the bound doubles after
    each chunk, so synthesis keeps ahead of playback, and nothing is lost."""
    text = ("Good morning, and welcome to the show. Today we are going to talk about the mountains of the "
            "north, the rivers that run down from them, and the small towns along their banks, where people "
            "still bake bread the way their grandparents did. ") * 3
    chunks = ramped_chunks(text, max_chars=200, first_chars=60)
    assert " ".join(chunks).split() == text.split()
    bound = 60
    for chunk in chunks:
        assert len(chunk) <= bound
        bound = min(200, bound * 2)
    assert len(chunks[0]) <= 60 and max(map(len, chunks)) > 120


def test_a_stream_opens_on_its_first_few_words():
    """The first chunk is what the first frame waits for: the first clause where one is short,
    else the words that fit; the rest of the sentence follows whole."""
    assert ramped_chunks("Hello there, it is good to see you again today.") == [
        "Hello there,", "it is good to see you again today."]
    opening, *rest = ramped_chunks("one two three four five six seven eight nine ten eleven twelve", first_chars=32)
    assert opening == "one two three four five six" and " ".join(rest) == "seven eight nine ten eleven twelve"
    assert ramped_chunks("Hi.") == ["Hi."]
