"""Compares our time parser with dateparser and recognizers-text-date-time.

Issue 12 asks whether a kept library can read patients' time wishes instead of
the hand-written ``scheduling/timeparse.py``. This script answers with numbers:
every phrasing of ``tests/scheduling/test_timeparse.py`` (with the window or the
refusal the tests expect) and the time answers of the booking transcripts
(``tests/transcripts/*.yml``) are read by

* ``ours``: ``parse_time_preference``;
* ``dateparser`` (already a dependency): ``DateDataParser.get_date_data`` on the
  whole text, else the first phrase ``search_dates`` finds, with the clinic's
  settings (future dates, a fixed clock, America/Chicago, US month/day order);
* ``recognizers``: Microsoft's ``recognizers-text-date-time``, when importable
  (its last release is a 2019 alpha that needs ``emoji<2``; install it in a
  throwaway venv together with dateparser and run this script there).

A library's reading becomes a window the way the clinic treats one: a day is
local midnight to midnight, a time of day one hour, a week Monday to Sunday; a
window wholly before now is "past", one starting after the 60-day horizon
"too_far", nothing read "unparsed". A case is right when the outcome equals the
expected one (start and end compared in UTC). The clock is fixed by the tests,
so every run prints the same table.

Usage::

    .venv/bin/python benchmarks/timeparse_compare.py [--all]

``--all`` lists every case a parser gets wrong (default: the first 8 each).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduling.timeparse import (  # noqa: E402  (after the path is set)
    TimePreferenceError,
    parse_time_preference,
)

TZ_NAME = "America/Chicago"
TZ = ZoneInfo(TZ_NAME)
HORIZON_DAYS = 60
ASAP_DAYS = 7
Window = Tuple[datetime, datetime]
# A window (UTC), or the refusal: "unparsed", "past", "too_far"; or "asap".
Outcome = Union[Window, str]
Reader = Callable[[str, datetime], Outcome]


@dataclass(frozen=True)
class Case:
    """One phrasing, when it is said, what the clinic expects, and its class."""

    text: str
    now: datetime
    expected: Outcome
    kind: str


def _load_tests() -> ModuleType:
    """The timeparse test module, whose case lists are the benchmark's cases."""
    path = ROOT / "tests" / "scheduling" / "test_timeparse.py"
    spec = importlib.util.spec_from_file_location("test_timeparse", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Checked in this order: the first class whose pattern matches names the case.
_KINDS: Sequence[Tuple[str, str]] = (
    ("sentence", r"^(?:\S+\s+){5,}"),
    ("shorthand, typos", r"\b(?:tmrw|2moro|nxt|tues|thurs|fri|aft|three)\b|@|4ish"),
    ("week, month", r"\bweeks?\b|weekend|month|april|within|next \d"),
    ("range of hours", r"\b(?:after|before|between)\b|\d\s*-\s*\d"),
    ("clock time", r"\d(?::\d\d)?\s*(?:am|pm|a\.m\.)|\bat \d|:\d\d|\bnoon|past|to \d"),
    ("part of day", r"morning|afternoon|evening|night|lunch"),
    ("date", r"\d/\d|\d{4}|\d(?:st|nd|rd|th)|march|jan|dec|\d\.\d"),
    ("weekday", r"monday|tuesday|wednesday|thursday|friday|\bsat\b"),
    ("relative day", r"today|tomorrow|\bin (?:\d|a couple)"),
)


def _kind(text: str) -> str:
    lowered = text.lower()
    return next((k for k, p in _KINDS if re.search(p, lowered)), "other")


def _day(local: date) -> Window:
    start = datetime.combine(local, datetime.min.time(), TZ)
    end = datetime.combine(local + timedelta(days=1), datetime.min.time(), TZ)
    return start, end


# At WED, 10:00 on Wednesday, March 4, 2026: how the booking transcripts answer
# "What day and time suit you?" (or open with a day), and their phone answers.
_TRANSCRIPT_ANSWERS: Sequence[Tuple[str, Outcome]] = (
    ("as soon as possible", "asap"),
    ("book dry needling as soon as possible", "asap"),
    ("when's your next available appointment", "asap"),
    (
        "next tuesday morning",
        (datetime(2026, 3, 10, 8, tzinfo=TZ), datetime(2026, 3, 10, 12, tzinfo=TZ)),
    ),
    (
        "next tuesday afternoon",
        (datetime(2026, 3, 10, 12, tzinfo=TZ), datetime(2026, 3, 10, 17, tzinfo=TZ)),
    ),
    ("any openings next Friday?", _day(date(2026, 3, 13))),
    ("can I get in next Wednesday?", _day(date(2026, 3, 11))),
    # The clinic is closed on Sundays: the scheduler, not the parser, says so.
    (
        "I want to book a trigger point injection for next Sunday",
        _day(date(2026, 3, 15)),
    ),
    ("817-555-0188", "unparsed"),
    ("(817) 555 0142", "unparsed"),
    ("8175550142", "unparsed"),
    ("817 555 0166", "unparsed"),
)


def cases() -> List[Case]:
    """Every case of the timeparse tests and the transcripts, with its class."""
    tests = _load_tests()
    wed = tests.WED
    found: List[Case] = []
    for name in ("DAY", "TIME_OF_DAY", "SHORTHAND_AND_SENTENCES"):
        for text, now, start, end, _ in getattr(tests, name):
            found.append(Case(text, now, (start, end), _kind(text)))
    for name, kind in (
        ("SAME_WEEKDAY", "weekday said on that day"),
        ("ROLLOVER", "year end"),
        ("DST", "DST change"),
    ):
        for text, now, start, end, _ in getattr(tests, name):
            found.append(Case(text, now, (start, end), kind))
    found += [
        Case(t, tests.SAT_BEFORE_SPRING, "asap", "as soon as possible")
        for t in tests.ASAP
    ]
    found += [Case(t, wed, "past", "past (refused)") for t in tests.PAST]
    found += [Case(t, wed, "too_far", "too far (refused)") for t in tests.TOO_FAR]
    found += [Case(t, wed, "unparsed", "no time (refused)") for t in tests.UNPARSED]
    found += [Case(p, wed, "unparsed", "phone number") for p in tests.PHONE_NUMBERS]
    found += [
        Case(f"friday, {p}", wed, _day(date(2026, 3, 6)), "day + phone number")
        for p in tests.PHONE_NUMBERS
    ]
    found += [Case(t, wed, e, "transcript answer") for t, e in _TRANSCRIPT_ANSWERS]
    return found


def _hour(point: datetime) -> Window:
    """One real hour from ``point`` (across a DST change too)."""
    return point, point.astimezone(timezone.utc) + timedelta(hours=1)


def _utc(window: Window) -> Window:
    return window[0].astimezone(timezone.utc), window[1].astimezone(timezone.utc)


def ours(text: str, now: datetime) -> Outcome:
    """Our parser's outcome."""
    try:
        window = parse_time_preference(text, now, TZ_NAME, HORIZON_DAYS)
    except TimePreferenceError as error:
        return error.reason
    return "asap" if window.asap else _utc((window.start, window.end))


def judge(window: Optional[Window], now: datetime) -> Outcome:
    """A library's raw window as the clinic would treat it (see the docstring)."""
    if window is None:
        return "unparsed"
    start, end = _utc(window)
    local_today = now.astimezone(TZ).date()
    limit = _day(local_today + timedelta(days=HORIZON_DAYS + 1))[0]
    if end <= now:
        return "past"
    if start >= limit:
        return "too_far"
    return max(start, now.astimezone(timezone.utc)), min(
        end, limit.astimezone(timezone.utc)
    )


def _period(value: datetime, period: str) -> Window:
    """The window of a dateparser date and period ("time", "day", "week", ...)."""
    local = value.astimezone(TZ)
    if period == "time":
        return _hour(local)
    if period == "week":
        monday = local.date() - timedelta(days=local.weekday())
        return _day(monday)[0], _day(monday + timedelta(days=6))[1]
    if period in ("month", "year"):
        first = local.date().replace(
            day=1, month=1 if period == "year" else local.month
        )
        months = 12 if period == "year" else 1
        index = first.year * 12 + first.month - 1 + months
        after = date(index // 12, index % 12 + 1, 1)
        return _day(first)[0], _day(after)[0]
    return _day(local.date())


def dateparser_reader() -> Reader:
    """A reader using dateparser with the clinic's settings."""
    from dateparser.date import DateDataParser
    from dateparser.search import search_dates

    def read(text: str, now: datetime) -> Outcome:
        settings: Dict[str, Any] = {
            "PREFER_DATES_FROM": "future",
            "RELATIVE_BASE": now.astimezone(TZ).replace(tzinfo=None),
            "TIMEZONE": TZ_NAME,
            "RETURN_AS_TIMEZONE_AWARE": True,
            "RETURN_TIME_AS_PERIOD": True,
            "DATE_ORDER": "MDY",
        }
        parser = DateDataParser(languages=["en"], settings=settings)
        try:
            data = parser.get_date_data(text)
            if data.date_obj is None:
                found = search_dates(text, languages=["en"], settings=settings)
                data = parser.get_date_data(found[0][0]) if found else data
        except Exception:  # dateparser raises assorted errors on odd input
            return "error"
        if data.date_obj is None:
            return judge(None, now)
        return judge(_period(data.date_obj, data.period or "day"), now)

    return read


def _resolved(value: Dict[str, str], now: datetime) -> Optional[Window]:
    """One resolution value of recognizers-text as a window."""

    def moment(text: str) -> datetime:
        if len(text) <= 8:  # a time of day alone: today
            text = f"{now.astimezone(TZ).date()} {text}"
        return datetime.fromisoformat(text).replace(tzinfo=TZ)

    kind = value.get("type", "")
    if "start" in value or "end" in value:
        start = moment(value.get("start") or value["end"][:10] + " 00:00:00")
        end = moment(value["end"]) if "end" in value else _day(start.date())[1]
        if kind.endswith("daterange") and len(value.get("end", "")) == 10:
            end = _day(end.date())[0]
        return start, end
    if "value" not in value:
        return None
    if kind == "date":
        return _day(date.fromisoformat(value["value"]))
    point = moment(value["value"])
    return _hour(point)


def recognizers_reader() -> Optional[Reader]:
    """recognizers-text-date-time if it is importable, else None."""
    try:
        from recognizers_date_time import (  # type: ignore[import-not-found]
            Culture,
            DateTimeOptions,
            recognize_datetime,
        )
    except ImportError:
        return None

    def read(text: str, now: datetime) -> Outcome:
        base = now.astimezone(TZ).replace(tzinfo=None)
        try:
            results = recognize_datetime(
                text, Culture.English, DateTimeOptions.NONE, base
            )
            for result in results:
                values = (result.resolution or {}).get("values", [])
                # Ambiguous readings come past first, future last: take the last.
                windows = [w for w in (_resolved(v, now) for v in values) if w]
                if windows:
                    return judge(windows[-1], now)
        except Exception:  # an alpha release: tolerate its failures
            return "error"
        return judge(None, now)

    return read


def _same(got: Outcome, expected: Outcome) -> bool:
    if isinstance(expected, tuple) and isinstance(got, tuple):
        return _utc(expected) == _utc(got)
    return got == expected


def _show(outcome: Outcome) -> str:
    if isinstance(outcome, str):
        return outcome
    start, end = (moment.astimezone(TZ) for moment in outcome)
    return f"{start:%a %b %d %H:%M}-{end:%a %H:%M}"


def run(show_all: bool) -> None:
    """Reads every case with every parser and prints the table."""
    all_cases = cases()
    readers: Dict[str, Reader] = {"ours": ours}
    imports: Dict[str, float] = {}
    for name, make in (
        ("dateparser", dateparser_reader),
        ("recognizers", recognizers_reader),
    ):
        started = time.perf_counter()
        reader = make()
        if reader is None:
            print(f"{name}: not installed, left out")
            continue
        reader("tomorrow", all_cases[0].now)  # warm-up: lazy imports and caches
        imports[name] = (time.perf_counter() - started) * 1000
        readers[name] = reader
    right: Dict[str, Counter[str]] = {name: Counter() for name in readers}
    wrong: Dict[str, List[str]] = {name: [] for name in readers}
    cost: Dict[str, float] = {}
    for name, reader in readers.items():
        started = time.perf_counter()
        for case in all_cases:
            got = reader(case.text, case.now)
            if _same(got, case.expected):
                right[name][case.kind] += 1
            else:
                wrong[name].append(
                    f"  [{case.kind}] {case.text[:50]!r}: got {_show(got)}, "
                    f"expected {_show(case.expected)}"
                )
        cost[name] = (time.perf_counter() - started) * 1000 / len(all_cases)
    totals = Counter(case.kind for case in all_cases)
    names = list(readers)
    print(f"{'phrasing class':28}{'cases':>6}" + "".join(f"{n:>13}" for n in names))
    for kind in sorted(totals, key=lambda k: -totals[k]):
        print(
            f"{kind:28}{totals[kind]:>6}"
            + "".join(f"{right[n][kind]:>13}" for n in names)
        )
    print(
        f"{'all':28}{len(all_cases):>6}"
        + "".join(f"{sum(right[n].values()):>13}" for n in names)
    )
    print(f"{'ms per phrase':34}" + "".join(f"{cost[n]:>13.2f}" for n in names))
    print(
        f"{'first call (ms, imports)':34}{'':>13}"
        + "".join(f"{imports[n]:>13.0f}" for n in names[1:])
    )
    for name in names:
        shown = wrong[name] if show_all else wrong[name][:8]
        print(f"\n{name}: {len(wrong[name])} wrong" + (":" if shown else ""))
        print("\n".join(shown))
        if len(shown) < len(wrong[name]):
            print(f"  ... and {len(wrong[name]) - len(shown)} more (--all)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses the command line and prints the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="list every wrong case")
    run(parser.parse_args(argv).all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
