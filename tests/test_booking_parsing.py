"""Unit tests of how booking answers are read (actions/booking/parsing.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional
from zoneinfo import ZoneInfo

import pytest

from actions.booking.parsing import (
    clean_name,
    describe_time,
    display_phone,
    match_visit_type,
    normalize_phone,
    phone_numbers_in,
    pick_offered,
    written_as_name,
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
        ("8175550188", "+18175550188"),
        ("817-555-0188", "+18175550188"),
        ("(817) 555-0188", "+18175550188"),
        ("817.555.0188", "+18175550188"),
        ("+1 817 555 0188", "+18175550188"),
        ("1-817-555-0188", "+18175550188"),
        ("my cell is 817 555 0188", "+18175550188"),
        ("at 3pm tomorrow", None),
        ("555-12", None),
        ("123-456-7890", None),  # no US area code starts with 1
        ("call me maybe", None),
        ("", None),
    ],
)
def test_normalize_phone(text: str, expected: Optional[str]) -> None:
    assert normalize_phone(text) == expected


def test_phone_numbers_in_gives_them_as_written() -> None:
    text = "cell (817) 555-0188 or 1-682-555-0111, not 555-12, on friday at 3"
    assert phone_numbers_in(text) == ["(817) 555-0188", "1-682-555-0111"]
    assert phone_numbers_in("8175550188") == ["8175550188"]
    assert phone_numbers_in("tomorrow at 3") == []


# Real names as patients write them, from many languages and scripts: each is
# accepted exactly as written.
NAMES = [
    # Spanish and Latin American, including the names once refused.
    "Marisol Quintanilla",
    "Ximena Alvarado",
    "Jesus Quintero",
    "Rocio Villalobos",
    "Esperanza Cabrera",
    "Socorro Delgado",
    "Juan Carlos de la Cruz",
    "María José Rodríguez-Pérez",
    "José Luis Martínez Ortega",
    "Carmen Sánchez de la Vega",
    "Guadalupe Martínez",
    "Jesús",
    # Yoruba and Igbo.
    "Oluwaseun Adeyemi",
    "Oluwadamilare Bankole",
    "Chukwuemeka Okonkwo",
    "Ngozi Eze",
    "Chidinma Nwosu",
    # Vietnamese, with and without its diacritics.
    "Nguyen Van An",
    "Nguyễn Văn An",
    "Trần Thị Hương",
    "Do Thi My",
    # Chinese: Han characters and pinyin.
    "王小明",
    "李娜",
    "Wang Xiaoming",
    "Li Na",
    # Arabic: Arabic script and transliterated.
    "محمد عبد الله",
    "أحمد حسن",
    "Mohammed bin Abdullah",
    "Fatima Al-Zahra",
    "Layla al-Amin",
    "Yusuf ibn Ali",
    # Hindi: Devanagari (with its vowel signs) and transliterated.
    "प्रिया शर्मा",
    "आरव पटेल",
    "Priya Sharma",
    # Irish O' and Mc, straight and curly apostrophes.
    "Siobhan O'Sullivan",
    "Liam O’Brien",
    "Seán Ó Briain",
    "Aoife Ní Bhriain",
    "Connor McCarthy",
    "Anne-Marie O’Connor",
    # Dutch and German particles and hyphens.
    "Pieter van der Berg",
    "Lotte van den Broek",
    "Ursula von der Leyen",
    "Hans-Peter Müller",
    # Hawaiian ʻokina (and the quote mark typed for it).
    "Kalani Kamakaʻala",
    "ʻIolani Pua",
    "Keali‘i Nāone",
    # Korean, Russian, Greek, Japanese.
    "김민준",
    "이서연",
    "Иван Петров",
    "Ольга Смирнова",
    "Γιώργος Παπαδόπουλος",
    "ジョン・スミス",
    # One-word names and initials.
    "Suharto",
    "Madonna",
    "J.R. Smith",
    "Björn Ångström",
    "Zoë Saldaña",
    "D'Angelo Russell",
]


@pytest.mark.parametrize("name", NAMES)
def test_clean_name_keeps_names_as_written(name: str) -> None:
    assert clean_name(name) == name
    assert clean_name(f"my name is {name}") == name


@pytest.mark.parametrize(
    ("text", "people", "expected"),
    [
        ("Maria Lopez", [], "Maria Lopez"),
        ("my name is john carter", [], "John Carter"),
        ("juan carlos de la cruz", [], "Juan Carlos de la Cruz"),
        ("james o'neil", [], "James O'Neil"),
        ("it's Ana García", [], "Ana García"),
        ("Mary-Kate van der Berg", [], "Mary-Kate van der Berg"),
        ("hi, this is Sarah Nguyen", ["Sarah Nguyen"], "Sarah Nguyen"),
        ("it's for my son, Diego Ruiz", [], "Diego Ruiz"),
        ("me llamo Marisol Quintanilla", [], "Marisol Quintanilla"),
        ("im maria lopez", [], "Maria Lopez"),
        ("Im Yoon-ah", [], "Im Yoon-ah"),  # Im is a Korean surname
        ("Will Smith", [], "Will Smith"),  # not the question "will ..."
        # spaCy's PERSON is only used for a sentence around a name; it often keeps
        # part of a name only.
        ("Sarah Nguyen here", ["Sarah Nguyen"], "Sarah Nguyen"),
        ("Pieter van der Berg", ["Pieter van der", "Berg"], "Pieter van der Berg"),
        ("Luz Maria Gomez", ["Maria Gomez"], "Luz Maria Gomez"),
        ("Maria", [], "Maria"),
        ("x", [], None),
        ("817-555-0100", [], None),
        ("Robert 123", [], None),
        ("what is dry needling", [], None),
        ("do you take medicaid", [], None),
        ("Maria?", [], None),
        ("Maria 😀", [], None),
        ("???", [], None),
        ("", [], None),
        ("a " * 60, [], None),
    ],
)
def test_clean_name(text: str, people: List[str], expected: Optional[str]) -> None:
    assert clean_name(text, people) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Marisol Quintanilla", True),
        ("Mary-Kate van der Berg", True),
        ("Layla al-Amin", True),
        ("محمد عبد الله", True),
        ("marisol quintanilla", False),
        ("Sarah Nguyen here", False),
        ("de la", False),  # particles only
    ],
)
def test_written_as_name(name: str, expected: bool) -> None:
    assert written_as_name(name) is expected


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


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("+18175550142", "(817) 555-0142"),
        ("+12145550147", "(214) 555-0147"),
        ("+442079460958", "+44 20 7946 0958"),  # another country keeps its code
        ("not a number", "not a number"),  # never invented
        ("", ""),
    ],
)
def test_display_phone_writes_numbers_as_people_do(stored: str, shown: str) -> None:
    assert display_phone(stored) == shown
