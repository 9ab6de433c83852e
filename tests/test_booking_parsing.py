"""Unit tests of how booking answers are read (actions/booking_parsing.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional
from zoneinfo import ZoneInfo

import pytest

from actions.booking_parsing import (
    clean_name,
    describe_time,
    match_visit_type,
    normalize_phone,
    pick_offered,
)

CHICAGO = ZoneInfo("America/Chicago")
KNOWN = [
    ("trigger_point_injection", "Trigger point injection"),
    ("dry_needling", "Dry needling"),
    ("evaluation", "Evaluation / consultation"),
    ("physical_therapy", "Physical therapy"),
    ("chiropractic", "Chiropractic care"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dry needling", "dry_needling"),
        ("Dry needling", "dry_needling"),
        ("the needling one", "dry_needling"),
        ("a trigger point injection please", "trigger_point_injection"),
        ("TPI", "trigger_point_injection"),
        ("the shots", "trigger_point_injection"),
        ("just a consult first", "evaluation"),
        ("new patient evaluation", "evaluation"),
        ("PT", "physical_therapy"),
        ("physio", "physical_therapy"),
        ("chiro", "chiropractic"),
        ("an adjustment", "chiropractic"),
        ("trigger_point_injection", "trigger_point_injection"),
        ("something else", None),
        ("", None),
        # Two types named: not a clear answer.
        ("needling or a shot", None),
        # "pt" only as a word of its own.
        ("optimistic", None),
    ],
)
def test_match_visit_type(text: str, expected: Optional[str]) -> None:
    assert match_visit_type(text, KNOWN) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("817-555-0100", "+18175550100"),
        ("(817) 555 0123", "+18175550123"),
        ("my cell is 682.555.0111", "+16825550111"),
        ("+1 214 555 0147", "+12145550147"),
        ("4695550182", "+14695550182"),
        ("+44 20 7946 0958", "+442079460958"),
        ("555-12", None),
        ("123-456-7890", None),  # no US area code starts with 1
        ("call me maybe", None),
        ("", None),
    ],
)
def test_normalize_phone(text: str, expected: Optional[str]) -> None:
    assert normalize_phone(text) == expected


@pytest.mark.parametrize(
    ("text", "people", "expected"),
    [
        ("Maria Lopez", [], "Maria Lopez"),
        ("my name is john carter", [], "John Carter"),
        ("it's Ana García", [], "Ana García"),
        ("James O'Neil", [], "James O'Neil"),
        ("Mary-Kate van der Berg", [], "Mary-Kate van der Berg"),
        ("hi, this is Sarah Nguyen", ["Sarah Nguyen"], "Sarah Nguyen"),
        ("Maria", [], None),
        ("x", [], None),
        ("817-555-0100", [], None),
        ("Robert 123", [], None),
        ("a " * 60, [], None),
    ],
)
def test_clean_name(text: str, people: List[str], expected: Optional[str]) -> None:
    assert clean_name(text, people) == expected


def offers() -> List[Dict[str, Any]]:
    starts = [
        datetime(2026, 12, 1, 9, 0, tzinfo=CHICAGO),  # Tue
        datetime(2026, 12, 1, 10, 30, tzinfo=CHICAGO),
        datetime(2026, 12, 2, 15, 0, tzinfo=CHICAGO),  # Wed
    ]
    return [{"id": f"s{i}", "start": s.isoformat()} for i, s in enumerate(starts)]


@pytest.mark.parametrize(
    ("text", "option", "expected"),
    [
        ("", "2", "s1"),
        ("1", None, "s0"),
        ("option 3", None, "s2"),
        ("#2", None, "s1"),
        ("the first one", None, "s0"),
        ("second", None, "s1"),
        ("the last one", None, "s2"),
        ("the 10:30", None, "s1"),
        ("9 am please", None, "s0"),
        ("wednesday at 3", None, "s2"),
        ("the wednesday one", None, "s2"),
        ("tuesday", None, None),  # two offers on Tuesday
        ("4", None, None),
        ("", "9", None),
        ("at 11", None, None),
        ("whatever", None, None),
    ],
)
def test_pick_offered(
    text: str, option: Optional[str], expected: Optional[str]
) -> None:
    choice = pick_offered(text, offers(), option)
    assert (choice or {}).get("id") == expected


def test_pick_offered_with_nothing_offered() -> None:
    assert pick_offered("1", []) is None


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 3, 10, 9, 0, tzinfo=CHICAGO), "Tue Mar 10, 9:00 AM CDT"),
        (datetime(2026, 12, 3, 14, 30, tzinfo=CHICAGO), "Thu Dec 3, 2:30 PM CST"),
        (datetime(2026, 11, 2, 12, 0, tzinfo=CHICAGO), "Mon Nov 2, 12:00 PM CST"),
    ],
)
def test_describe_time(moment: datetime, expected: str) -> None:
    assert describe_time(moment) == expected
