"""Turns a patient's own words for when they want to come in into a time window.

``parse_time_preference("could I come in tomorrow afternoon?", now)`` returns
tomorrow 12:00-17:00 in the clinic's time zone; the scheduler then offers slots
inside that window. Pure functions: no Rasa, no I/O, nothing runs at import but
compiling regular expressions.

Our own deterministic rules read almost everything. dateparser is imported
lazily (the import takes ~0.3 s) and asked only about leftovers that look like a
date the rules do not know ("03.10.2026", "2026/03/10"): on its own it reads
"next tuesday" as nothing, "the 2nd" as a day in February and a bare "3" as March
next year, so its answer counts only if it names a single day. Why the rules
are ours and not a library's: docs/time_parsing.md (measured with
benchmarks/timeparse_compare.py).

All times below are wall-clock times in the clinic's time zone (default
America/Chicago). "Today" is the clinic's today, whatever zone ``now`` is in.

As soon as possible
    "asap", "as soon as possible", "soonest", "earliest", "first/next available",
    "any time", "whenever", "right away", "today or tomorrow" -> from now to the
    same local time 7 days later, ``asap=True``; but only when no day or time is
    named: "any time tomorrow" and "earliest next week" are plain windows of
    that day or week with ``asap=False``.

Days (a day is local midnight to local midnight, built from the local date, so
the window of a DST day is 23 or 25 hours long)
    - "today", "tonight" (today's evening), "tomorrow", "the day after tomorrow",
      "yesterday", "3 days ago"; "in 2 days", "in 3 weeks", "in a month",
      "a week from today", "2 weeks from tomorrow" -> that one day; "within 2
      days", "in the next 2 days" -> today up to that day.
    - "tuesday", "this tuesday", "on tue" -> the next Tuesday on or after today.
      It is today only while time is left: with a time of day, until that time
      has started (a point) or ended (a range); without one, before 17:00.
      Otherwise it is the Tuesday a week later.
    - "next tuesday", "tuesday next week" -> the Tuesday of next calendar week
      (weeks run Monday-Sunday: on a Monday, "tuesday" is tomorrow and "next
      tuesday" is eight days away). "last tuesday" -> the latest one before today.
    - "March 10", "10th of March", "Dec 3rd", "3/10" and "12/3" (US month/day),
      "3/10/26", "2026-03-10" -> without a year, the first such date on or after
      today ("Jan 5" said in December is next year); "the 14th", "14th" -> the
      first 14th on or after today, skipping months without one. A date that
      does not exist ("2/30", "32nd", "99/99") makes the whole text "unparsed",
      even if a time is named too.
    - Ranges: "this week" (the rest of it, to Sunday), "next week" (Monday to
      Sunday), "the week after next", "(this|next) weekend" (Saturday-Sunday),
      "this month", "next month", "in April" (the next April that has not
      ended), "next year". A range ignores any time of day ("next week,
      mornings" = all of next week): one window cannot hold five mornings.

Times of day
    - "3pm", "3:30", "15:00", "at 3", "around 3", "3 o'clock", "half past 3",
      "noon" -> that time to one hour later. An hour without am/pm follows office
      hours: 7-11 -> AM, 12 -> noon, 1-6 -> PM, 13-23 -> 24-hour clock; a bare 0
      means nothing. Next to a part of the day it moves into that half
      ("tonight at 7" -> 19:00, "3 in the morning" -> 03:00).
    - "morning" 08:00-12:00, "lunch(time)" 11:30-13:30, "afternoon" 12:00-17:00,
      "evening" 17:00-20:00; "am"/"pm"/"night" right after a day ("fri am",
      "tomorrow night") -> morning/afternoon/evening; a bare number right after a
      day is an hour ("tmrw 3").
    - "after 4" 16:00-24:00, "before 10" or "by 10" 00:00-10:00, "between 2 and
      4", "2-4pm", "10-2" -> that range; "after lunch" from 13:30, "after work"
      from 17:00, "before noon" until 12:00.
    - A time without a day -> today if time is left for it (as above), else
      tomorrow. "this morning" is such a time: said at 13:00 it is tomorrow's.
    - Of several times, a point time beats a range or part of the day, and the
      one nearest the chosen day wins ("tomorrow afternoon at 3" -> 15:00-16:00).

Choosing among several days
    The first day named that is not wholly past and not negated ("not monday",
    "can't do monday") wins, so "I hurt it yesterday, can I come tomorrow" means
    tomorrow; "since monday" is the complaint's story and is ignored. If every
    day named is past, the answer is "past".

Limits and errors
    A window wholly before ``now`` -> ``TimePreferenceError("past")``; partly
    before -> it starts at ``now``. The horizon is today plus ``horizon_days``
    whole days: a window starting after it -> ``TimePreferenceError("too_far")``;
    one running past it is cut there. Nothing recognisable ->
    ``TimePreferenceError("unparsed")``. No other exception escapes for any text.

Entities
    DATE/TIME spans spaCy found are read first, joined; the day and time they
    name win over the whole message's, which fills in what they lack. They help
    where the message names other days too, and are clean input for dateparser.

Only the first 1,000 characters of a message are read.
"""

from __future__ import annotations

import re
import unicodedata
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import (
    Callable,
    Dict,
    Generic,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "America/Chicago"
ASAP_DAYS = 7
# A weekday naming today still means today before this local time, if no time
# of day is given; later in the day it means the same weekday next week.
SAME_DAY_CUTOFF = time(17, 0)
MAX_CHARS = 1000
MAX_HORIZON_DAYS = 3660
POINT_LENGTH = timedelta(hours=1)
# dateparser is asked only about leftover clauses of at most this many words.
MAX_FALLBACK_WORDS = 6

Reason = Literal["unparsed", "past", "too_far"]


@dataclass(frozen=True)
class TimeWindow:
    """When the patient wants to come in: ``start`` inclusive, ``end`` exclusive.

    Both are aware datetimes in the clinic's time zone. ``asap`` means the patient
    named no day or time and wants the soonest slot. ``description`` is a short
    phrase for logs and tests, e.g. "Tue Mar 10, afternoon".

    Compare them in UTC: Python compares two datetimes of the same tzinfo on the
    wall clock, ignoring ``fold``, so 01:30 CDT -> 01:30 CST (the repeated hour
    of the fall-back day) would look empty.
    """

    start: datetime
    end: datetime
    asap: bool = False
    description: str = ""


class TimePreferenceError(ValueError):
    """The text gives no usable window; ``reason`` says why.

    Attributes:
        reason: "unparsed" (nothing recognisable), "past" (wholly before now) or
            "too_far" (starts beyond the booking horizon).
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason


# --------------------------------------------------------------------------
# What a message can name: days and times of day
# --------------------------------------------------------------------------

ClockKind = Literal["point", "part", "range"]


@dataclass(frozen=True)
class _Clock:
    """A time of day: minutes after local midnight, ``end`` up to 1440."""

    start: int
    end: int
    label: str
    kind: ClockKind = "range"
    bare: bool = False  # an hour without am/pm, placed by office hours


@dataclass(frozen=True)
class _Days:
    """Local dates from ``first`` to ``last``, both included."""

    first: date
    last: date
    rollover: bool = False  # a weekday naming today: next week if no time is left
    implied: Optional[_Clock] = None  # "tonight" implies the evening


T = TypeVar("T")


@dataclass(frozen=True)
class _Found(Generic[T]):
    """Something found in the normalised text, with its span."""

    start: int
    end: int
    value: T


@dataclass(frozen=True)
class _Reading:
    """What one text says."""

    asap: bool = False
    days: Optional[_Days] = None
    clock: Optional[_Clock] = None
    invalid: bool = False  # named a day that does not exist ("2/30")


@dataclass(frozen=True)
class _Now:
    """The moment of the request, in UTC and in the clinic's zone."""

    utc: datetime
    local: datetime
    tz: ZoneInfo

    @property
    def today(self) -> date:
        """The clinic's local date."""
        return self.local.date()


_MORNING = _Clock(8 * 60, 12 * 60, "morning", "part")
_LUNCH = _Clock(11 * 60 + 30, 13 * 60 + 30, "lunchtime", "part")
_AFTERNOON = _Clock(12 * 60, 17 * 60, "afternoon", "part")
_EVENING = _Clock(17 * 60, 20 * 60, "evening", "part")
_PARTS: Dict[str, _Clock] = {
    "morning": _MORNING,
    "am": _MORNING,
    "lunch": _LUNCH,
    "lunchtime": _LUNCH,
    "afternoon": _AFTERNOON,
    "pm": _AFTERNOON,
    "evening": _EVENING,
    "night": _EVENING,
}
# Named times after "after"/"before": (minutes "before" it, minutes "after" it).
_NAMED_BOUNDS: Dict[str, Tuple[int, int]] = {
    "noon": (720, 720),
    "midday": (720, 720),
    "lunch": (_LUNCH.start, _LUNCH.end),
    "work": (8 * 60, 17 * 60),
}

_WEEKDAY_WORDS = "monday tuesday wednesday thursday friday saturday sunday"
_MONTH_WORDS = (
    "january february march april may june july august september october november "
    "december"
)
_WEEKDAYS = tuple(_WEEKDAY_WORDS.split())
_MONTHS = tuple(_MONTH_WORDS.split())
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = tuple(name[:3].title() for name in _MONTHS)

# --------------------------------------------------------------------------
# Normalising: SMS shorthand, typos and number words become canonical words
# --------------------------------------------------------------------------


def _aliases() -> Dict[str, str]:
    """Maps shorthand and common misspellings to the words the rules expect."""
    groups = {
        "tomorrow": "tmrw tmr tmrow tmro tmw tmrrw tomoz 2moro 2morro 2morrow 2mrw "
        "tomoro tomorow tommorow tommorrow tomorro tommorw tomm",
        "today": "tdy 2day tday",
        "tonight": "tonite 2nite 2night",
        "yesterday": "yday yest yesterdy",
        "next": "nxt nex",
        "week": "wk",
        "weeks": "wks",
        "weekend": "wknd wkend weeknd weekends",
        "morning": "morn mornin mrng morng mornings",
        "afternoon": "aft aftn aftnoon afternon arvo afternoons afternooon",
        "evening": "eve evng evenings evenin",
        "night": "nite nights",
        "lunch": "lunchtime",
        "before": "b4",
        "after": "aftr",
        "monday": "mon mondays",
        "tuesday": "tue tues tusday teusday tuesdy tuseday tuesdays",
        "wednesday": "wed weds wensday wendsday wednsday wedensday wednesdays",
        "thursday": "thu thur thurs thrusday thursdy thursay thurday thursdays",
        "friday": "fri firday fryday fridy fridays",
        "saturday": "sat satur saturdy saterday satuday saturdays",
        "sunday": "sun sundy sundays",
        "january": "jan",
        "february": "feb febuary febr",
        "march": "mar",
        "april": "apr",
        "june": "jun",
        "july": "jul",
        "august": "aug",
        "september": "sep sept",
        "october": "oct",
        "november": "nov",
        "december": "dec",
    }
    aliases = {alias: word for word, text in groups.items() for alias in text.split()}
    numbers = "one two three four five six seven eight nine ten eleven twelve"
    aliases.update({word: str(n) for n, word in enumerate(numbers.split(), 1)})
    return aliases


_ALIASES = _aliases()
_TOKEN = re.compile(r"[a-z0-9]+", re.ASCII)
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]+")
# Claimed phrases are overwritten with this character: it is neither a word
# character nor white space, so no later pattern matches into or across them.
_GAP = "\x00"
_DOTTED_AMPM = re.compile(r"(?<![a-z])([ap])\s?\.\s?m\b\.?", re.ASCII)
_DOTTED_ASAP = re.compile(r"\ba\.\s?s\.\s?a\.\s?p\b\.?", re.ASCII)
_PUNCTUATION = str.maketrans(
    {
        **dict.fromkeys("\u2018\u2019\u02bc`", "'"),
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015", "-"),
        "@": " at ",
    }
)


def _normalise(text: str) -> str:
    """Lower-cases, unifies punctuation and rewrites shorthand to canonical words.

    Everything after this works on the result, so the rules only need to know
    one spelling of each word ("tmrw" -> "tomorrow", "tues" -> "tuesday",
    "three" -> "3", "p.m." -> "pm").
    """
    text = _CONTROL.sub(" ", text[:MAX_CHARS])
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCTUATION)
    text = _DOTTED_AMPM.sub(r"\1m", text)
    text = _DOTTED_ASAP.sub("asap", text)
    text = _TOKEN.sub(lambda m: _ALIASES.get(m.group(), m.group()), text)
    return _WHITESPACE.sub(" ", text).strip()


def _blank(text: str, spans: Sequence[Tuple[int, int]]) -> str:
    """Overwrites claimed spans with ``_GAP``, keeping every position in place."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = _GAP * (end - start)
    return "".join(chars)


# --------------------------------------------------------------------------
# Regular-expression pieces
# --------------------------------------------------------------------------

_WD = "|".join(_WEEKDAYS)
_MONTH = "|".join(_MONTHS)
_MONTH_NOT_MAY = "|".join(m for m in _MONTHS if m != "may")  # "3 may i ..."
_SUFFIX = r"(?:st|nd|rd|th)"
# An optional weekday and article before a date: "tuesday, the 10th".
_LEAD = rf"(?:(?:on\s+)?(?:{_WD}),?\s+)?(?:on\s+)?(?:the\s+)?"
_YEAR = r"(?:,?\s*(?P<y>\d{4})\b)?"
_UNITS = (
    r"minutes?|mins?|hours?|hrs?|days?|weeks?|fortnights?|months?|years?|yrs?|"
    r"times?|people|persons?|kids?|children|of|x"
)
# A number that is an amount ("2 days", "3 kids", "10%"), not an hour or a day.
_NOT_AMOUNT = rf"(?!\s?(?:%|/|-?\s?(?:{_UNITS})\b))"
# Nouns after an ordinal that make it not a day of the month: "my 2nd visit".
_ORDINAL_NOUNS = (
    r"time|visit|appointment|floor|dose|shot|opinion|child|kid|one|week|day|"
    r"month|year|grade|try|attempt"
)
_NUM = r"(?P<n>\d{1,3}|an?|(?:a\s+)?couple(?:\s+of)?|(?:a\s+)?few)"
_UNIT = r"(?P<u>day|week|fortnight|month|year)s?"


def _hm(prefix: str) -> str:
    """An hour, optional minutes and optional am/pm, as named groups."""
    return (
        rf"(?<![\d/:.])(?P<{prefix}_h>\d{{1,2}})(?!\d)(?::(?P<{prefix}_m>\d{{2}}))?"
        rf"(?P<{prefix}_ap>\s*(?:am|pm)\b|[ap]\b)?"
    )


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


# --------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------


def _safe_date(year: int, month: int, day: int) -> Optional[date]:
    """The date, or None if there is no such date (or it is too near year 9999)."""
    if not 1 <= year < 9999:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _add_months(day: date, months: int) -> Optional[date]:
    """The same day ``months`` later, clamped to the month's end (Jan 31 -> Feb 28)."""
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= year < 9999:
        return None
    return date(year, month + 1, min(day.day, monthrange(year, month + 1)[1]))


def _plus_days(day: date, days: int) -> Optional[date]:
    """``day`` shifted by ``days``, or None past the calendar's ends."""
    try:
        shifted = day + timedelta(days=days)
    except OverflowError:
        return None
    return shifted if shifted.year < 9999 else None


def _monday(day: date) -> date:
    """The Monday of ``day``'s week."""
    return day - timedelta(days=day.weekday())


def _next_date(today: date, month: int, day: int) -> Optional[date]:
    """The first month/day on or after today (Feb 29 waits for a leap year)."""
    for year in range(today.year, today.year + 9):
        found = _safe_date(year, month, day)
        if found and found >= today:
            return found
    return None


def _next_day_of_month(today: date, day: int) -> Optional[date]:
    """The first ``day``-th of a month on or after today ("the 31st" skips April)."""
    if not 1 <= day <= 31:
        return None
    for months in range(13):
        first = _add_months(today.replace(day=1), months)
        found = first and _safe_date(first.year, first.month, day)
        if found and found >= today:
            return found
    return None


def _year(text: str) -> int:
    """A year as written: two digits mean 20xx."""
    value = int(text)
    return 2000 + value if len(text) == 2 else value


def _one(day: Optional[date], rollover: bool = False) -> Optional[_Days]:
    return _Days(day, day, rollover) if day else None


def _span(first: Optional[date], last: Optional[date]) -> Optional[_Days]:
    return _Days(first, last) if first and last and first <= last else None


def _amount(text: str) -> int:
    """The number in "in 2 days", "in a week", "in a couple of days"."""
    if text.isdigit():
        return int(text)
    if "couple" in text:
        return 2
    return 3 if "few" in text else 1


def _shift(today: date, amount: int, unit: str) -> Optional[date]:
    """Today moved by ``amount`` units (negative: back)."""
    if unit in ("month", "year"):
        return _add_months(today, amount * (12 if unit == "year" else 1))
    per_unit = {"day": 1, "week": 7, "fortnight": 14}[unit]
    return _plus_days(today, amount * per_unit)


# Day rules: each reads one kind of phrase; None means "looks like it, but is not
# a date" (e.g. "2/30").
_DayRule = Callable[[re.Match[str], date], Optional[_Days]]


def _iso_date(m: re.Match[str], today: date) -> Optional[_Days]:
    return _one(_safe_date(int(m["y"]), int(m["m"]), int(m["d"])))


def _numeric_date(m: re.Match[str], today: date) -> Optional[_Days]:
    """US order: "3/10" is March 10."""
    month, day = int(m["m"]), int(m["d"])
    if m["y"]:
        return _one(_safe_date(_year(m["y"]), month, day))
    return _one(_next_date(today, month, day))


def _named_month_date(m: re.Match[str], today: date) -> Optional[_Days]:
    month, day = _MONTHS.index(m["mon"]) + 1, int(m["d"])
    if m["y"]:
        return _one(_safe_date(int(m["y"]), month, day))
    return _one(_next_date(today, month, day))


def _day_of_month(m: re.Match[str], today: date) -> Optional[_Days]:
    return _one(_next_day_of_month(today, int(m["d"])))


_WORD_OFFSETS = {
    "day after tomorrow": 2,
    "tomorrow": 1,
    "today": 0,
    "tonight": 0,
    "yesterday": -1,
    "day before yesterday": -2,
}


def _relative_word(m: re.Match[str], today: date) -> Optional[_Days]:
    word = _WHITESPACE.sub(" ", m["w"]).removeprefix("the ")
    day = _plus_days(today, _WORD_OFFSETS[word])
    if day is None:
        return None
    return _Days(day, day, implied=_EVENING if word == "tonight" else None)


def _in_units(m: re.Match[str], today: date) -> Optional[_Days]:
    """Reads a count of days, weeks, months or years from today.

    "in 2 days" and "2 days from tomorrow" are one day; "within 2 days" and "in
    the next 2 days" are today up to that day.
    """
    groups = m.groupdict()
    start = today + timedelta(days=1) if groups.get("base") == "tomorrow" else today
    target = _shift(start, _amount(m["n"]), m["u"])
    if groups.get("kw", "in") != "in":
        return _span(today, target)
    return _one(target)


def _units_ago(m: re.Match[str], today: date) -> Optional[_Days]:
    return _one(_shift(today, -_amount(m["n"]), m["u"]))


def _week_offset(modifier: str) -> int:
    """0 for this week, 1 for next, 2 for the week after next, -1 for last."""
    if "after next" in modifier:
        return 2
    if "next" in modifier:
        return 1
    return -1 if "last" in modifier else 0


def _weekday_in_week(m: re.Match[str], today: date) -> Optional[_Days]:
    """Reads "tuesday next week", "next week on tuesday", "tuesday this week"."""
    monday = _monday(today) + timedelta(weeks=_week_offset(m["mod"]))
    return _one(monday + timedelta(days=_WEEKDAYS.index(m["wd"])))


def _week(m: re.Match[str], today: date) -> Optional[_Days]:
    monday = _monday(today) + timedelta(weeks=_week_offset(m.group()))
    return _Days(monday, monday + timedelta(days=6))


def _weekend(m: re.Match[str], today: date) -> Optional[_Days]:
    saturday = _monday(today) + timedelta(weeks=_week_offset(m.group()), days=5)
    return _Days(saturday, saturday + timedelta(days=1))


def _month(m: re.Match[str], today: date) -> Optional[_Days]:
    first = _add_months(today.replace(day=1), _week_offset(m.group()))
    after = first and _add_months(first, 1)
    return _span(first, after and after - timedelta(days=1))


def _named_month(m: re.Match[str], today: date) -> Optional[_Days]:
    """Reads "in April" as the next April that has not ended."""
    month = _MONTHS.index(m["mon"]) + 1
    year = today.year if month >= today.month else today.year + 1
    first = _safe_date(year, month, 1)
    after = first and _add_months(first, 1)
    return _span(first, after and after - timedelta(days=1))


def _year_range(m: re.Match[str], today: date) -> Optional[_Days]:
    year = today.year + (1 if m["mod"] == "next" else -1)
    return _span(_safe_date(year, 1, 1), _safe_date(year, 12, 31))


def _weekday(m: re.Match[str], today: date) -> Optional[_Days]:
    """Bare/this: next on or after today; next: in next week; last: before today."""
    weekday = _WEEKDAYS.index(m["wd"])
    modifier = m["mod"] or ""
    if modifier == "next":
        return _one(_monday(today) + timedelta(weeks=1, days=weekday))
    if modifier in ("last", "past"):
        back = (today.weekday() - weekday) % 7 or 7
        return _one(today - timedelta(days=back))
    ahead = (weekday - today.weekday()) % 7
    return _one(today + timedelta(days=ahead), rollover=ahead == 0)


# In priority order: a phrase claimed by an earlier rule is not read again.
_DAY_RULES: List[Tuple[re.Pattern[str], _DayRule]] = [
    (
        _compile(rf"\b{_LEAD}(?P<y>\d{{4}})-(?P<m>\d{{1,2}})-(?P<d>\d{{1,2}})\b"),
        _iso_date,
    ),
    (
        _compile(
            rf"\b{_LEAD}(?<![\d/.])(?P<m>\d{{1,2}})/(?P<d>\d{{1,2}})"
            r"(?:/(?P<y>\d{4}|\d{2}))?(?![/\d])"
        ),
        _numeric_date,
    ),
    (
        _compile(
            rf"\b{_LEAD}(?P<mon>{_MONTH})\.?,?\s*(?:the\s+)?(?P<d>\d{{1,2}})"
            rf"{_SUFFIX}?\b{_YEAR}"
        ),
        _named_month_date,
    ),
    (
        _compile(
            rf"\b{_LEAD}(?P<d>\d{{1,2}}){_SUFFIX}?\s+(?:of\s+)?"
            rf"(?P<mon>{_MONTH_NOT_MAY})\b{_YEAR}"
        ),
        _named_month_date,
    ),
    (
        _compile(
            rf"\b{_LEAD}(?P<d>\d{{1,2}}){_SUFFIX}\b"
            rf"(?!\s+(?:of\s+)?(?:{_ORDINAL_NOUNS})s?\b)"
        ),
        _day_of_month,
    ),
    (
        _compile(
            r"\b(?:on\s+)?the\s+(?P<d>3[01]|[12]\d|0?[1-9])\b"
            rf"(?![:/.]?\d|\s*(?:am|pm|[ap]\b|-|to\b|{_UNITS}\b))"
        ),
        _day_of_month,
    ),
    (
        _compile(
            rf"\b{_NUM}\s*{_UNIT}\s+(?:from\s+(?P<base>now|today|tomorrow)|later|out)\b"
        ),
        _in_units,
    ),
    (
        _compile(
            r"\b(?P<w>(?:the\s+)?day\s+after\s+tomorrow|"
            r"(?:the\s+)?day\s+before\s+yesterday|tomorrow|today|tonight|yesterday)\b"
        ),
        _relative_word,
    ),
    (
        _compile(
            rf"\b(?P<kw>in\s+the\s+next|within(?:\s+the\s+next)?|in)\s+{_NUM}\s*{_UNIT}\b"
        ),
        _in_units,
    ),
    (_compile(rf"\b{_NUM}\s*{_UNIT}\s+ago\b"), _units_ago),
    (
        _compile(
            rf"\b(?:on\s+)?(?P<wd>{_WD}),?\s+(?:of\s+)?(?P<mod>this|next)\s+week\b"
        ),
        _weekday_in_week,
    ),
    (
        _compile(rf"\b(?P<mod>this|next)\s+week,?\s+(?:on\s+)?(?P<wd>{_WD})\b"),
        _weekday_in_week,
    ),
    (
        _compile(
            r"\b(?:(?:the\s+)?week\s+after\s+next|"
            r"(?:next|this|last|later\s+this|(?:the\s+)?rest\s+of\s+(?:this|the))"
            r"\s+week)\b"
        ),
        _week,
    ),
    (
        _compile(r"\b(?:(?:next|this|last|the|this\s+coming)\s+)?weekend\b"),
        _weekend,
    ),
    (_compile(r"\b(?:next|this|last|later\s+this)\s+month\b"), _month),
    (
        _compile(
            r"\b(?:(?:sometime\s+)?in|during|early|late|mid)\s?-?\s?"
            rf"(?:(?:early|late|mid)\s?-?\s?)?(?P<mon>{_MONTH})\b"
        ),
        _named_month,
    ),
    (_compile(r"\b(?P<mod>next|last)\s+year\b"), _year_range),
    (
        _compile(
            r"\b(?:(?P<mod>next|last|past)\s+|"
            r"(?:this\s+coming|this|coming|upcoming|following|on)\s+)?"
            rf"(?P<wd>{_WD})\b"
        ),
        _weekday,
    ),
]

# --------------------------------------------------------------------------
# Times of day
# --------------------------------------------------------------------------


def _office_hour(hour: int) -> Optional[int]:
    """An hour said without am/pm, read as a clinic would: 7-11 AM, 1-6 PM."""
    if 1 <= hour <= 6:
        return hour + 12
    return hour if 7 <= hour <= 23 else None


def _minutes(hour: int, minute: int, meridiem: str, colon: bool) -> Optional[int]:
    """Minutes after midnight, or None for "25:00", "13pm", a bare "at 0"."""
    if minute > 59:
        return None
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        return (hour % 12 + (12 if meridiem == "p" else 0)) * 60 + minute
    if hour == 0 and colon:  # "0:30" is the 24-hour clock
        return minute
    placed = _office_hour(hour)
    return None if placed is None else placed * 60 + minute


@dataclass(frozen=True)
class _Said:
    """An hour as written: "3", "3:30pm"."""

    hour: int
    minute: int
    meridiem: str  # "a", "p" or ""
    colon: bool

    @classmethod
    def of(cls, m: re.Match[str], prefix: str) -> _Said:
        groups = m.groupdict()
        minute = groups.get(f"{prefix}_m")
        meridiem = (groups.get(f"{prefix}_ap") or "").strip()[:1]
        return cls(int(m[f"{prefix}_h"]), int(minute or 0), meridiem, bool(minute))

    def minutes(self, meridiem: Optional[str] = None) -> Optional[int]:
        """Minutes after midnight, with ``meridiem`` instead of the written one."""
        chosen = self.meridiem if meridiem is None else meridiem
        return _minutes(self.hour, self.minute, chosen, self.colon)

    @property
    def bare(self) -> bool:
        return not self.meridiem and self.hour <= 12


def _clock_label(minutes: int) -> str:
    """Shows minutes after midnight as "3 PM", "3:30 PM", "noon", "midnight"."""
    if minutes in (0, 1440):
        return "midnight"
    if minutes == 720:
        return "noon"
    hour, minute = divmod(minutes, 60)
    suffix = "AM" if hour < 12 else "PM"
    shown = f"{hour % 12 or 12}:{minute:02d}" if minute else str(hour % 12 or 12)
    return f"{shown} {suffix}"


def _point(minutes: Optional[int], bare: bool = False) -> Optional[_Clock]:
    if minutes is None:
        return None
    return _Clock(minutes, minutes + 60, _clock_label(minutes), "point", bare)


def _range(start: Optional[int], end: Optional[int]) -> Optional[_Clock]:
    if start is None or end is None:
        return None
    end = 1440 if end == 0 else end  # "8pm-12am"
    if not start < end <= 1440:
        return None
    return _Clock(start, end, f"{_clock_label(start)}-{_clock_label(end)}")


def _opposite(meridiem: str) -> str:
    return "a" if meridiem == "p" else "p"


def _range_ends(first: _Said, second: _Said) -> Tuple[Optional[int], Optional[int]]:
    """Both ends of "2-4pm", "10-2pm", "11am-1", "9-5", "5-7" in minutes.

    A missing am/pm is taken from the other end when that keeps the range in
    order ("2-4pm" -> 14-16), else the opposite ("10-2pm" -> 10-14).
    """
    if first.meridiem and second.meridiem:
        return first.minutes(), second.minutes()
    if second.meridiem:
        end, same = second.minutes(), first.minutes(second.meridiem)
        if same is not None and end is not None and same < end:
            return same, end
        return first.minutes(_opposite(second.meridiem)), end
    if first.meridiem:
        start, same = first.minutes(), second.minutes(first.meridiem)
        if same is not None and start is not None and same > start:
            return start, same
        return start, second.minutes(_opposite(first.meridiem))
    start, end = first.minutes(), second.minutes()
    if start is not None and end is not None and end <= start and end < 720:
        end += 720  # "5-7" -> 17:00-19:00
    return start, end


def _between(m: re.Match[str]) -> Optional[_Clock]:
    return _range(*_range_ends(_Said.of(m, "a"), _Said.of(m, "b")))


_AFTER_WORDS = ("after", "not before", "no earlier than", "later than")


def _after_before(m: re.Match[str]) -> Optional[_Clock]:
    """Reads "after 4" as up to midnight and "before 10" as from midnight."""
    after = _WHITESPACE.sub(" ", m["kw"]) in _AFTER_WORDS
    if m["named"]:
        before_at, after_at = _NAMED_BOUNDS[m["named"]]
        bound: Optional[int] = after_at if after else before_at
    else:
        bound = _Said.of(m, "a").minutes()
    if bound is None:
        return None
    if after:
        return _Clock(bound, 1440, f"after {_clock_label(bound)}")
    return _Clock(0, bound, f"before {_clock_label(bound)}") if bound else None


def _explicit(m: re.Match[str]) -> Optional[_Clock]:
    said = _Said.of(m, "a")
    return _point(said.minutes(), said.bare)


def _past_to(m: re.Match[str]) -> Optional[_Clock]:
    """Reads "half past 3" (15:30), "quarter past 3", "quarter to 3" (14:45)."""
    hour = _Said.of(m, "a").minutes()
    if hour is None:
        return None
    offset = {"half past": 30, "quarter past": 15, "quarter to": -15}
    return _point(hour + offset[_WHITESPACE.sub(" ", m["kw"])], not m["a_ap"])


def _noon(m: re.Match[str]) -> Optional[_Clock]:
    return _point(720)


def _part(m: re.Match[str]) -> Optional[_Clock]:
    return _PARTS[_WHITESPACE.sub("", m["part"])]


_ClockRule = Callable[[re.Match[str]], Optional[_Clock]]
_AT_WORDS = r"at|around|about|round|approx|approximately"

_CLOCK_RULES: List[Tuple[re.Pattern[str], _ClockRule]] = [
    (
        _compile(
            r"\b(?P<kw>half\s+past|quarter\s+past|quarter\s+to)\s+"
            rf"(?P<a_h>\d{{1,2}})(?P<a_ap>\s*(?:am|pm)\b|[ap]\b)?\b{_NOT_AMOUNT}"
        ),
        _past_to,
    ),
    (_compile(rf"\bbetween\s+{_hm('a')}\s*(?:and|to|-)\s*{_hm('b')}"), _between),
    (
        _compile(
            rf"(?:\bfrom\s+)?{_hm('a')}\s*(?:-|\bto\b|\btill?\b|\buntil\b)\s*"
            rf"{_hm('b')}(?![-/.]\d){_NOT_AMOUNT}"
        ),
        _between,
    ),
    (
        _compile(
            r"\b(?P<kw>not\s+before|no\s+earlier\s+than|later\s+than|after|"
            r"not\s+after|no\s+later\s+than|earlier\s+than|before|by)\s+"
            rf"(?:(?P<named>noon|midday|lunch|work)\b|{_hm('a')}\b{_NOT_AMOUNT})"
        ),
        _after_before,
    ),
    (
        _compile(
            r"(?<![\d/:.])\b(?P<a_h>\d{1,2})(?::(?P<a_m>\d{2}))?"
            r"(?P<a_ap>\s*(?:am|pm)\b|[ap]\b)"
        ),
        _explicit,
    ),
    (_compile(r"(?<![\d/:.])\b(?P<a_h>\d{1,2}):(?P<a_m>\d{2})\b"), _explicit),
    (
        _compile(
            rf"\b(?:{_AT_WORDS})\s+(?P<a_h>\d{{1,2}})(?:\s*ish)?\b"
            rf"(?![:/.]?\d|\s*{_SUFFIX}\b){_NOT_AMOUNT}"
        ),
        _explicit,
    ),
    (
        _compile(r"(?<![\d/:.])\b(?P<a_h>\d{1,2})\s*(?:o\s?'?\s?clock|ish)\b"),
        _explicit,
    ),
    (_compile(r"\b(?:12\s+)?(?:noon|midday)\b"), _noon),
    (_compile(r"\bin\s+the\s+(?P<part>am|pm)\b"), _part),
    (
        _compile(r"\b(?P<part>morning|afternoon|evening|lunch\s*time|lunch)\b"),
        _part,
    ),
]

# Right after a day: "fri am", "tomorrow night", "tmrw 3", "friday, 10".
_ATTACHED = _compile(
    r"\s?,?\s?(?:at\s+)?(?:(?P<part>am|pm|night)\b|(?P<a_h>\d{1,2})\b"
    r"(?![:/.]?\d|\s*(?:am|pm|[ap]\b|-|to\b|till?\b|until\b|o\s?'?\s?clock|ish|"
    rf"{_SUFFIX}\b)){_NOT_AMOUNT})"
)


def _attached(m: re.Match[str]) -> Optional[_Clock]:
    if m["part"]:
        return _PARTS[m["part"]]
    return _explicit(m)


# --------------------------------------------------------------------------
# Reading a text
# --------------------------------------------------------------------------

_ASAP = _compile(
    r"\b(?:asap|as\s+soon\s+as\s+(?:possible|poss|you\s+can|u\s+can|we\s+can|"
    r"i\s+can)|(?:the\s+)?(?:soonest|earliest)(?:\s+(?:possible|available))?|"
    r"(?:first|1st|next)\s+(?:available|opening|open\s+slot|slot)|any\s*time|"
    r"any\s+day|whenever|right\s+away|right\s+now|immediately|urgent(?:ly)?|"
    r"(?:today|tomorrow)\s+or\s+(?:today|tomorrow|the\s+day\s+after))\b"
)
# "since monday" tells the story of the complaint, not when to come in.
_SINCE = _compile(
    r"\bsince\s+(?:(?:last|this|the|early|late|on)\s+)*(?:yesterday|today|tonight|"
    rf"{_WD}|morning|afternoon|evening|night|week|weekend|month|year|"
    rf"(?:{_MONTH})(?:\s+\d{{1,2}}{_SUFFIX}?)?|\d{{1,2}}(?:{_SUFFIX}|/\d{{1,2}})|"
    r"\d+\s+(?:day|week|month|year)s?\s+ago)\b"
)
_NEGATION = _compile(
    r"(?:\bnot|\bno|\bexcept|n't|\bcannot|\bother\s+than)"
    r"(?:\s+(?!until\b|till?\b|unless\b|sure\b|if\b)[a-z']+){0,3}\s*$"
)
_FILLER = _compile(
    r"\b(?:please|pls|plz|like|maybe|perhaps|how\s+about|what\s+about|"
    r"could\s+we\s+do|can\s+we\s+do|could\s+i\s+come\s+in|can\s+i\s+come\s+in|"
    r"works\s+for\s+me|would\s+work|works|if\s+that\s+works|if\s+possible|ok|okay|"
    r"hmm+|um+|uh+|er|i\s+guess|i\s+think|thanks|thank\s+you|thx|ty|yes|yeah|yep|"
    r"sure|hi|hello|hey|on|for|at|the|is|fine|good|great)\b"
)
_CLAUSE = re.compile(r"[,;!?()\[\]\x00]+|\.(?:\s|$)")
_DATE_LIKE = _compile(rf"\b(?:{_MONTH})\b|\d[./-]\d")
_DATE_TOKEN = _compile(r"\b\d{1,4}[./-]\d{1,2}(?:[./-]\d{2,4})?\b")


def _take_asap(work: str) -> Tuple[bool, str]:
    spans = [m.span() for m in _ASAP.finditer(work)]
    return bool(spans), _blank(work, spans)


def _take_days(work: str, today: date) -> Tuple[List[_Found[_Days]], bool, str]:
    """Every day phrase in the text, in text order; their spans are blanked.

    The flag says whether some phrase was shaped like a date but is none
    ("2/30", "32nd"): if nothing else names a day, the answer is "unparsed",
    not a time on some other day.
    """
    found: List[_Found[_Days]] = []
    invalid = False
    for pattern, rule in _DAY_RULES:
        hits = [(m, rule(m, today)) for m in pattern.finditer(work)]
        found += [_Found(m.start(), m.end(), days) for m, days in hits if days]
        invalid = invalid or any(days is None for _, days in hits)
        work = _blank(work, [m.span() for m, _ in hits])
    return sorted(found, key=lambda f: f.start), invalid, work


def _take_clocks(
    work: str, days: Sequence[_Found[_Days]]
) -> Tuple[List[_Found[_Clock]], str]:
    """Every time phrase: first those right after a day, then the rest."""
    found: List[_Found[_Clock]] = []
    for day in days:
        m = _ATTACHED.match(work, day.end)
        clock = _attached(m) if m else None
        if m and clock:
            found.append(_Found(m.start(), m.end(), clock))
            work = _blank(work, [m.span()])
    for pattern, rule in _CLOCK_RULES:
        hits = [(m, rule(m)) for m in pattern.finditer(work)]
        found += [_Found(m.start(), m.end(), clock) for m, clock in hits if clock]
        work = _blank(work, [m.span() for m, clock in hits if clock])
    return sorted(found, key=lambda f: f.start), work


def _negated(norm: str, position: int) -> bool:
    """True for "not monday", "can't do monday", "except monday"."""
    return bool(_NEGATION.search(norm[max(0, position - 40) : position]))


def _choose_days(
    found: Sequence[_Found[_Days]], norm: str, now: _Now
) -> Optional[_Found[_Days]]:
    """The first day named that is not negated and not wholly past."""
    usable = [f for f in found if not _negated(norm, f.start)]
    for candidate in usable:
        end = _at(candidate.value.last + timedelta(days=1), 0, now.tz)
        if end > now.utc:
            return candidate
    return usable[0] if usable else None


def _choose_clock(
    found: Sequence[_Found[_Clock]], anchor: Optional[_Found[_Days]]
) -> Optional[_Clock]:
    """The most precise time named, nearest the chosen day, fitted to its context."""
    implied = anchor.value.implied if anchor else None
    if not found:
        return implied
    points = [f for f in found if f.value.kind == "point"] or list(found)
    if anchor:
        best = min(
            points,
            key=lambda f: min(abs(f.start - anchor.end), abs(anchor.start - f.end)),
        )
    else:
        best = points[0]
    parts = [f.value for f in found if f.value.kind == "part"]
    context = parts[0] if parts else implied
    return _fit(best.value, context)


def _fit(clock: _Clock, context: Optional[_Clock]) -> _Clock:
    """Moves a bare hour into the half of the day its context names.

    "tonight at 7" is 19:00, not 07:00; "3 in the morning" is 03:00.
    """
    if not clock.bare or context is None:
        return clock
    shift = 0
    if context.start >= 720 and clock.start < 720:
        shift = 720
    elif context.end <= 720 and clock.start >= 720:
        shift = -720
    fitted = _point(clock.start + shift) if shift else None
    return fitted or clock


def _fallback_candidates(work: str) -> List[str]:
    """Leftovers worth showing dateparser: short clauses, then date-like tokens."""
    candidates = []
    for clause in _CLAUSE.split(work):
        words = _FILLER.sub(" ", clause).split()
        if 0 < len(words) <= MAX_FALLBACK_WORDS:
            candidates.append(" ".join(words))
    candidates = [c for c in candidates if _DATE_LIKE.search(c)]
    return candidates + [m.group() for m in _DATE_TOKEN.finditer(work)]


def _dateparser_days(work: str, now: _Now) -> Optional[_Days]:
    """The first day dateparser finds in what the rules left over."""
    for candidate in _fallback_candidates(work):
        day = _ask_dateparser(candidate, now.local.replace(tzinfo=None))
        if day:
            return _one(day)
    return None


def _ask_dateparser(text: str, base: datetime) -> Optional[date]:
    """One day dateparser reads in ``text``, or None (also for a month or a year)."""
    from dateparser.date import DateDataParser  # lazy: the import takes ~0.25 s

    settings = {
        "PREFER_DATES_FROM": "future",
        "RELATIVE_BASE": base,
        "DATE_ORDER": "MDY",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    try:
        data = DateDataParser(languages=["en"], settings=settings).get_date_data(text)
    except Exception:  # dateparser raises assorted errors on odd input
        return None
    value: object = data.date_obj
    if data.period != "day" or not isinstance(value, datetime):
        return None
    return _safe_date(value.year, value.month, value.day)


def _read(text: str, now: _Now) -> _Reading:
    """What ``text`` names: an asap wish, a day (or days), a time of day."""
    norm = _normalise(text)
    work = _blank(norm, [m.span() for m in _SINCE.finditer(norm)])
    asap, work = _take_asap(work)
    days_found, invalid, work = _take_days(work, now.today)
    clocks_found, work = _take_clocks(work, days_found)
    chosen = _choose_days(days_found, norm, now)
    clock = _choose_clock(clocks_found, chosen)
    days = chosen.value if chosen else _dateparser_days(work, now)
    return _Reading(asap, days, clock, invalid=invalid and days is None)


# --------------------------------------------------------------------------
# From what was named to a window
# --------------------------------------------------------------------------


def _at(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """Local wall-clock time on ``day`` as an aware UTC datetime.

    Built from the local date, never by adding hours to an aware local time, so
    DST days come out 23 or 25 hours long. A time the clocks skip (02:30 on the
    spring-forward day) lands an hour later; a repeated one takes its first
    occurrence (fold=0).
    """
    naive = datetime.combine(day, time()) + timedelta(minutes=minutes)
    return naive.replace(tzinfo=tz).astimezone(timezone.utc)


def _clock_on(day: date, clock: _Clock, tz: ZoneInfo) -> Tuple[datetime, datetime]:
    start = _at(day, clock.start, tz)
    if clock.kind == "point":
        return start, start + POINT_LENGTH
    return start, _at(day, clock.end, tz)


def _time_left(day: date, clock: Optional[_Clock], now: _Now) -> bool:
    """Whether ``day`` (at ``clock``) is still worth offering at ``now``."""
    if clock is None:
        return day > now.today or now.local.time() < SAME_DAY_CUTOFF
    start, end = _clock_on(day, clock, now.tz)
    return start >= now.utc if clock.kind == "point" else end > now.utc


def _day_label(day: date, now: _Now) -> str:
    label = f"{_DAY_NAMES[day.weekday()]} {_MONTH_NAMES[day.month - 1]} {day.day}"
    return label if day.year == now.today.year else f"{label} {day.year}"


def _window(reading: _Reading, now: _Now) -> Tuple[datetime, datetime, str]:
    """The window (UTC) and description of a reading that names a day or time."""
    days, clock = reading.days, reading.clock
    if days is not None and days.first != days.last:
        # "this week" on a Wednesday is described (and starts) from today.
        first = max(days.first, now.today) if days.last >= now.today else days.first
        start = _at(first, 0, now.tz)
        end = _at(days.last + timedelta(days=1), 0, now.tz)
        label = f"{_day_label(first, now)} - {_day_label(days.last, now)}"
        return start, end, label
    if days is None:
        day = now.today
        if clock is not None and not _time_left(day, clock, now):
            day += timedelta(days=1)
    else:
        day = days.first
        if days.rollover and not _time_left(day, clock, now):
            day += timedelta(weeks=1)
    label = _day_label(day, now)
    if clock is None:
        return _at(day, 0, now.tz), _at(day + timedelta(days=1), 0, now.tz), label
    start, end = _clock_on(day, clock, now.tz)
    return start, end, f"{label}, {clock.label}"


def _now(now: datetime, tz: ZoneInfo | str) -> _Now:
    """Checks the caller's arguments and puts ``now`` into the clinic's zone."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be time-zone aware, got {now!r}")
    if isinstance(tz, str):
        try:
            tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {tz!r}") from error
    return _Now(now.astimezone(timezone.utc), now.astimezone(tz), tz)


def _wall_clock_later(now: _Now, delta: timedelta) -> datetime:
    """``now`` plus ``delta`` on the local clock (a week later is 10:00 again)."""
    later = now.local.replace(tzinfo=None) + delta
    return later.replace(tzinfo=now.tz).astimezone(timezone.utc)


def _prefer(first: _Reading, then: _Reading) -> _Reading:
    """``first``'s day and time where it names them, ``then``'s otherwise."""
    days = first.days or then.days
    invalid = days is None and (first.invalid or then.invalid)
    return _Reading(first.asap or then.asap, days, first.clock or then.clock, invalid)


def parse_time_preference(
    text: str,
    now: datetime,
    tz: ZoneInfo | str = DEFAULT_TZ,
    horizon_days: int = 60,
    entities: Sequence[str] = (),
) -> TimeWindow:
    """Reads when a patient wants to come in; the rules are in the module docstring.

    Args:
        text: The patient's message, as typed.
        now: The current moment, time-zone aware (any zone).
        tz: The clinic's time zone.
        horizon_days: How many days after today can still be booked.
        entities: DATE/TIME entity texts NER found in ``text``; read first.

    Returns:
        The window, in the clinic's time zone, clipped to start no earlier than
        ``now`` and to end at the horizon.

    Raises:
        TimePreferenceError: With reason "unparsed", "past" or "too_far"; never
            anything else, whatever ``text`` is.
        ValueError: For a naive ``now``, an unknown ``tz`` or a horizon outside
            0..3660 days: mistakes of the caller, not of the patient.
    """
    clinic_now = _now(now, tz)
    if not 0 <= horizon_days <= MAX_HORIZON_DAYS:
        raise ValueError(f"horizon_days must be 0..{MAX_HORIZON_DAYS}")
    reading = _read(text, clinic_now)
    if entities:
        reading = _prefer(_read(" , ".join(entities), clinic_now), reading)
    if reading.invalid:
        raise TimePreferenceError("unparsed", "no such date")
    if reading.days is None and reading.clock is None:
        if not reading.asap:
            raise TimePreferenceError("unparsed", "no day or time found")
        start = clinic_now.utc
        end = _wall_clock_later(clinic_now, timedelta(days=ASAP_DAYS))
        return _finish(
            start, end, True, "as soon as possible", clinic_now, horizon_days
        )
    start, end, description = _window(reading, clinic_now)
    return _finish(start, end, False, description, clinic_now, horizon_days)


def _finish(
    start: datetime,
    end: datetime,
    asap: bool,
    description: str,
    now: _Now,
    horizon_days: int,
) -> TimeWindow:
    """Refuses past and too-far windows, clips the rest, converts to clinic time."""
    if end <= now.utc:
        raise TimePreferenceError("past", description)
    limit = _at(now.today + timedelta(days=horizon_days + 1), 0, now.tz)
    if start >= limit:
        raise TimePreferenceError("too_far", description)
    start, end = max(start, now.utc), min(end, limit)
    return TimeWindow(
        start.astimezone(now.tz), end.astimezone(now.tz), asap, description
    )
