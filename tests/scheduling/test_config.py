"""The ``scheduling:`` section of clinic.yml and where the scheduler keeps its data."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from datetime import date, time
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml
from testkit import PROJECT_ROOT, TEST_CLINIC

from actions import settings
from scheduling.config import (
    OpeningInterval,
    SchedulingConfig,
    SchedulingConfigError,
    VisitType,
    default_db_path,
    load_scheduling_config,
    parse_scheduling_config,
    scheduling_config,
)

RAW: Dict[str, Any] = {
    "timezone": "America/Chicago",
    "slot_minutes": 15,
    "opening_hours": {
        "mon": ["08:00-12:00", "13:00-17:00"],
        "wed": "09:30-11:00",
        "sat": [],
        "sun": None,
    },
    "visit_types": [
        {"key": "dry_needling", "name": "Dry needling", "minutes": 30},
        {"key": "evaluation", "name": " Evaluation / consultation ", "minutes": 45},
    ],
    "providers": ["provider-1", "provider-2"],
    "hold_minutes": 7,
    "booking_horizon_days": 30,
}


def raw(**changes: Any) -> Dict[str, Any]:
    """A deep copy of RAW with top-level fields replaced (None removes one)."""
    result = copy.deepcopy(RAW)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    scheduling_config.cache_clear()
    yield
    scheduling_config.cache_clear()


def test_parses_a_complete_section() -> None:
    config = parse_scheduling_config(raw(), "clinic.yml")

    morning, afternoon = (
        OpeningInterval(time(8), time(12)),
        OpeningInterval(time(13), time(17)),
    )
    assert config == SchedulingConfig(
        timezone="America/Chicago",
        slot_minutes=15,
        opening_hours=(
            (morning, afternoon),
            (),
            (OpeningInterval(time(9, 30), time(11)),),
            (),
            (),
            (),
            (),
        ),
        visit_types=(
            VisitType("dry_needling", "Dry needling", 30),
            VisitType("evaluation", "Evaluation / consultation", 45),
        ),
        providers=("provider-1", "provider-2"),
        hold_minutes=7,
        booking_horizon_days=30,
    )
    assert str(config.tz) == "America/Chicago"
    assert config.visit_type("evaluation") == VisitType(
        "evaluation", "Evaluation / consultation", 45
    )
    assert config.visit_type("massage") is None


def test_intervals_are_sorted_and_looked_up_by_weekday() -> None:
    config = parse_scheduling_config(
        raw(opening_hours={"tue": ["13:00-17:00", "08:00-12:00"]}), "x"
    )

    tuesday, wednesday = date(2026, 3, 3), date(2026, 3, 4)
    assert config.intervals_on(tuesday) == (
        OpeningInterval(time(8), time(12)),
        OpeningInterval(time(13), time(17)),
    )
    assert config.intervals_on(wednesday) == ()


def test_defaults_for_the_optional_numbers() -> None:
    config = parse_scheduling_config(
        raw(slot_minutes=None, hold_minutes=None, booking_horizon_days=None), "x"
    )

    assert (config.slot_minutes, config.hold_minutes, config.booking_horizon_days) == (
        15,
        10,
        60,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"opening_hours": {"monday": ["08:00-12:00"]}},
            r"unknown weekday\(s\) monday; use mon, tue",
            id="unknown-weekday",
        ),
        pytest.param(
            {"opening_hours": {"mon": ["8-12"]}},
            r'opening_hours.mon: "8-12" is not a time range like "08:00-12:00"',
            id="bad-range",
        ),
        pytest.param(
            {"opening_hours": {"mon": ["08:00-24:30"]}},
            "not a valid time of day",
            id="hour-25",
        ),
        pytest.param(
            {"opening_hours": {"tue": ["12:00-08:00"]}},
            r'opening_hours.tue: "12:00-08:00" ends before it starts',
            id="end-before-start",
        ),
        pytest.param(
            {"opening_hours": {"tue": ["08:00-08:00"]}},
            "ends before it starts",
            id="empty-range",
        ),
        pytest.param(
            {"opening_hours": {"fri": ["08:00-12:00", "11:00-13:00"]}},
            "opening_hours.fri: time ranges overlap",
            id="overlap",
        ),
        pytest.param(
            {"opening_hours": {"fri": {"from": "08:00"}}},
            "must be a list of time ranges",
            id="day-not-a-list",
        ),
        pytest.param({"opening_hours": {}}, "must map weekdays", id="no-hours"),
        pytest.param(
            {
                "visit_types": [
                    {"key": "dry_needling", "name": "A", "minutes": 30},
                    {"key": "dry_needling", "name": "B", "minutes": 45},
                ]
            },
            "visit type 'dry_needling' is listed twice",
            id="duplicate-visit-type",
        ),
        pytest.param(
            {"visit_types": [{"key": "x", "name": "X", "minutes": 20}]},
            r"visit_types\[1\].minutes: must be a positive multiple of slot_minutes "
            r"\(15\)",
            id="minutes-off-grid",
        ),
        pytest.param(
            {"visit_types": [{"key": "x", "name": "X", "minutes": 0}]},
            "positive multiple",
            id="minutes-zero",
        ),
        pytest.param(
            {"visit_types": [{"key": "x", "name": "X", "minutes": -15}]},
            "positive multiple",
            id="minutes-negative",
        ),
        pytest.param(
            {"visit_types": [{"key": "x", "name": "X", "minutes": True}]},
            "positive multiple",
            id="minutes-bool",
        ),
        pytest.param(
            {"visit_types": [{"key": "X y", "name": "X", "minutes": 15}]},
            "must be lower-case letters",
            id="bad-key",
        ),
        pytest.param(
            {"visit_types": [{"key": "x", "name": "X", "minutes": 15, "price": 1}]},
            "exactly the fields key, name and minutes",
            id="visit-extra-field",
        ),
        pytest.param({"visit_types": []}, "at least one visit type", id="no-visits"),
        pytest.param(
            {"timezone": "Mars/Olympus_Mons"},
            "unknown time zone 'Mars/Olympus_Mons'",
            id="unknown-timezone",
        ),
        pytest.param(
            {"timezone": "../../etc/passwd"}, "unknown time zone", id="path-timezone"
        ),
        pytest.param({"timezone": None}, "must be a time zone name", id="no-tz"),
        pytest.param({"providers": []}, "no providers", id="empty-providers"),
        pytest.param({"providers": None}, "no providers", id="missing-providers"),
        pytest.param(
            {"providers": ["a", "a"]}, "'a' is listed twice", id="duplicate-provider"
        ),
        pytest.param(
            {"providers": ["dr|who"]}, "'dr|who' is not a valid id", id="pipe"
        ),
        pytest.param({"slot_minutes": 7}, "divide an hour evenly", id="slot-7"),
        pytest.param({"slot_minutes": "15"}, "whole number above 0", id="slot-text"),
        pytest.param({"hold_minutes": 0}, "hold_minutes: must be a whole", id="hold"),
        pytest.param(
            {"booking_horizon_days": -1}, "booking_horizon_days", id="horizon"
        ),
        pytest.param({"rooms": 3}, r"unknown field\(s\) rooms", id="unknown-field"),
    ],
)
def test_rejects_bad_sections_with_plain_messages(
    changes: Dict[str, Any], message: str
) -> None:
    with pytest.raises(SchedulingConfigError, match=message) as error:
        parse_scheduling_config(raw(**changes), "some/clinic.yml")

    assert str(error.value).startswith("some/clinic.yml: scheduling")


@pytest.mark.parametrize("section", [None, ["a"], "text"])
def test_rejects_a_section_that_is_not_a_mapping(section: object) -> None:
    with pytest.raises(SchedulingConfigError, match="expected a mapping"):
        parse_scheduling_config(section, "clinic.yml")


def test_config_errors_are_clinic_config_errors() -> None:
    assert issubclass(SchedulingConfigError, settings.ClinicConfigError)
    assert issubclass(SchedulingConfigError, ValueError)


def test_the_project_clinic_yml_has_a_valid_scheduling_section() -> None:
    config = load_scheduling_config(PROJECT_ROOT / "clinic.yml")

    assert config.timezone == "America/Chicago"
    assert [(visit.key, visit.minutes) for visit in config.visit_types] == [
        ("trigger_point_injection", 30),
        ("dry_needling", 30),
        ("evaluation", 45),
        ("physical_therapy", 60),
        ("chiropractic", 30),
    ]
    assert config.providers == ("provider-1", "provider-2")
    assert config.opening_hours[5:] == ((), ())  # closed at the weekend


def test_the_clinic_facts_parser_ignores_the_scheduling_section() -> None:
    info = settings.parse_clinic_config(
        {**TEST_CLINIC, "scheduling": raw()}, "clinic.yml"
    )

    assert info.name == TEST_CLINIC["name"]
    with pytest.raises(settings.ClinicConfigError, match=r"unknown field\(s\) fax"):
        settings.parse_clinic_config(
            {**TEST_CLINIC, "scheduling": raw(), "fax": "1"}, "clinic.yml"
        )


def write_clinic(path: Path, **scheduling_changes: Any) -> Path:
    path.write_text(
        yaml.safe_dump({**TEST_CLINIC, "scheduling": raw(**scheduling_changes)}),
        encoding="utf-8",
    )
    return path


def test_loader_reads_clinic_config_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_clinic(tmp_path / "clinic.yml")
    monkeypatch.setenv("CLINIC_CONFIG", str(path))

    first = scheduling_config()
    write_clinic(path, hold_minutes=3)

    assert first.hold_minutes == 7
    assert scheduling_config() is first  # cached
    scheduling_config.cache_clear()
    assert scheduling_config().hold_minutes == 3
    settings.clinic.cache_clear()
    assert settings.clinic().name == TEST_CLINIC["name"]  # same file, both parsers
    settings.clinic.cache_clear()


def test_loader_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_section = tmp_path / "facts.yml"
    no_section.write_text(yaml.safe_dump(TEST_CLINIC), encoding="utf-8")
    monkeypatch.setenv("CLINIC_CONFIG", str(no_section))
    with pytest.raises(SchedulingConfigError, match="has no 'scheduling:' section"):
        scheduling_config()

    monkeypatch.setenv("CLINIC_CONFIG", str(tmp_path / "missing.yml"))
    scheduling_config.cache_clear()
    with pytest.raises(SchedulingConfigError, match="Cannot read clinic config"):
        scheduling_config()


def test_nothing_is_read_or_created_at_import_time(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {
        **os.environ,
        "CLINIC_CONFIG": str(tmp_path / "missing.yml"),
        "STATE_DIR": str(state),
    }
    modules = "config, sqlite_backend, callbacks, timeparse"
    subprocess.run(
        [sys.executable, "-c", f"from scheduling import {modules}"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        timeout=60,
    )

    assert not state.exists()


def test_default_db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_DB", raising=False)
    monkeypatch.delenv("STATE_DIR", raising=False)
    assert default_db_path() == PROJECT_ROOT / "var" / "scheduler.db"

    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    assert default_db_path() == tmp_path / "state" / "scheduler.db"

    monkeypatch.setenv("SCHEDULER_DB", str(tmp_path / "other.db"))
    assert default_db_path() == tmp_path / "other.db"
