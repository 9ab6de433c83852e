"""clinicbot's scheduling commands (bookings, blocks, call-backs) on real SQLite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml
from testkit import PROJECT_ROOT, TEST_CLINIC

from clinic_common.clinic_config import clinic, reminder_config
from scheduling.base import Patient, Slot, SlotUnavailable
from scheduling.callbacks import CallbackStore
from scheduling.config import scheduling_config
from scheduling.reminders import ReminderStore, reminder_settings
from scheduling.sqlite_backend import SqliteScheduler
from staff.scheduling_cli import main

SCHEDULING: Dict[str, Any] = {
    "timezone": "America/Chicago",
    "slot_minutes": 15,
    "opening_hours": {
        day: ["08:00-12:00", "13:00-17:00"] for day in ("mon", "tue", "wed")
    },
    "visit_types": [
        {"key": "dry_needling", "name": "Dry needling", "minutes": 30},
        {"key": "physical_therapy", "name": "Physical therapy", "minutes": 60},
    ],
    "providers": ["provider-1", "provider-2"],
}
ANN = Patient("Ann Example", "+18175550100")
BOB = Patient("Bob Example", "+18175550111")


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    # Monday 2026-03-02 00:30 UTC is still Sunday 2026-03-01 18:30 in Chicago.
    return FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=timezone.utc))


def callback_db(scheduler_db: Path) -> Path:
    return scheduler_db.with_name("callbacks.db")


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    clinic = tmp_path / "clinic.yml"
    clinic.write_text(
        yaml.safe_dump({**TEST_CLINIC, "scheduling": SCHEDULING}), encoding="utf-8"
    )
    path = tmp_path / "state" / "scheduler.db"
    monkeypatch.setenv("CLINIC_CONFIG", str(clinic))
    monkeypatch.setenv("SCHEDULER_DB", str(path))
    monkeypatch.setenv("CALLBACK_DB", str(callback_db(path)))
    scheduling_config.cache_clear()
    yield path
    scheduling_config.cache_clear()


@pytest.fixture
def scheduler(db_path: Path, clock: FakeClock) -> SqliteScheduler:
    return SqliteScheduler(db_path, scheduling_config(), clock=clock)


def chicago(*args: int) -> datetime:
    return datetime(*args, tzinfo=scheduling_config().tz)  # type: ignore[misc]


def slot(
    scheduler: SqliteScheduler, visit: str, provider: str, start: datetime
) -> Slot:
    stamp = start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return scheduler.slot_from_id(f"{visit}|{provider}|{stamp}")


def run(
    capsys: pytest.CaptureFixture[str], clock: FakeClock, *argv: str
) -> tuple[int, str, str]:
    code = main(list(argv), clock=clock)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines(text: str) -> List[List[str]]:
    """Each output line split on runs of two or more spaces (the column gaps)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]


# --- bookings ---------------------------------------------------------------------


def test_bookings_lists_a_day_in_time_order(
    scheduler: SqliteScheduler, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    afternoon = scheduler.book(
        slot(scheduler, "physical_therapy", "provider-2", chicago(2026, 3, 2, 13)),
        BOB,
        "b",
    )
    morning = scheduler.book(
        slot(scheduler, "dry_needling", "provider-1", chicago(2026, 3, 2, 9, 30)),
        ANN,
        "a",
    )
    scheduler.book(
        slot(scheduler, "dry_needling", "provider-1", chicago(2026, 3, 3, 9)), ANN, "c"
    )
    scheduler.cancel(afternoon.reference, BOB.phone, "cancel")

    code, out, err = run(capsys, clock, "bookings", "--date", "2026-03-02")

    assert (code, err) == (0, "")
    assert lines(out) == [
        ["Bookings on Monday 2026-03-02 (America/Chicago):"],
        ["time", "visit", "reference", "patient", "phone", "status", "provider"],
        [
            "09:30 AM",
            "Dry needling",
            morning.reference,
            "Ann Example",
            "+18175550100",
            "booked",
            "provider-1",
        ],
        [
            "01:00 PM",
            "Physical therapy",
            afternoon.reference,
            "Bob Example",
            "+18175550111",
            "cancelled",
            "provider-2",
        ],
    ]


def test_bookings_defaults_to_today_in_the_clinic_time_zone(
    scheduler: SqliteScheduler, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    scheduler.book(
        slot(scheduler, "dry_needling", "provider-1", chicago(2026, 3, 2, 9)), ANN, "a"
    )

    code, out, _ = run(capsys, clock, "bookings")
    assert (code, out) == (0, "No bookings on Sunday 2026-03-01 (America/Chicago).\n")

    clock.now += timedelta(hours=12)  # Monday morning in Chicago
    code, out, _ = run(capsys, clock, "bookings")
    assert code == 0 and "Monday 2026-03-02" in out and "Ann Example" in out


# --- blocks -----------------------------------------------------------------------


def test_block_takes_time_off_the_schedule_until_unblocked(
    scheduler: SqliteScheduler, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        clock,
        "block",
        "--start",
        "2026-03-02 09:00",
        "--end",
        "2026-03-02 10:00",
        "--reason",
        "Staff meeting",
    )

    assert (code, err) == (0, "")
    assert out == (
        "Blocked Mon 2026-03-02 09:00 AM to Mon 2026-03-02 10:00 AM for all "
        "providers (block 1).\n"
    )
    offered = scheduler.find_slots(
        "dry_needling", chicago(2026, 3, 2, 8), chicago(2026, 3, 2, 11), limit=20
    )
    starts = [f"{s.start.astimezone(scheduling_config().tz):%H:%M}" for s in offered]
    assert starts == ["08:00", "08:15", "08:30", "10:00", "10:15", "10:30", "10:45"]
    for provider in ("provider-1", "provider-2"):
        with pytest.raises(SlotUnavailable):
            scheduler.book(
                slot(scheduler, "dry_needling", provider, chicago(2026, 3, 2, 9, 30)),
                ANN,
                f"k-{provider}",
            )

    code, out, _ = run(capsys, clock, "blocks")
    assert code == 0
    assert lines(out) == [
        ["id", "start", "end", "provider", "reason"],
        [
            "1",
            "Mon 2026-03-02 09:00 AM",
            "Mon 2026-03-02 10:00 AM",
            "all",
            "Staff meeting",
        ],
    ]

    assert run(capsys, clock, "unblock", "1")[:2] == (0, "Removed block 1.\n")
    assert run(capsys, clock, "blocks")[:2] == (0, "No blocked times.\n")
    booking = scheduler.book(
        slot(scheduler, "dry_needling", "provider-1", chicago(2026, 3, 2, 9, 30)),
        ANN,
        "after-unblock",
    )
    assert booking.status == "booked"


def test_block_of_one_provider_lists_the_patients_to_call(
    scheduler: SqliteScheduler, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    booking = scheduler.book(
        slot(scheduler, "dry_needling", "provider-1", chicago(2026, 3, 2, 9)), ANN, "a"
    )
    scheduler.book(
        slot(scheduler, "dry_needling", "provider-2", chicago(2026, 3, 2, 9)), BOB, "b"
    )

    code, out, _ = run(
        capsys,
        clock,
        "block",
        "--start",
        "2026-03-02 08:00",
        "--end",
        "2026-03-02 12:00",
        "--provider",
        "provider-1",
    )

    assert code == 0
    assert lines(out)[0] == [
        "Blocked Mon 2026-03-02 08:00 AM to Mon 2026-03-02 12:00 PM for provider "
        "provider-1 (block 1)."
    ]
    assert lines(out)[1] == [
        "1 booking(s) in this time stay booked; please call these patients:"
    ]
    assert lines(out)[3][:5] == [
        "Mon 2026-03-02 09:00 AM",
        "Dry needling",
        booking.reference,
        "Ann Example",
        "+18175550100",
    ]
    assert "Bob" not in out
    offered = scheduler.find_slots(
        "dry_needling", chicago(2026, 3, 2, 10), chicago(2026, 3, 2, 11)
    )
    assert {s.provider for s in offered} == {"provider-2"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bookings", "--date", "2026-02-30"], "is not a date like"),
        (["bookings", "--date", "tomorrow"], "is not a date like"),
        (
            ["block", "--start", "2026-03-02 9am", "--end", "2026-03-02 10:00"],
            "is not a local time like",
        ),
        (
            ["block", "--start", "2026-03-02 10:00", "--end", "2026-03-02 09:00"],
            "the end must be after the start",
        ),
        (
            ["block", "--start", "2026-03-02 09:00", "--end", "2026-03-02 10:00"]
            + ["--provider", "dr-who"],
            "unknown provider 'dr-who'; known: provider-1, provider-2",
        ),
        (
            ["block", "--start", "2026-03-08 02:30", "--end", "2026-03-08 04:00"],
            "2026-03-08 02:30 does not exist in America/Chicago",
        ),
        (["block", "--start", "2026-03-02 09:00"], "required: --end"),
        (["unblock", "7"], "no block has id 7"),
        (["unblock", "seven"], "invalid int value"),
        (["callback-done", "3"], "no open callback request has id 3"),
        ([], "required: command"),
        (["reschedule"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_a_plain_message(
    db_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    argv: List[str],
    message: str,
) -> None:
    code, out, err = run(capsys, clock, *argv)

    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_a_clinic_file_without_scheduling_exits_1(
    db_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    facts = tmp_path / "facts.yml"
    facts.write_text(yaml.safe_dump(TEST_CLINIC), encoding="utf-8")
    monkeypatch.setenv("CLINIC_CONFIG", str(facts))
    scheduling_config.cache_clear()

    code, _, err = run(capsys, clock, "bookings")

    assert code == 1
    assert "has no 'scheduling:' section" in err


def test_an_unusable_database_exits_1(
    db_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    db_path.mkdir(parents=True)  # a directory where the file should be

    code, _, err = run(capsys, clock, "blocks")

    assert code == 1
    assert "The appointment database is not available." in err


# --- callbacks --------------------------------------------------------------------


def test_callbacks_listed_and_marked_done(
    db_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    store = CallbackStore(callback_db(db_path), clock=clock)
    first = store.add(
        "Ann Example", "+18175550100", "Tuesday\nmorning", "back \x1b[31mpain", "w1"
    )
    second = store.add("Bob Example", "817-555-0111", "any time", "", "w2")

    code, out, _ = run(capsys, clock, "callbacks")

    assert code == 0
    assert lines(out) == [
        ["id", "received", "patient", "phone", "preferred time", "note"],
        [
            str(first),
            "Sun 2026-03-01 06:30 PM",
            "Ann Example",
            "+18175550100",
            "Tuesday morning",
            "back [31mpain",  # the escape character never reaches the terminal
        ],
        [
            str(second),
            "Sun 2026-03-01 06:30 PM",
            "Bob Example",
            "817-555-0111",
            "any time",
        ],
    ]
    assert "\x1b" not in out

    assert run(capsys, clock, "callback-done", str(first))[:2] == (
        0,
        f"Callback request {first} marked done.\n",
    )
    assert [r.callback_id for r in store.list_open()] == [second]
    assert run(capsys, clock, "callback-done", str(first))[0] == 2
    store.mark_done(second)
    assert run(capsys, clock, "callbacks")[:2] == (0, "No open callback requests.\n")


def test_callbacks_are_listed_even_when_scheduling_settings_are_broken(
    db_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    CallbackStore(callback_db(db_path), clock=clock).add(
        "Ann", "+18175550100", "soon", "", "w"
    )
    monkeypatch.setenv("CLINIC_CONFIG", str(tmp_path / "missing.yml"))
    scheduling_config.cache_clear()

    code, out, _ = run(capsys, clock, "callbacks")

    assert code == 0
    assert "Mon 2026-03-02 12:30 AM" in out  # UTC, since the time zone is unknown
    assert "Ann" in out


def test_runs_as_a_module(db_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "staff", "blocks"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "RASA_TELEMETRY_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (result.returncode, result.stdout) == (0, "No blocked times.\n")
    assert db_path.exists()

    bad = subprocess.run(
        [sys.executable, "-m", "staff", "unblock", "1"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "no block has id 1" in bad.stderr


# --- reminders --------------------------------------------------------------------


@pytest.fixture
def test_clinic_reminders(db_path: Path) -> Iterator[None]:
    """The reminder settings read from the test's clinic file, and forgotten after."""
    caches = (reminder_settings, reminder_config, clinic)
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


@pytest.mark.usefixtures("test_clinic_reminders")
def test_reminders_shows_each_booking_state_without_phone_or_full_name(
    scheduler: SqliteScheduler,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "")  # as make run has it by default
    sent = scheduler.book(
        slot(scheduler, "dry_needling", "provider-1", chicago(2026, 3, 3, 9)),
        ANN,
        "a",
        reminder_consent=True,
    )
    scheduler.book(
        slot(scheduler, "physical_therapy", "provider-2", chicago(2026, 3, 3, 13)),
        BOB,
        "b",
    )
    clock.now = chicago(2026, 3, 2, 9)
    store = ReminderStore(scheduler.location)
    assert store.claim(sent.reference, timedelta(hours=24), clock.now)
    store.record(sent.reference, timedelta(hours=24), "sent")

    code, out, err = run(capsys, clock, "reminders", "--date", "2026-03-03")

    assert (code, err) == (0, "")
    assert lines(out) == [
        [
            "Reminders for the bookings on Tuesday 2026-03-03 (America/Chicago;"
            " SMS is not configured: no reminders are being sent):"
        ],
        ["time", "visit", "patient", "reminder"],
        ["09:00 AM", "dry needling", "Ann E.", "sent"],
        ["01:00 PM", "physical therapy", "Bob E.", "not allowed"],
    ]
    assert ANN.phone not in out and "Example" not in out
