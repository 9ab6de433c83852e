"""What an FAQ answer, button title or training example may contain.

One definition, used by the ``clinicbot`` commands before they write anything and by
``tests/test_data.py`` on the committed data: an edit the command accepts never breaks
the test suite, and a rule tightened here is enforced in both places at once.

No Rasa imports: the staff commands must start fast.
"""

from __future__ import annotations

import re
import string
from typing import Dict, FrozenSet, List

from clinic_nlu.red_flags import match_red_flag
from clinic_nlu.text import clean_text, has_words

# Two SMS segments plus a little; a longer answer arrives as three or more texts.
MAX_FAQ_ANSWER = 600
SMS_FAQ_ANSWER = 320
# Printable ASCII and newline, minus the backtick, which GSM-7 does not have.
SMS_SAFE: FrozenSet[str] = frozenset(string.printable) - frozenset("\t\r\x0b\x0c`")
# A "Did you mean" button label; the longest today has 37 characters.
MAX_TITLE = 60
# Same cut as the TextCleaner of config.yml: longer text never reaches the model.
MAX_EXAMPLE = 1000
# Fewest examples a new topic may start with. tests/test_data.py asks for 15 per topic
# (MIN_FAQ_EXAMPLES) before the suite passes; five are enough to create it and train.
MIN_NEW_TOPIC_EXAMPLES = 5
# Rasa reads `faq/<topic>` as an intent name and `utter_faq/<topic>` as a response
# name, and the "Did you mean" payload carries it as JSON: keep it plain.
TOPIC_NAME = re.compile(r"[a-z][a-z0-9_]{2,40}")

# Clinic facts that only clinic.yml may state: the assistant fills them in itself, so
# an answer that hard-codes one is wrong the day the clinic changes it.
FACT_PATTERNS: Dict[str, str] = {
    "price": r"\$|\b\d+(\.\d\d)?\s?(dollars?|usd|bucks)\b|\bcopays? (is|of)\b",
    "insurance plan": r"\b(medicare|medicaid|blue ?cross|blue ?shield|bcbs|aetna|cigna|"
    r"humana|united ?health(care)?|tricare|kaiser|anthem|molina|ambetter|wellcare|"
    r"oscar)\b",
    "time of day": r"\b\d{1,2}(:\d\d)?\s?([ap]\.?m\b\.?)|\b\d{1,2}:\d\d\b|"
    r"\bnoon\b|\bmidnight\b",
    "weekday": r"\b(mon|tues|wednes|thurs|fri|satur|sun)days?\b|"
    r"\b(mon|tue|wed|thu|fri|sat|sun)\s?-\s?(mon|tue|wed|thu|fri|sat|sun)\b",
    "phone number": r"\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b|\b1-?800\b",
    "street address": r"\b\d+\s+\w+(\s+\w+)?\s+(st|street|ave|avenue|rd|road|blvd|"
    r"boulevard|dr|drive|ln|lane|pkwy|parkway|hwy|highway|suite|ste)\b",
    "web or e-mail address": r"https?://|\bwww\.|\.(com|org|net)\b|\S@\S",
}
_FACTS = {
    kind: re.compile(pattern, re.IGNORECASE) for kind, pattern in FACT_PATTERNS.items()
}
# `[text](entity)` and `[text]{"entity": ...}` are Rasa's entity annotations.
_ENTITY_ANNOTATION = re.compile(r"\[[^\]]*\]\s*[({]")


def normalise(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation: for duplicate checks."""
    text = re.sub(r"\s+", " ", text.lower()).strip()
    return re.sub(r"[\s.,;:!?]+$", "", text)


def stated_facts(text: str) -> List[str]:
    """The kinds of clinic fact the text states ("price", "phone number", ...)."""
    return [kind for kind, pattern in _FACTS.items() if pattern.search(text)]


def _unsafe_characters(text: str) -> str:
    unsafe = sorted({character for character in text if character not in SMS_SAFE})
    return " ".join(repr(character) for character in unsafe)


def _facts_problem(what: str, text: str) -> List[str]:
    facts = stated_facts(text)
    if not facts:
        return []
    return [
        f"{what} states a {' and a '.join(facts)}. Prices, phone numbers, hours, "
        "addresses, web addresses and insurance plans come only from clinic.yml, "
        "which the assistant fills in itself; leave them out."
    ]


def answer_problems(answer: str) -> List[str]:
    """Why an FAQ answer cannot be used as it is; empty when it can."""
    if not answer.strip():
        return ["The answer is empty."]
    problems: List[str] = []
    if len(answer) > MAX_FAQ_ANSWER:
        problems.append(
            f"The answer has {len(answer)} characters; the limit is {MAX_FAQ_ANSWER} "
            f"(about {SMS_FAQ_ANSWER} fit in two text messages)."
        )
    if not set(answer) <= SMS_SAFE:
        problems.append(
            f"The answer contains characters text messages cannot carry: "
            f"{_unsafe_characters(answer)}. Use plain quotes ('), hyphens (-) and "
            "letters without accents."
        )
    if "{" in answer or "}" in answer:
        problems.append(
            "The answer contains { or }, which the assistant would read as a "
            "placeholder to fill in. Leave them out."
        )
    return problems + _facts_problem("The answer", answer)


def title_problems(title: str) -> List[str]:
    """Why a "Did you mean" button title cannot be used; empty when it can."""
    if not title.strip():
        return ["The button title is empty."]
    problems: List[str] = []
    if len(title) > MAX_TITLE:
        problems.append(
            f"The button title has {len(title)} characters; keep it under "
            f"{MAX_TITLE} so it fits on a button."
        )
    if not set(title) <= SMS_SAFE - {"\n"}:
        problems.append(
            f"The button title contains characters text messages cannot carry: "
            f"{_unsafe_characters(title)}."
        )
    return problems + _facts_problem("The button title", title)


def topic_name_problems(topic: str) -> List[str]:
    """Why a new topic's name cannot be used; empty when it can."""
    if TOPIC_NAME.fullmatch(topic):
        return []
    return [
        f"'{topic}' cannot be a topic name: use 3 to 41 lowercase letters, digits "
        "and underscores, starting with a letter (for example: parking_info)."
    ]


def clean_example(text: str) -> str:
    """An example as the model will see it (the TextCleaner of config.yml)."""
    return clean_text(text, MAX_EXAMPLE)


def example_problems(text: str) -> List[str]:
    """Why a training example cannot be used as it is; empty when it can.

    ``text`` is the raw example; it is cleaned the way the model cleans messages
    before these checks.
    """
    if "\n" in text.strip():
        return [f"{text!r} spans several lines; give each example on its own."]
    cleaned = clean_example(text)
    if not has_words(cleaned):
        return [f"{text!r} has no words in it."]
    problems: List[str] = []
    if len(text.strip()) > MAX_EXAMPLE:
        problems.append(
            f"The example starting {cleaned[:40]!r} is longer than {MAX_EXAMPLE} "
            "characters; the assistant only reads that far."
        )
    if cleaned.startswith("/"):
        problems.append(
            f"{cleaned!r} starts with '/', which the assistant reads as a button "
            "command, not as typed text."
        )
    if _ENTITY_ANNOTATION.search(cleaned):
        problems.append(
            f"{cleaned!r} contains [...] followed by ( or {{, which Rasa reads as "
            "an entity annotation. Rephrase without square brackets."
        )
    red_flag = match_red_flag(cleaned)
    if red_flag:
        problems.append(
            f"{cleaned!r} reads as a red flag ({red_flag}): such messages always get "
            "emergency guidance and must not become an FAQ example."
        )
    return problems
