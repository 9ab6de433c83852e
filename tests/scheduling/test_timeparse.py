"""Tests of scheduling/timeparse.py: a patient's words -> a time window.

Every case asserts exact, aware start and end datetimes, compared in UTC so that
the fold of a repeated hour counts.
"""

from __future__ import annotations

import random
import string
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional, Sequence
from zoneinfo import ZoneInfo

import pytest

from scheduling.timeparse import (
    TimePreferenceError,
    TimeWindow,
    parse_time_preference,
)

CHI = ZoneInfo("America/Chicago")


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHI, fold=fold)


# Fixed "now"s. 2026-03-04 is a Wednesday; DST starts 2026-03-08 and ends
# 2026-11-01 in America/Chicago.
WED = at(2026, 3, 4, 10, 0)
TUE_1PM = at(2026, 3, 10, 13, 0)
TUE_6PM = at(2026, 3, 10, 18, 0)
DEC30 = at(2026, 12, 30, 9, 0)
SAT_BEFORE_SPRING = at(2026, 3, 7, 10, 0)
SAT_BEFORE_FALL = at(2026, 10, 31, 10, 0)


def parse(text: str, now: datetime = WED, **kwargs: Any) -> TimeWindow:
    return parse_time_preference(text, now, **kwargs)


def assert_window(
    window: TimeWindow, start: datetime, end: datetime, description: Optional[str]
) -> None:
    utc = timezone.utc
    assert (window.start.astimezone(utc), window.end.astimezone(utc)) == (
        start.astimezone(utc),
        end.astimezone(utc),
    ), f"got {window.start} - {window.end} ({window.description})"
    assert window.start.tzinfo == CHI and window.end.tzinfo == CHI
    if description is not None:
        assert window.description == description


DAY = [
    # (text, now, start, end, description or None)
    ("tomorrow", WED, at(2026, 3, 5), at(2026, 3, 6), "Thu Mar 5"),
    ("today", WED, WED, at(2026, 3, 5), "Wed Mar 4"),
    ("Tuesday", WED, at(2026, 3, 10), at(2026, 3, 11), "Tue Mar 10"),
    ("this friday", WED, at(2026, 3, 6), at(2026, 3, 7), "Fri Mar 6"),
    ("on sat", WED, at(2026, 3, 7), at(2026, 3, 8), None),
    ("wednesday", WED, WED, at(2026, 3, 5), "Wed Mar 4"),
    ("next Tuesday", WED, at(2026, 3, 10), at(2026, 3, 11), "Tue Mar 10"),
    ("next thursday", WED, at(2026, 3, 12), at(2026, 3, 13), "Thu Mar 12"),
    ("tuesday next week", WED, at(2026, 3, 10), at(2026, 3, 11), None),
    ("the 14th", WED, at(2026, 3, 14), at(2026, 3, 15), "Sat Mar 14"),
    ("could i get in on the 2nd", WED, at(2026, 4, 2), at(2026, 4, 3), "Thu Apr 2"),
    ("the 31st", WED, at(2026, 3, 31), at(2026, 4, 1), None),
    ("March 10", WED, at(2026, 3, 10), at(2026, 3, 11), "Tue Mar 10"),
    ("the 10th of march", WED, at(2026, 3, 10), at(2026, 3, 11), None),
    ("3/10", WED, at(2026, 3, 10), at(2026, 3, 11), "Tue Mar 10"),
    ("3/10/26", WED, at(2026, 3, 10), at(2026, 3, 11), None),
    ("2026-03-10", WED, at(2026, 3, 10), at(2026, 3, 11), None),
    # Today's date is today (dateparser's future dates make it next year).
    ("March 4", WED, WED, at(2026, 3, 5), "Wed Mar 4"),
    ("3/4", WED, WED, at(2026, 3, 5), None),
    ("tuesday the 10th", WED, at(2026, 3, 10), at(2026, 3, 11), None),
    ("12/3", at(2026, 11, 20, 9), at(2026, 12, 3), at(2026, 12, 4), "Thu Dec 3"),
    ("Dec 3rd", at(2026, 11, 20, 9), at(2026, 12, 3), at(2026, 12, 4), None),
    ("in 2 days", WED, at(2026, 3, 6), at(2026, 3, 7), "Fri Mar 6"),
    ("in a week", WED, at(2026, 3, 11), at(2026, 3, 12), None),
    ("in a couple of days", WED, at(2026, 3, 6), at(2026, 3, 7), None),
    # A month later is clamped to the month's end.
    ("in a month", at(2026, 1, 31, 9), at(2026, 2, 28), at(2026, 3, 1), None),
    ("in a month", at(2026, 3, 31, 9), at(2026, 4, 30), at(2026, 5, 1), None),
    ("a week from today", WED, at(2026, 3, 11), at(2026, 3, 12), None),
    ("2 weeks from tomorrow", WED, at(2026, 3, 19), at(2026, 3, 20), None),
    ("the day after tomorrow", WED, at(2026, 3, 6), at(2026, 3, 7), None),
    ("within 2 days", WED, WED, at(2026, 3, 7), "Wed Mar 4 - Fri Mar 6"),
    ("in the next 2 days", WED, WED, at(2026, 3, 7), None),
    ("next week", WED, at(2026, 3, 9), at(2026, 3, 16), "Mon Mar 9 - Sun Mar 15"),
    ("this week", WED, WED, at(2026, 3, 9), "Wed Mar 4 - Sun Mar 8"),
    ("the week after next", WED, at(2026, 3, 16), at(2026, 3, 23), None),
    ("next weekend", WED, at(2026, 3, 14), at(2026, 3, 16), None),
    ("next month", WED, at(2026, 4, 1), at(2026, 5, 1), "Wed Apr 1 - Thu Apr 30"),
    ("sometime in april", WED, at(2026, 4, 1), at(2026, 5, 1), None),
    # dateparser reads what the rules do not know
    ("03.10.2026", WED, at(2026, 3, 10), at(2026, 3, 11), "Tue Mar 10"),
    ("2026/03/12", WED, at(2026, 3, 12), at(2026, 3, 13), None),
    ("3-10-2026", WED, at(2026, 3, 10), at(2026, 3, 11), None),
]

TIME_OF_DAY = [
    ("tomorrow at 3", WED, at(2026, 3, 5, 15), at(2026, 3, 5, 16), "Thu Mar 5, 3 PM"),
    ("tomorrow 3", WED, at(2026, 3, 5, 15), at(2026, 3, 5, 16), None),
    ("tomorrow at 9", WED, at(2026, 3, 5, 9), at(2026, 3, 5, 10), None),
    ("tomorrow at 12", WED, at(2026, 3, 5, 12), at(2026, 3, 5, 13), None),
    ("tomorrow 10:30am", WED, at(2026, 3, 5, 10, 30), at(2026, 3, 5, 11, 30), None),
    ("10 a.m. tomorrow", WED, at(2026, 3, 5, 10), at(2026, 3, 5, 11), None),
    (
        "next Tuesday afternoon",
        WED,
        at(2026, 3, 10, 12),
        at(2026, 3, 10, 17),
        "Tue Mar 10, afternoon",
    ),
    ("friday morning", WED, at(2026, 3, 6, 8), at(2026, 3, 6, 12), None),
    ("friday evening", WED, at(2026, 3, 6, 17), at(2026, 3, 6, 20), None),
    ("friday lunchtime", WED, at(2026, 3, 6, 11, 30), at(2026, 3, 6, 13, 30), None),
    ("tonight", WED, at(2026, 3, 4, 17), at(2026, 3, 4, 20), "Wed Mar 4, evening"),
    ("tonight at 7", WED, at(2026, 3, 4, 19), at(2026, 3, 4, 20), None),
    ("at 3 in the morning", WED, at(2026, 3, 5, 3), at(2026, 3, 5, 4), None),
    ("tomorrow night", WED, at(2026, 3, 5, 17), at(2026, 3, 5, 20), None),
    ("tomorrow after 4", WED, at(2026, 3, 5, 16), at(2026, 3, 6), None),
    ("before 10 on friday", WED, at(2026, 3, 6), at(2026, 3, 6, 10), None),
    ("thursday between 2 and 4", WED, at(2026, 3, 5, 14), at(2026, 3, 5, 16), None),
    ("thursday 10-2", WED, at(2026, 3, 5, 10), at(2026, 3, 5, 14), None),
    ("tomorrow 8-10am", WED, at(2026, 3, 5, 8), at(2026, 3, 5, 10), None),
    (
        "Tuesday, March 10th at 3:30pm",
        WED,
        at(2026, 3, 10, 15, 30),
        at(2026, 3, 10, 16, 30),
        "Tue Mar 10, 3:30 PM",
    ),
    ("the 14th at 15:00", WED, at(2026, 3, 14, 15), at(2026, 3, 14, 16), None),
    (
        "tomorrow afternoon at 3",
        WED,
        at(2026, 3, 5, 15),
        at(2026, 3, 5, 16),
        None,
    ),
    (
        "quarter to 4 tomorrow",
        WED,
        at(2026, 3, 5, 15, 45),
        at(2026, 3, 5, 16, 45),
        None,
    ),
    # A time alone: today while time is left, else tomorrow (now is 10:00).
    ("at 3", WED, at(2026, 3, 4, 15), at(2026, 3, 4, 16), "Wed Mar 4, 3 PM"),
    ("3pm", WED, at(2026, 3, 4, 15), at(2026, 3, 4, 16), None),
    ("3:30", WED, at(2026, 3, 4, 15, 30), at(2026, 3, 4, 16, 30), None),
    ("15:00", WED, at(2026, 3, 4, 15), at(2026, 3, 4, 16), None),
    ("noon", WED, at(2026, 3, 4, 12), at(2026, 3, 4, 13), "Wed Mar 4, noon"),
    ("at 9", WED, at(2026, 3, 5, 9), at(2026, 3, 5, 10), "Thu Mar 5, 9 AM"),
    # A named time that has started is tomorrow's; a part of the day, today's rest.
    ("at 3", at(2026, 3, 4, 15, 30), at(2026, 3, 5, 15), at(2026, 3, 5, 16), None),
    (
        "afternoon",
        at(2026, 3, 4, 15, 30),
        at(2026, 3, 4, 15, 30),
        at(2026, 3, 4, 17),
        None,
    ),
    ("morning", WED, WED, at(2026, 3, 4, 12), "Wed Mar 4, morning"),
    ("afternoon", WED, at(2026, 3, 4, 12), at(2026, 3, 4, 17), None),
    ("evening", WED, at(2026, 3, 4, 17), at(2026, 3, 4, 20), None),
    ("lunch", WED, at(2026, 3, 4, 11, 30), at(2026, 3, 4, 13, 30), None),
    ("after 4", WED, at(2026, 3, 4, 16), at(2026, 3, 5), "Wed Mar 4, after 4 PM"),
    ("before 10", WED, at(2026, 3, 5), at(2026, 3, 5, 10), "Thu Mar 5, before 10 AM"),
    ("after lunch", WED, at(2026, 3, 4, 13, 30), at(2026, 3, 5), None),
    ("morning", at(2026, 3, 4, 13), at(2026, 3, 5, 8), at(2026, 3, 5, 12), None),
    ("this morning", at(2026, 3, 4, 13), at(2026, 3, 5, 8), at(2026, 3, 5, 12), None),
    ("half past 3", WED, at(2026, 3, 4, 15, 30), at(2026, 3, 4, 16, 30), None),
]

SHORTHAND_AND_SENTENCES = [
    ("tmrw at 3", WED, at(2026, 3, 5, 15), at(2026, 3, 5, 16), None),
    ("nxt tues aft", WED, at(2026, 3, 10, 12), at(2026, 3, 10, 17), None),
    ("fri am", WED, at(2026, 3, 6, 8), at(2026, 3, 6, 12), "Fri Mar 6, morning"),
    ("thurs pm", WED, at(2026, 3, 5, 12), at(2026, 3, 5, 17), None),
    ("2moro 4ish", WED, at(2026, 3, 5, 16), at(2026, 3, 5, 17), None),
    ("@ 4 on thurs", WED, at(2026, 3, 5, 16), at(2026, 3, 5, 17), None),
    ("TOMORROW AT THREE", WED, at(2026, 3, 5, 15), at(2026, 3, 5, 16), None),
    (
        "my back is killing me, could I come in tomorrow afternoon?",
        WED,
        at(2026, 3, 5, 12),
        at(2026, 3, 5, 17),
        "Thu Mar 5, afternoon",
    ),
    (
        "hmm could we do like next tuesday afternoon pls",
        WED,
        at(2026, 3, 10, 12),
        at(2026, 3, 10, 17),
        None,
    ),
    (
        "how about friday at 10, works for me",
        WED,
        at(2026, 3, 6, 10),
        at(2026, 3, 6, 11),
        None,
    ),
    # The first day not in the past wins; "since ..." is the complaint's story.
    (
        "I hurt it yesterday, can I come tomorrow?",
        WED,
        at(2026, 3, 5),
        at(2026, 3, 6),
        None,
    ),
    (
        "it has hurt since monday, can I come friday",
        WED,
        at(2026, 3, 6),
        at(2026, 3, 7),
        None,
    ),
    ("not today, maybe tomorrow", WED, at(2026, 3, 5), at(2026, 3, 6), None),
    ("I can't do monday, tuesday works", WED, at(2026, 3, 10), at(2026, 3, 11), None),
    ("not sure if friday works", WED, at(2026, 3, 6), at(2026, 3, 7), None),
    (
        "I'm 45 and my kid is 3, next tuesday please",
        WED,
        at(2026, 3, 10),
        at(2026, 3, 11),
        None,
    ),
    (
        "my daughter needs her school physical so maybe on 03.10.2026 if that works",
        WED,
        at(2026, 3, 10),
        at(2026, 3, 11),
        None,
    ),
    # A day or time named beats "any time" / "earliest".
    ("any time tomorrow", WED, at(2026, 3, 5), at(2026, 3, 6), None),
    ("earliest you have next week", WED, at(2026, 3, 9), at(2026, 3, 16), None),
]

SAME_WEEKDAY = [
    # "tuesday" said on a Tuesday: today while time is left, else a week later.
    ("tuesday", TUE_1PM, TUE_1PM, at(2026, 3, 11), "Tue Mar 10"),
    ("tuesday", TUE_6PM, at(2026, 3, 17), at(2026, 3, 18), "Tue Mar 17"),
    ("this tuesday", TUE_6PM, at(2026, 3, 17), at(2026, 3, 18), None),
    ("tuesday morning", TUE_1PM, at(2026, 3, 17, 8), at(2026, 3, 17, 12), None),
    ("tuesday at 3", TUE_1PM, at(2026, 3, 10, 15), at(2026, 3, 10, 16), None),
    ("tuesday evening", TUE_6PM, TUE_6PM, at(2026, 3, 10, 20), None),
    ("next tuesday", TUE_1PM, at(2026, 3, 17), at(2026, 3, 18), None),
    ("at 3", TUE_6PM, at(2026, 3, 11, 15), at(2026, 3, 11, 16), None),
]

ROLLOVER = [
    # now is Wed Dec 30 2026, 09:00
    ("the 2nd", DEC30, at(2027, 1, 2), at(2027, 1, 3), "Sat Jan 2 2027"),
    ("Jan 5", DEC30, at(2027, 1, 5), at(2027, 1, 6), "Tue Jan 5 2027"),
    ("1/5", DEC30, at(2027, 1, 5), at(2027, 1, 6), None),
    ("the 30th", DEC30, DEC30, at(2026, 12, 31), "Wed Dec 30"),
    ("dec 31 at 10", DEC30, at(2026, 12, 31, 10), at(2026, 12, 31, 11), None),
    ("next week", DEC30, at(2027, 1, 4), at(2027, 1, 11), None),
    ("in 2 weeks", DEC30, at(2027, 1, 13), at(2027, 1, 14), None),
    ("friday", DEC30, at(2027, 1, 1), at(2027, 1, 2), "Fri Jan 1 2027"),
]

DST = [
    # 2026-03-08 has 23 hours, 2026-11-01 has 25.
    ("tomorrow", SAT_BEFORE_SPRING, at(2026, 3, 8), at(2026, 3, 9), "Sun Mar 8"),
    ("3/8", SAT_BEFORE_SPRING, at(2026, 3, 8), at(2026, 3, 9), None),
    ("tomorrow", SAT_BEFORE_FALL, at(2026, 11, 1), at(2026, 11, 2), "Sun Nov 1"),
    # 02:30 does not exist on 2026-03-08: it is read as 03:30 CDT.
    (
        "tomorrow at 2:30am",
        SAT_BEFORE_SPRING,
        at(2026, 3, 8, 3, 30),
        at(2026, 3, 8, 4, 30),
        None,
    ),
    # 01:30 happens twice on 2026-11-01: the first (CDT); one real hour later
    # is the second 01:30 (CST).
    (
        "tomorrow at 1:30am",
        SAT_BEFORE_FALL,
        at(2026, 11, 1, 1, 30, fold=0),
        at(2026, 11, 1, 1, 30, fold=1),
        None,
    ),
    (
        "tomorrow afternoon",
        SAT_BEFORE_SPRING,
        at(2026, 3, 8, 12),
        at(2026, 3, 8, 17),
        None,
    ),
]


@pytest.mark.parametrize(
    "text, now, start, end, description",
    DAY + TIME_OF_DAY + SHORTHAND_AND_SENTENCES + SAME_WEEKDAY + ROLLOVER + DST,
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_window(
    text: str, now: datetime, start: datetime, end: datetime, description: str
) -> None:
    assert_window(parse(text, now), start, end, description)


def real_length(window: TimeWindow) -> timedelta:
    return window.end.astimezone(timezone.utc) - window.start.astimezone(timezone.utc)


def test_dst_days_are_23_and_25_hours_long() -> None:
    assert real_length(parse("tomorrow", SAT_BEFORE_SPRING)) == timedelta(hours=23)
    assert real_length(parse("tomorrow", SAT_BEFORE_FALL)) == timedelta(hours=25)
    assert real_length(parse("tomorrow", WED)) == timedelta(hours=24)


ASAP = [
    "asap",
    "ASAP please",
    "a.s.a.p.",
    "as soon as possible",
    "soonest",
    "earliest",
    "whatever is the first available",
    "1st available",
    "any time",
    "anytime really",
    "whenever",
    "today or tomorrow",
    "tmrw or today",
]


@pytest.mark.parametrize("text", ASAP)
def test_asap_is_the_next_seven_days(text: str) -> None:
    window = parse(text, SAT_BEFORE_SPRING)
    # a week later on the local clock, across the DST change
    assert_window(window, SAT_BEFORE_SPRING, at(2026, 3, 14, 10), "as soon as possible")
    assert window.asap


def test_a_named_day_is_not_asap() -> None:
    assert not parse("tomorrow").asap


PAST = ["yesterday", "last monday", "last week", "3 days ago", "today at 9", "3/1/2026"]


@pytest.mark.parametrize("text", PAST)
def test_past(text: str) -> None:
    with pytest.raises(TimePreferenceError) as caught:
        parse(text, WED)
    assert caught.value.reason == "past"


# Beyond the default 60-day horizon from Wed Mar 4 (the next Feb 29 is in 2028).
TOO_FAR = ["next year", "in 6 months", "in 2 months", "12/3", "feb 29"]


@pytest.mark.parametrize(
    "text, kwargs",
    [(text, {}) for text in TOO_FAR]
    + [("tomorrow", {"horizon_days": 0}), ("in 2 days", {"horizon_days": 1})],
)
def test_too_far(text: str, kwargs: Dict[str, Any]) -> None:
    with pytest.raises(TimePreferenceError) as caught:
        parse(text, WED, **kwargs)
    assert caught.value.reason == "too_far"


def test_a_window_running_past_the_horizon_is_cut() -> None:
    window = parse("next month", WED, horizon_days=40)
    assert_window(window, at(2026, 4, 1), at(2026, 4, 14), None)


def test_a_window_partly_past_starts_now() -> None:
    assert_window(parse("today"), WED, at(2026, 3, 5), None)


UNPARSED = [
    "",
    "   ",
    "blue",
    "idk",
    "yes",
    "🙂",
    "99/99",
    "32nd",
    "25:00",
    "at 0",
    "2/30 at 3",  # a date that does not exist is not "3 PM today"
    "march",
    "13pm",
    "31/31",  # dateparser: March 31, 2031
]


@pytest.mark.parametrize("text", UNPARSED)
def test_unparsed(text: str) -> None:
    with pytest.raises(TimePreferenceError) as caught:
        parse(text)
    assert caught.value.reason == "unparsed"
    assert isinstance(caught.value, ValueError)


# A US mobile number in the ways patients write it: never a day or a time.
PHONE_NUMBERS = [
    "8175550188",
    "817-555-0188",
    "(817) 555-0188",
    "817.555.0188",
    "+1 817 555 0188",
    "1-817-555-0188",
    "817 555 0188",
    "my cell is 817 555 0188",
]


@pytest.mark.parametrize("phone", PHONE_NUMBERS)
def test_a_phone_number_is_no_time(phone: str) -> None:
    with pytest.raises(TimePreferenceError) as caught:
        parse(phone)
    assert caught.value.reason == "unparsed"


@pytest.mark.parametrize("phone", PHONE_NUMBERS)
def test_a_phone_number_next_to_a_day_adds_no_hour(phone: str) -> None:
    # Wednesday 10 AM: "friday" is all of Friday, whatever number follows.
    window = parse(f"friday, {phone}")
    assert (window.start, window.end) == (at(2026, 3, 6), at(2026, 3, 7))


class TestEntities:
    def test_entities_pick_the_requested_day_over_other_days_mentioned(self) -> None:
        text = (
            "saw dr lee on monday and she said come back, hmm could we do like "
            "next tuesday afternoon pls"
        )
        # Alone, the text's first day wins: the coming Monday.
        assert parse(text).start == at(2026, 3, 9, 12)
        window = parse(text, entities=["next tuesday", "afternoon"])
        assert_window(window, at(2026, 3, 10, 12), at(2026, 3, 10, 17), None)

    def test_entities_reach_dateparser(self) -> None:
        text = "we saw you on monday; this time we were thinking 2026/03/12 if ok"
        assert parse(text).start == at(2026, 3, 9)
        window = parse(text, entities=["2026/03/12"])
        assert_window(window, at(2026, 3, 12), at(2026, 3, 13), "Thu Mar 12")

    def test_the_text_fills_in_what_entities_lack(self) -> None:
        window = parse("tomorrow at 3", entities=["tomorrow"])
        assert_window(window, at(2026, 3, 5, 15), at(2026, 3, 5, 16), None)

    def test_useless_entities_are_ignored(self) -> None:
        window = parse("tomorrow at 3", entities=["blue", ""])
        assert_window(window, at(2026, 3, 5, 15), at(2026, 3, 5, 16), None)

    def test_entities_alone_can_answer(self) -> None:
        window = parse("hmm", entities=["Friday", "at 10"])
        assert_window(window, at(2026, 3, 6, 10), at(2026, 3, 6, 11), None)


class TestArguments:
    def test_now_in_another_zone_is_converted(self) -> None:
        # 03:00 UTC on Mar 5 is still Mar 4, 21:00 in Chicago.
        now = datetime(2026, 3, 5, 3, 0, tzinfo=timezone.utc)
        assert_window(parse("tomorrow", now), at(2026, 3, 5), at(2026, 3, 6), None)

    def test_other_clinic_zone(self) -> None:
        new_york = ZoneInfo("America/New_York")
        window = parse("tomorrow at 3", WED, tz="America/New_York")
        assert window.start == datetime(2026, 3, 5, 15, tzinfo=new_york)
        assert window.start.tzinfo == new_york

    def test_naive_now_is_a_caller_error(self) -> None:
        with pytest.raises(ValueError) as caught:
            parse("tomorrow", datetime(2026, 3, 4, 10))
        assert not isinstance(caught.value, TimePreferenceError)

    def test_unknown_zone_is_a_caller_error(self) -> None:
        with pytest.raises(ValueError):
            parse("tomorrow", WED, tz="Mars/Olympus_Mons")


def _assert_sane(text: str, now: datetime, entities: Sequence[str] = ()) -> None:
    started = time.perf_counter()
    try:
        window = parse_time_preference(text, now, entities=entities)
    except TimePreferenceError as error:
        assert error.reason in ("unparsed", "past", "too_far")
    else:
        # In UTC: Python compares datetimes of one tzinfo on the wall clock.
        start, end = (
            moment.astimezone(timezone.utc) for moment in (window.start, window.end)
        )
        assert now <= start < end <= now + timedelta(days=62)
        assert window.start.tzinfo == CHI
    assert time.perf_counter() - started < 1.0, f"slow on {text[:40]!r}"


_ODD = [
    "🙂" * 10_000,
    "tomorrow " * 1_200,
    "at 3 " * 2_000,
    "1/" * 5_000,
    "tuesday, " * 1_200,
    "9" * 10_000,
    "99/99",
    "32nd",
    "25:00",
    "at 0",
    "0:00",
    "12/31/9998",
    "9999-12-31",
    "in 999 years",
    "within 999 months",
    "2/29/2100",
    "00/00",
    "\x00\x01\x7f",
    "\u2028tomorrow\u200b",
    "ｔｏｍｏｒｒｏｗ ａｔ ３",
    "next next next",
    "between 13pm and 0",
    "after 99",
    "the 0th",
]


@pytest.mark.parametrize("text", _ODD, ids=range(len(_ODD)))
def test_odd_input_never_raises_anything_else(text: str) -> None:
    _assert_sane(text, WED)


_VOCABULARY = (
    "tomorrow today tonight next last this tue friday at 3 pm am 99/99 32nd "
    "25:00 0 the 14th 12/31/9998 in 999 years 31/31 feb 29 march - : / . , asap "
    "not since after before between and to noon morning week weekend month "
    "2026-02-30 0:00 24:00 12am 13pm 1/1/1 half past quarter 03.10.2026 ago"
)


def test_fuzz_random_characters_and_words() -> None:
    rng = random.Random(20260304)
    alphabet = string.printable + "🙂éß漢字٣²\u200b–—’"
    vocabulary = _VOCABULARY.split()
    for now in (WED, DEC30, SAT_BEFORE_FALL):
        for _ in range(300):
            chars = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 8)))
            _assert_sane(chars, now)
            _assert_sane(words, now, entities=[words[:12]])
