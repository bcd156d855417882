"""Which characters a text to speak may hold: one rule, applied before any TTS engine sees it."""
from __future__ import annotations

import unicodedata

from .errors import InvalidTextError

# Tab, line feed and carriage return are ordinary whitespace in pasted text.
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def check_text_characters(text: str) -> None:
    """The rule: text may not contain unpaired surrogates (not Unicode text at all) nor control
    characters other than tab, line feed and carriage return (NUL, escape, C1 controls...). Such text
    is refused (InvalidTextError, a 422) naming the first offending character and its position; it is
    never stripped silently, so a client's encoding bug shows instead of being spoken around."""
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":
            raise InvalidTextError(f"text has an unpaired surrogate U+{ord(char):04X} at character {position}")
        if category == "Cc" and char not in _ALLOWED_CONTROLS:
            raise InvalidTextError(f"text has the control character U+{ord(char):04X} at character {position}")
