"""Text -> bounded chunks for a TTS engine: sentences, and long runs cut at clauses, then words.

A TTS engine's memory and latency grow with the length of what it is given at once (Piper builds
one sequence a sentence), so every chunk stays under a character bound whatever the input.
"""
from __future__ import annotations

import re

DEFAULT_MAX_CHARS = 200  # about 12 s of speech: short enough to start fast, long enough to sound natural

# A sentence ends at . ! ? … (and their CJK forms), possibly followed by closing quotes or brackets.
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+")
# Clause boundaries: after , ; : and dashes, or before a few conjunctions.
_CLAUSE_END = re.compile(r"(?<=[,;:，；：])\s+|\s+(?=[–—-]\s)|(?<=\s[–—-])\s+")
_SPACE = re.compile(r"\s+")


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Split text into chunks of at most max_chars characters, in reading order.

    Sentences first; a sentence over the bound is cut at clause boundaries (, ; : dashes), then
    at spaces; a single word over the bound (a long number, a URL) is cut every max_chars
    characters. Whitespace runs become one space; empty chunks are dropped. Joining the chunks
    with spaces gives the normalized text back."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    chunks: list[str] = []
    for sentence in _SENTENCE_END.split(_SPACE.sub(" ", text).strip()):
        if sentence:
            chunks.extend(_bounded(sentence.strip(), max_chars))
    return [chunk for chunk in chunks if chunk]


def ramped_chunks(text: str, max_chars: int = DEFAULT_MAX_CHARS, first_chars: int = 32,
                  min_first_chars: int = 10) -> list[str]:
    """split_text's chunks, the first ones cut smaller: a stream can start on the first after a short
    synthesis, and each chunk's synthesis then fits in the playing time of the ones before it.

    The first chunk is a few words (the first clause of min_first_chars to first_chars characters
    where there is one, else the words that fit in first_chars), so the first frame waits only
    for their synthesis; the bound then starts at 2 * first_chars and doubles with each chunk up
    to max_chars."""
    chunks: list[str] = []
    bound = min(first_chars, max_chars)
    for chunk in split_text(text, max_chars):
        if not chunks and len(chunk) > bound:
            opening = _opening(chunk, bound, min_first_chars)
            chunks.append(opening)
            chunk = chunk[len(opening):].strip()
            bound = min(max_chars, bound * 2)
            if not chunk:
                continue
        pieces = split_text(chunk, bound) if len(chunk) > bound else [chunk]
        for piece in pieces:
            chunks.append(piece)
            bound = min(max_chars, bound * 2)
    return chunks


def _opening(sentence: str, max_chars: int, min_chars: int) -> str:
    """The first few words of sentence, at most max_chars: up to its first clause boundary that
    leaves at least min_chars (a natural pause to stop at), else as many words as fit."""
    for boundary in _CLAUSE_END.finditer(sentence):
        if min_chars <= boundary.start() <= max_chars:
            return sentence[:boundary.start()]
        if boundary.start() > max_chars:
            break
    return _merge(_words(sentence, max_chars), max_chars)[0]


def _bounded(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        if len(clause) <= max_chars:
            pieces.append(clause)
        else:
            pieces.extend(_words(clause, max_chars))
    return _merge(pieces, max_chars)


def _words(clause: str, max_chars: int) -> list[str]:
    out: list[str] = []
    for word in clause.split(" "):
        out.extend(word[start:start + max_chars] for start in range(0, len(word), max_chars))
    return out


def _merge(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join neighbouring pieces with a space while the result stays within max_chars."""
    merged: list[str] = []
    for piece in pieces:
        if not piece:
            continue
        if merged and len(merged[-1]) + 1 + len(piece) <= max_chars:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged
