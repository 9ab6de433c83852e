"""The reminder schedule: when, once, to whom, and what staff see (fake clock).

Every store test runs on a SQLite file and on PostgreSQL (``store_location``).
"""

from __future__ import annotations

import multiprocessing
import os
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Set

import pytest

from clinic_common.clinic_config import ReminderConfig
from scheduling.base import Booking, Patient
from scheduling.config import SchedulingConfig, parse_scheduling_config
from scheduling.reminders import (
    FAILED,
    SENDING,
    ReminderSchedule,
    ReminderSettings,
    ReminderStore,
    day_entries,
    send_time,
)
from scheduling.sqlite_backend import SqliteScheduler
from tests.staff.pgkit import Location

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONFIG: SchedulingConfig = parse_scheduling_config(
    {
        "timezone": "America/Chicago",
        "slot_minutes": 15,
        "opening_hours": {day: ["07:00-12:00", "13:00-21:00"] for day in DAYS},
        "visit_types": [{"key": "dry_needling", "name": "Dry needling", "minutes": 30}],
        "providers": ["provider-1"],
        "booking_horizon_days": 60,
    },
    "test",
)
TZ = CONFIG.tz
DEFAULTS = ReminderConfig()
SETTINGS = ReminderSettings(DEFAULTS, CONFIG, "Test Clinic")
ANN = Patient("Ann Marie Example", "+18175550100")
BOB = Patient("Bob Example", "+18175550111")


def local(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=TZ, fold=fold)  # type: ignore[misc]


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """The sender: records each reminder's reference (and can refuse)."""

    def __init__(self, answer: bool = True) -> None:
        self.sent: List[str] = []
        self.answer = answer

    def __call__(self, booking: Booking) -> bool:
        self.sent.append(booking.reference)
        return self.answer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(local(2026, 3, 2, 6, 0))  # Monday, before the sending hours


@pytest.fixture
def scheduler(store_location: Location, clock: FakeClock) -> SqliteScheduler:
    return SqliteScheduler(store_location("scheduler.db"), CONFIG, clock=clock)


def book(
    scheduler: SqliteScheduler,
    start: datetime,
    patient: Patient = ANN,
    consent: bool = True,
) -> Booking:
    """Books the slot starting at local ``start``."""
    [slot] = scheduler.find_slots(
        "dry_needling", start, start + timedelta(minutes=1), 1
    )
    assert slot.start == start
    key = f"key-{start.timestamp():.0f}-{patient.phone}"
    return scheduler.book(slot, patient, key, reminder_consent=consent)


def schedule_of(
    scheduler: SqliteScheduler,
    clock: FakeClock,
    send: Callable[[Booking], bool],
    opted_out: Set[str] = frozenset(),  # type: ignore[assignment]
    config: ReminderConfig = DEFAULTS,
) -> ReminderSchedule:
    return ReminderSchedule(
        bookings=scheduler,
        store=ReminderStore(scheduler.location),
        send=send,
        reachable=lambda phone: phone not in opted_out,
        settings=ReminderSettings(config, CONFIG, "Test Clinic"),
        clock=clock,
    )


# --- when ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visit", "offset_hours", "expected"),
    [
        # 24 hours before: the same wall-clock time the day before.
        (local(2026, 3, 3, 9, 0), 24, local(2026, 3, 2, 9, 0)),
        # Spring forward (Sunday 8 March 2026): Saturday 9:00 CST, 23 real hours.
        (local(2026, 3, 8, 9, 0), 24, local(2026, 3, 7, 9, 0)),
        # Fall back (Sunday 1 November 2026): Saturday 9:00 CDT, 25 real hours.
        (local(2026, 11, 1, 9, 0), 24, local(2026, 10, 31, 9, 0)),
        # Due after 20:00: at 20:00 that day.
        (local(2026, 3, 3, 21, 30), 1, local(2026, 3, 3, 20, 0)),
        # Due before 8:00: at 20:00 the day before, across either change.
        (local(2026, 3, 8, 8, 30), 2, local(2026, 3, 7, 20, 0)),
        (local(2026, 11, 1, 7, 0), 1, local(2026, 10, 31, 20, 0)),
        (local(2026, 3, 3, 7, 0), 24, local(2026, 3, 1, 20, 0)),
    ],
)
def test_send_time(visit: datetime, offset_hours: int, expected: datetime) -> None:
    sent = send_time(visit, timedelta(hours=offset_hours), DEFAULTS, TZ)
    assert sent == expected.astimezone(timezone.utc)


def test_real_hours_differ_across_the_changes() -> None:
    """The wall-clock rule in real hours: 23 in spring, 25 in autumn."""
    spring = local(2026, 3, 8, 9, 0)
    autumn = local(2026, 11, 1, 9, 0)
    day = timedelta(hours=24)
    assert spring - send_time(spring, day, DEFAULTS, TZ) == timedelta(hours=23)
    assert autumn - send_time(autumn, day, DEFAULTS, TZ) == timedelta(hours=25)


def test_reminded_at_its_time_and_once(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    booking = book(scheduler, local(2026, 3, 3, 9, 0))
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send)
    clock.now = local(2026, 3, 2, 8, 59)
    assert schedule.run_once().sent == 0
    clock.now = local(2026, 3, 2, 9, 0)
    assert schedule.run_once().sent == 1
    clock.now = local(2026, 3, 2, 9, 1)
    schedule.run_once()
    assert send.sent == [booking.reference]


def test_across_spring_forward_end_to_end(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    clock.now = local(2026, 3, 6, 12, 0)
    booking = book(scheduler, local(2026, 3, 8, 9, 0))
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send)
    clock.now = local(2026, 3, 7, 8, 59)
    schedule.run_once()
    assert send.sent == []
    clock.now = local(2026, 3, 7, 9, 0)
    schedule.run_once()
    assert send.sent == [booking.reference]


def test_quiet_hours_send_the_evening_before(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    """A 7:00 visit's 24-hour reminder would be at 7:00: it goes at 20:00 before."""
    clock.now = local(2026, 3, 1, 12, 0)
    booking = book(scheduler, local(2026, 3, 3, 7, 0))
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send)
    clock.now = local(2026, 3, 1, 19, 59)
    schedule.run_once()
    assert send.sent == []
    clock.now = local(2026, 3, 1, 20, 0)
    schedule.run_once()
    assert send.sent == [booking.reference]


def test_nothing_is_sent_outside_the_sending_hours(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    """A job that was down at the send time waits for the morning."""
    clock.now = local(2026, 3, 1, 12, 0)
    book(scheduler, local(2026, 3, 3, 9, 0))
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send)
    for moment in [local(2026, 3, 2, 21, 0), local(2026, 3, 3, 7, 59)]:
        clock.now = moment
        schedule.run_once()
    assert send.sent == []
    clock.now = local(2026, 3, 3, 8, 0)
    schedule.run_once()
    assert len(send.sent) == 1


def test_two_offsets_each_once(scheduler: SqliteScheduler, clock: FakeClock) -> None:
    config = ReminderConfig(offsets=(timedelta(hours=48), timedelta(hours=2)))
    booking = book(scheduler, local(2026, 3, 4, 10, 0))
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send, config=config)
    for moment in [
        local(2026, 3, 2, 10, 0),
        local(2026, 3, 2, 11, 0),
        local(2026, 3, 4, 8, 0),
        local(2026, 3, 4, 9, 59),
    ]:
        clock.now = moment
        schedule.run_once()
    assert send.sent == [booking.reference, booking.reference]


# --- to whom ------------------------------------------------------------------------


def test_no_consent_no_reminder(scheduler: SqliteScheduler, clock: FakeClock) -> None:
    book(scheduler, local(2026, 3, 3, 9, 0), consent=False)
    send = Recorder()
    clock.now = local(2026, 3, 2, 9, 0)
    assert schedule_of(scheduler, clock, send).run_once().sent == 0
    assert send.sent == []


def test_opted_out_number_gets_nothing(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    book(scheduler, local(2026, 3, 3, 9, 0))
    bob = book(scheduler, local(2026, 3, 3, 10, 0), BOB)
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send, opted_out={ANN.phone})
    clock.now = local(2026, 3, 2, 10, 0)
    result = schedule.run_once()
    assert (result.sent, result.not_allowed) == (1, 1)
    assert send.sent == [bob.reference]


def test_cancelled_booking_never_reminded(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    booking = book(scheduler, local(2026, 3, 3, 9, 0))
    scheduler.cancel(booking.reference, ANN.phone, "cancel-1")
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send)
    for hour in range(8, 21):
        clock.now = local(2026, 3, 2, hour, 0)
        schedule.run_once()
    assert send.sent == []


def test_cancelled_between_listing_and_sending_is_skipped(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    booking = book(scheduler, local(2026, 3, 3, 9, 0))
    send = Recorder()
    schedule = schedule_of(scheduler, clock, send)
    clock.now = local(2026, 3, 2, 9, 0)
    listed = schedule.due(clock.now)
    scheduler.cancel(booking.reference, ANN.phone, "cancel-1")
    real_due = schedule.due
    schedule.due = lambda now: listed  # type: ignore[method-assign]
    assert schedule.run_once().skipped == 1
    schedule.due = real_due  # type: ignore[method-assign]
    assert send.sent == []


def test_a_refused_send_is_failed_and_not_retried(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    book(scheduler, local(2026, 3, 3, 9, 0))
    send = Recorder(answer=False)
    schedule = schedule_of(scheduler, clock, send)
    clock.now = local(2026, 3, 2, 9, 0)
    assert schedule.run_once().failed == 1
    clock.now = local(2026, 3, 2, 9, 5)
    schedule.run_once()
    assert len(send.sent) == 1


# --- once, with several runners and restarts ----------------------------------------


def _runner(location: str, now: datetime, barrier: Any, out: str) -> None:
    """One job runner in its own process: records what it sent in ``out``."""
    scheduler = SqliteScheduler(location, CONFIG, clock=lambda: now)

    def send(booking: Booking) -> bool:
        descriptor = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(descriptor, f"{booking.reference}\n".encode())
        os.close(descriptor)
        return True

    schedule = ReminderSchedule(
        scheduler,
        ReminderStore(location),
        send,
        lambda phone: True,
        SETTINGS,
        clock=lambda: now,
    )
    barrier.wait()
    schedule.run_once()


def test_two_runners_at_once_send_each_reminder_once(
    scheduler: SqliteScheduler, clock: FakeClock, tmp_path: Path
) -> None:
    references = {
        book(scheduler, local(2026, 3, 3, 13, 0) + timedelta(minutes=30 * i)).reference
        for i in range(16)
    }
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    out = tmp_path / "sent.txt"
    now = local(2026, 3, 2, 20, 0)
    runners = [
        context.Process(
            target=_runner, args=(str(scheduler.location), now, barrier, str(out))
        )
        for _ in range(2)
    ]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
        assert runner.exitcode == 0
    sent = out.read_text().split()
    assert sorted(sent) == sorted(references)


class Crash(Exception):
    """The runner dies (a kill, a power cut) in the middle of a pass."""


def test_restart_in_the_middle_sends_the_rest_once(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    bookings = [
        book(scheduler, local(2026, 3, 3, 13, 0) + timedelta(minutes=30 * i))
        for i in range(5)
    ]
    sent: List[str] = []

    def dies_on_the_third(booking: Booking) -> bool:
        if len(sent) == 2:
            raise Crash
        sent.append(booking.reference)
        return True

    clock.now = local(2026, 3, 2, 17, 0)
    with pytest.raises(Crash):
        schedule_of(scheduler, clock, dies_on_the_third).run_once()
    restarted = Recorder()
    schedule_of(scheduler, clock, restarted).run_once()
    # The one being sent when it died is never sent again (at most once).
    assert sent + restarted.sent == [b.reference for b in bookings[:2] + bookings[3:]]
    rows = ReminderStore(scheduler.location).rows([bookings[2].reference])
    assert [row.state for row in rows[bookings[2].reference]] == [SENDING]


# --- what staff see -----------------------------------------------------------------


def test_states_of_a_day(scheduler: SqliteScheduler, clock: FakeClock) -> None:
    clock.now = local(2026, 3, 1, 12, 0)
    at = [local(2026, 3, 3, 8, 0) + timedelta(minutes=30 * i) for i in range(8)]
    patients = [Patient(f"P{i} Person", f"+1817555020{i}") for i in range(8)]
    made = [book(scheduler, at[i], patients[i], consent=i != 7) for i in range(8)]
    confirmed, moving, cancelled, silent, failed, opted, later, no_consent = made
    send: Dict[str, bool] = {failed.reference: False}
    schedule = schedule_of(
        scheduler,
        clock,
        lambda booking: send.get(booking.reference, True),
        opted_out={opted.patient.phone},
    )
    scheduler.cancel(cancelled.reference, cancelled.patient.phone, "c-1")
    clock.now = local(2026, 3, 2, 10, 30)  # the first six are due, not the 11:00
    schedule.run_once()
    scheduler.confirm(confirmed.reference, confirmed.patient.phone)
    scheduler.note_reschedule_request(moving.reference, moving.patient.phone)
    store = ReminderStore(scheduler.location)

    def states(now: datetime) -> List[str]:
        entries = day_entries(
            scheduler.bookings_on(date(2026, 3, 3)), store, SETTINGS, now
        )
        return [entry.state for entry in entries]

    assert states(local(2026, 3, 2, 12, 0)) == [
        "confirmed",
        "asked to reschedule",
        "cancelled",
        "sent",
        "failed",
        "not allowed",
        "not due",
        "not allowed",
    ]
    # On the visit's day, a reminder without an answer is "no reply".
    assert states(local(2026, 3, 3, 8, 0))[3] == "no reply"
    entry = day_entries([confirmed], store, SETTINGS, clock.now)[0]
    assert (entry.patient, entry.visit, entry.start.time()) == (
        "P0 P.",
        "dry needling",
        time(8, 0),
    )
    assert FAILED in {
        row.state for row in store.rows([failed.reference])[failed.reference]
    }
