"""Reading a patient's booking answers: visit type, name, phone number, choice.

Pure functions, no Rasa and no I/O, so each rule is unit-tested on its own. Dates and
times are read by ``actions.scheduling.timeparse``.
"""

from __future__ import annotations

import re
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

_NAME_PREFIX = re.compile(
    r"^(?:(?:hi|hello|hey)[,!. ]+)?(?:my name is|my name's|name is|name's|this is|"
    r"it's|it is|i am|i'm|im|call me|the name is|patient is|for)\s+",
    re.IGNORECASE,
)
_NAME_CHARACTERS = re.compile(r"^[^\W\d_]+(?:['’.\-][^\W\d_]*)*\.?$", re.UNICODE)
MAX_NAME_LENGTH = 80

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
    for match in phonenumbers.PhoneNumberMatcher(text, region):
        number = match.number
        if phonenumbers.is_valid_number(number):
            return str(
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            )
    return None


def clean_name(text: str, person_entities: Sequence[str] = ()) -> Optional[str]:
    """A full name (two to six words of letters) from what the patient typed.

    spaCy's PERSON entity is used when it has two words or more; otherwise the text
    with "my name is", "this is" and the like removed. ``None`` if it is not a name.
    """
    candidates = [p for p in person_entities if len(p.split()) >= 2]
    candidates.append(_NAME_PREFIX.sub("", text.strip()))
    for candidate in candidates:
        name = " ".join(candidate.strip(" .,!").split())
        words = name.split(" ")
        if (
            2 <= len(words) <= 6
            and len(name) <= MAX_NAME_LENGTH
            and all(_NAME_CHARACTERS.match(word) for word in words)
        ):
            # All lower case ("john carter") is capitalised; any other case is
            # the patient's own ("Mary-Kate van der Berg").
            return name.title() if name.islower() else name
    return None


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
