"""Plain-text helpers shared by the NLU components and the action server.

No Rasa imports here: the action server (rasa_sdk only) uses ``has_words`` too, so
the NLU gate and the clarification action agree on what a wordless message is.
"""

from __future__ import annotations

import re
import unicodedata

# Control, zero-width and bidi-override characters left once white space is a space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060\ufeff]")
_WHITESPACE = re.compile(r"\s+")
# HTML or XML tags, e.g. pasted markup or a <script> probe. Their text content stays.
_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,500}>")


def clean_text(text: str, max_characters: int) -> str:
    """Normalises a patient message for the classifier.

    Unicode is NFKC-normalised, control and zero-width characters and markup tags are
    dropped, runs of white space collapse to one space, and the text is cut to
    ``max_characters`` (the first part of a very long message carries its question;
    the rest would only cost time).

    A message that did not start with "/" never comes out starting with one: Rasa
    reads a leading "/" as a command, and NFKC turns look-alikes such as a
    full-width solidus into a plain "/" (``channels/guard.py``).
    """
    was_command = text.lstrip().startswith("/")
    text = unicodedata.normalize("NFKC", text)
    text = _WHITESPACE.sub(" ", text)  # first: line and page separators part words
    text = _CONTROL.sub("", text)
    text = _TAG.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if not was_command:
        text = text.lstrip("/ ")
    return text[:max_characters]


def has_words(text: str) -> bool:
    """Whether the text has any letter or digit (emoji and punctuation alone do not)."""
    return any(character.isalnum() for character in text)
