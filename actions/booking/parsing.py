"""Reading a patient's booking answers: visit type, name, phone number, choice.

Pure functions, no Rasa and no I/O, so each rule is unit-tested on its own. Dates and
times are read by ``scheduling.timeparse``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

import phonenumbers

# Words patients use for each visit type key of clinic.yml's scheduling section.
VISIT_TYPE_WORDS: Dict[str, Tuple[str, ...]] = {
    "trigger_point_injection": ("trigger", "tpi", "injection", "shot", "steroid"),
    "dry_needling": ("needl", "needling", "no medication", "without medication"),
    "evaluation": ("evaluat", "eval", "consult", "new patient", "check up", "checkup"),
    "physical_therapy": ("physical therapy", "physio", "pt", "therapy", "therapist"),
    "chiropractic": ("chiro", "adjust", "spine alignment", "misalign"),
}

# What patients write before their name: "my name is", "it's for my son", "me llamo".
# "im" only before two words or more: Im is also a Korean surname ("Im Yoon-ah").
_NAME_LEAD_IN = re.compile(
    r"^(?:hi|hello|hey|hola|my name is|my name's|name is|name's|the name is|"
    r"this is|it's|it’s|it is|its|i am|i'm|i’m|im(?=\s+\S+\s+\S)|call me|"
    r"(?:the )?patient is|(?:the )?patient's name is|for|"
    r"(?:my|our) (?:wife|husband|son|daughter|mom|mother|dad|father|child|kid|"
    r"partner|grandma|grandmother|grandpa|grandfather)(?:'s name)?(?: is)?|"
    r"me llamo|mi nombre es|soy|se llama)\b[\s,:.!]*",
    re.IGNORECASE,
)
# Inside a word of a name, between letters: apostrophes (straight, curly, the
# modifier letter apostrophe), hyphens, the Catalan and Japanese middle dots, and the
# period of an initial ("J.R."). The Hawaiian ʻokina is a letter already.
_NAME_JOINERS = {
    **dict.fromkeys("'’‘ʼ`", "'"),
    **dict.fromkeys("-‐‑", "-"),
    **dict.fromkeys("·・", "-"),
    ".": ".",
}
_NAME_WORD_SHAPE = re.compile(r"'?a+(?:['\-.]a+)*\.?")
# Lower-case words that belong to names: "de la Cruz", "van der Berg", "bin Abdullah".
NAME_PARTICLES = frozenset(
    {
        *("de", "del", "della", "der", "den", "la", "las", "le", "les", "los"),
        *("da", "das", "di", "do", "dos", "du", "van", "von", "ter", "ten", "te"),
        *("bin", "binti", "bint", "ibn", "al", "el", "y", "e", "zu", "af", "av"),
        *("ap", "ben", "bat", "ní", "nic", "ó", "ua", "mac", "st", "san", "santa"),
    }
)
# A message that starts like this is a question, unless written like a name ("Will
# Smith", "Do Thi My", "Can Yaman").
_QUESTION_WORDS = frozenset(
    {
        *("what", "whats", "what's", "how", "hows", "how's", "why", "when", "where"),
        *("who", "which", "is", "are", "am", "do", "does", "did", "can", "could"),
        *("would", "should", "will", "may"),
    }
)
MAX_NAME_LENGTH = 80
MAX_NAME_WORDS = 10

_ORDINALS = {
    "first": 1,
    "1st": 1,
    "one": 1,
    "second": 2,
    "2nd": 2,
    "two": 2,
    "third": 3,
    "3rd": 3,
    "three": 3,
    "fourth": 4,
    "4th": 4,
    "four": 4,
    "fifth": 5,
    "5th": 5,
    "five": 5,
}
_TIME = re.compile(
    r"\b(\d{1,2})(?::(\d{2}))?\s*(a\.?m\.?|p\.?m\.?)?(?=\W|$)", re.IGNORECASE
)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def match_visit_type(text: str, known: Sequence[Tuple[str, str]]) -> Optional[str]:
    """The visit type key meant by ``text``, given ``known`` (key, name) pairs.

    A key or a configured name in the text wins; then the usual words for each
    type. ``None`` when nothing matches or two types match equally.
    """
    lowered = " " + re.sub(r"[^a-z0-9 ]+", " ", text.lower()) + " "
    keys = [key for key, _ in known]
    for key, name in known:
        for phrase in (key.replace("_", " "), name.lower()):
            if f" {phrase} " in lowered:
                return key
    hits = []
    for key in keys:
        for word in VISIT_TYPE_WORDS.get(key, ()):
            # Short words must stand alone ("pt"); longer ones may start a word.
            pattern = rf"\b{re.escape(word)}\b" if len(word) <= 3 else rf"\b{word}"
            if re.search(pattern, lowered):
                hits.append(key)
                break
    return hits[0] if len(hits) == 1 else None


def normalize_phone(text: str, region: str = "US") -> Optional[str]:
    """The first valid phone number in ``text`` in E.164 (``+18175550100``)."""
    for match in _valid_numbers(text, region):
        return str(
            phonenumbers.format_number(
                match.number, phonenumbers.PhoneNumberFormat.E164
            )
        )
    return None


def display_phone(e164: str) -> str:
    """A stored number the way people write it: ``(817) 555-0142`` for US numbers.

    Numbers of other countries keep their country code (``+44 20 7946 0958``);
    anything that is no valid number is shown as stored.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    if not phonenumbers.is_valid_number(number):
        return e164
    style = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if number.country_code == 1
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return str(phonenumbers.format_number(number, style))


def phone_numbers_in(text: str, region: str = "US") -> List[str]:
    """The valid phone numbers in ``text``, as written ("(817) 555-0188")."""
    return [match.raw_string for match in _valid_numbers(text, region)]


def _valid_numbers(text: str, region: str) -> List[phonenumbers.PhoneNumberMatch]:
    return [
        match
        for match in phonenumbers.PhoneNumberMatcher(text, region)
        if phonenumbers.is_valid_number(match.number)
    ]


def clean_name(text: str, person_entities: Sequence[str] = ()) -> Optional[str]:
    """The patient's name, or ``None`` if it is plainly not a name.

    The name of ``name_as_written``; one written all in lower case is capitalised
    ("john carter" -> "John Carter").
    """
    name = name_as_written(text, person_entities)
    return _capitalised(name) if name is not None else None


def name_as_written(text: str, person_entities: Sequence[str] = ()) -> Optional[str]:
    """The name in what the patient wrote, in their own case; ``None`` if none.

    Any script, one word or up to ten ("Madonna", "王小明", "Juan Carlos de la Cruz"),
    with accents, apostrophes, hyphens and particles. Not a name: digits, symbols, a
    question ("?" or a question word first, unless written like a name), more than
    80 characters. "My name is", "it's for my son" and the like are dropped.

    spaCy's PERSON entity (two words or more) is used only when the whole text reads
    as a sentence around a name ("Sarah Nguyen here, hi"): spaCy often keeps part of
    a name ("Pieter van der" of "Pieter van der Berg").
    """
    whole = _as_name(_without_lead_in(text))
    if whole is not None and (whole.islower() or written_as_name(whole)):
        return whole
    for person in person_entities:
        name = _as_name(person)
        if name is not None and len(name.split()) >= 2:
            return name
    return whole


def written_as_name(name: str) -> bool:
    """Whether every word is capitalised, a particle, or of a script without case.

    "Marisol Quintanilla", "Mary-Kate van der Berg", "محمد عبد الله" are; "marisol
    quintanilla" and "Sarah Nguyen here" are not.
    """
    words = name.split()
    return any(word.lower() not in NAME_PARTICLES for word in words) and all(
        not _lower_case(word) or word.lower() in NAME_PARTICLES for word in words
    )


def _lower_case(word: str) -> bool:
    return any(c.islower() for c in word) and not any(c.isupper() for c in word)


def _without_lead_in(text: str) -> str:
    text = text.strip()
    for _ in range(3):  # "hi, it's for my son, Diego Ruiz"
        shorter = _NAME_LEAD_IN.sub("", text, count=1).strip()
        if not shorter or shorter == text:
            break
        text = shorter
    return text


def _as_name(candidate: str) -> Optional[str]:
    name = " ".join(candidate.strip(" .,!;:").split())
    words = name.split(" ")
    if not name or len(name) > MAX_NAME_LENGTH or len(words) > MAX_NAME_WORDS:
        return None
    if len(name.replace(" ", "")) < 2 or not all(_is_name_word(w) for w in words):
        return None
    if words[0].lower() in _QUESTION_WORDS and not written_as_name(name):
        return None
    return name


def _is_name_word(word: str) -> bool:
    """Letters of any script with their marks, joined as in "O'Brien" or "Al-Zahra"."""
    shape = "".join(
        "a" if unicodedata.category(c)[0] in "LM" else _NAME_JOINERS.get(c, "#")
        for c in word
    )
    return _NAME_WORD_SHAPE.fullmatch(shape) is not None


def _capitalised(name: str) -> str:
    """Capitalises a name written all in lower case, particles aside.

    Any other case is the patient's own ("Mary-Kate van der Berg", "bell hooks").
    """
    if not name.islower():
        return name
    return " ".join(
        word if word in NAME_PARTICLES and index else word.title()
        for index, word in enumerate(name.split())
    )


def pick_offered(
    text: str, offered: List[Dict[str, Any]], option: Optional[str] = None
) -> Optional[Dict[str, Any]]:
    """The offered slot the patient chose, by number, ordinal, weekday or time.

    ``offered`` entries carry ``start`` as an ISO datetime in the clinic's zone.
    ``option`` is the 1-based number from a button. ``None`` if the choice is not
    clear (no match, or a time that fits two offers).
    """
    if not offered:
        return None
    if option is not None and str(option).strip().isdigit():
        return _by_number(int(str(option).strip()), offered)
    lowered = text.lower().strip()
    bare = re.fullmatch(r"(?:#|no\.?|number|option)?\s*(\d)\s*[.)]?", lowered)
    if bare:
        return _by_number(int(bare.group(1)), offered)
    by_time = _by_time(lowered, offered)
    if by_time is not None:
        return by_time
    words = re.findall(r"[a-z0-9]+", lowered)
    if "last" in words:
        return offered[-1]
    if _TIME.search(lowered) or any(day in lowered for day in _WEEKDAYS):
        return None  # a day or time that fits no single offer
    for word in words:
        if word in _ORDINALS:
            return _by_number(_ORDINALS[word], offered)
    return None


def _by_number(number: int, offered: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return offered[number - 1] if 1 <= number <= len(offered) else None


def _by_time(text: str, offered: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    starts = [datetime.fromisoformat(entry["start"]) for entry in offered]
    candidates = list(range(len(offered)))
    weekday = next((i for i, day in enumerate(_WEEKDAYS) if day in text), None)
    if weekday is not None:
        candidates = [i for i in candidates if starts[i].weekday() == weekday]
    time_match = _TIME.search(text)
    if time_match:
        hour = int(time_match.group(1))
        minute = int(time_match.group(2) or 0)
        meridiem = (time_match.group(3) or "").replace(".", "").lower()
        if meridiem == "pm" and hour < 12:
            hour += 12
        elif meridiem == "am" and hour == 12:
            hour = 0
        elif not meridiem and 1 <= hour <= 6:
            hour += 12  # a clinic's "at 3" is in the afternoon
        candidates = [
            i
            for i in candidates
            if (starts[i].hour, starts[i].minute) == (hour, minute)
        ]
    elif weekday is None:
        return None
    return offered[candidates[0]] if len(candidates) == 1 else None


def describe_time(moment: datetime) -> str:
    """``Tue Mar 10, 9:00 AM CDT``: weekday, date, time and zone, unambiguous."""
    hour = moment.strftime("%I").lstrip("0")
    return (
        f"{moment.strftime('%a %b')} {moment.day}, "
        f"{hour}:{moment.strftime('%M %p')} {moment.tzname()}"
    )
