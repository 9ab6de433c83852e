"""The embedded SQLite scheduler, against real SQLite files and a fake clock."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
import stat
import threading
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from clinic_common import sqlite
from scheduling import sqlite_backend
from scheduling.base import (
    BOOKED,
    CANCELLED,
    REFERENCE_ALPHABET,
    BackendUnavailable,
    BookingNotFound,
    Patient,
    Scheduler,
    Slot,
    SlotUnavailable,
    normalize_reference,
)
from scheduling.config import SchedulingConfig, parse_scheduling_config
from scheduling.sqlite_backend import SqliteScheduler
from tests.staff.pgkit import (
    INTEGRITY_ERRORS,
    Location,
    count_rows,
    execute_raw,
    is_url,
)

CHICAGO_NAME = "America/Chicago"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
ANN = Patient("Ann Example", "+18175550100")
BOB = Patient("Bob Example", "+18175550111")
CST = timedelta(hours=-6)
CDT = timedelta(hours=-5)


def make_config(**changes: Any) -> SchedulingConfig:
    raw: Dict[str, Any] = {
        "timezone": CHICAGO_NAME,
        "slot_minutes": 15,
        "opening_hours": {day: ["08:00-12:00", "13:00-17:00"] for day in WEEKDAYS},
        "visit_types": [
            {"key": "dry_needling", "name": "Dry needling", "minutes": 30},
            {"key": "evaluation", "name": "Evaluation", "minutes": 45},
            {"key": "physical_therapy", "name": "Physical therapy", "minutes": 60},
        ],
        "providers": ["provider-1", "provider-2"],
        "hold_minutes": 10,
        "booking_horizon_days": 60,
    }
    raw.update(changes)
    return parse_scheduling_config(raw, "test")


CONFIG = make_config()
TZ = CONFIG.tz


def local(*args: int, fold: int = 0) -> datetime:
    """An aware local time in Chicago."""
    return datetime(*args, tzinfo=TZ, fold=fold)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(local(2026, 3, 1, 12, 0))  # Sunday noon, before the test week


@pytest.fixture
def scheduler(store_location: Location, clock: FakeClock) -> SqliteScheduler:
    """The scheduler on SQLite, then on PostgreSQL: every guarantee holds on both."""
    return SqliteScheduler(store_location("scheduler.db"), CONFIG, clock=clock)


def slot_at(
    scheduler: SqliteScheduler, visit: str, provider: str, start: datetime
) -> Slot:
    stamp = start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return scheduler.slot_from_id(f"{visit}|{provider}|{stamp}")


def day_slots(
    scheduler: SqliteScheduler, visit: str, day: date, limit: int = 500
) -> List[Slot]:
    start = datetime.combine(day, time(0), tzinfo=TZ)
    return scheduler.find_slots(visit, start, start + timedelta(days=1), limit)


def wall(slot: Slot) -> str:
    """The slot's local start time, e.g. "09:00"."""
    return f"{slot.start.astimezone(TZ):%H:%M}"


def walls(slots: List[Slot]) -> List[str]:
    return [wall(slot) for slot in slots]


def offset(slot: Slot) -> Optional[timedelta]:
    """The UTC offset of the slot's start in Chicago."""
    return slot.start.astimezone(TZ).utcoffset()


def grid(first: str, last: str) -> List[str]:
    """Wall times every 15 minutes from first to last, inclusive."""
    start = datetime.strptime(first, "%H:%M")
    end = datetime.strptime(last, "%H:%M")
    times = []
    while start <= end:
        times.append(f"{start:%H:%M}")
        start += timedelta(minutes=15)
    return times


# --- slots --------------------------------------------------------------------------


def test_is_a_scheduler(scheduler: SqliteScheduler) -> None:
    assert isinstance(scheduler, Scheduler)


def test_slots_of_a_normal_day_at_exact_times(scheduler: SqliteScheduler) -> None:
    slots = day_slots(scheduler, "dry_needling", date(2026, 3, 2))

    assert walls(slots) == grid("08:00", "11:30") + grid("13:00", "16:30")
    assert {slot.provider for slot in slots} == {"provider-1"}
    assert all(offset(slot) == CST for slot in slots)
    assert all(slot.start.utcoffset() == timedelta(0) for slot in slots)  # UTC
    assert all(slot.end - slot.start == timedelta(minutes=30) for slot in slots)
    assert slots[0].slot_id == "dry_needling|provider-1|2026-03-02T14:00:00Z"
    assert slots[0].start == utc(2026, 3, 2, 14, 0)
    assert slots[0].visit_type == "dry_needling"


@pytest.mark.parametrize(
    ("visit", "morning_last", "afternoon_last"),
    [
        ("dry_needling", "11:30", "16:30"),
        ("evaluation", "11:15", "16:15"),
        ("physical_therapy", "11:00", "16:00"),
    ],
)
def test_a_visit_fits_wholly_inside_an_opening_interval(
    scheduler: SqliteScheduler, visit: str, morning_last: str, afternoon_last: str
) -> None:
    slots = day_slots(scheduler, visit, date(2026, 3, 3))

    assert walls(slots) == grid("08:00", morning_last) + grid("13:00", afternoon_last)


def test_no_slots_on_closed_days(scheduler: SqliteScheduler) -> None:
    assert day_slots(scheduler, "dry_needling", date(2026, 3, 7)) == []  # Saturday


def test_slots_always_inside_opening_hours_over_two_weeks(
    scheduler: SqliteScheduler,
) -> None:
    for visit in CONFIG.visit_types:
        slots = scheduler.find_slots(
            visit.key, local(2026, 3, 1), local(2026, 3, 15), limit=10_000
        )
        assert len(slots) > 100
        for slot in slots:
            start, end = slot.start.astimezone(TZ), slot.end.astimezone(TZ)
            assert start.date() == end.date()
            assert any(
                interval.start <= start.time() and end.time() <= interval.end
                for interval in CONFIG.intervals_on(start.date())
            ), slot
            assert start.minute % 15 == 0


def test_limit_and_window(scheduler: SqliteScheduler) -> None:
    slots = scheduler.find_slots(
        "dry_needling", local(2026, 3, 2, 9, 10), local(2026, 3, 2, 10, 0), limit=3
    )

    assert walls(slots) == ["09:15", "09:30", "09:45"]
    assert (
        scheduler.find_slots(
            "dry_needling", local(2026, 3, 2, 9, 10), local(2026, 3, 2, 9, 15)
        )
        == []
    )
    assert (
        scheduler.find_slots("dry_needling", local(2026, 3, 2), local(2026, 3, 3), 0)
        == []
    )


def test_no_slots_in_the_past(scheduler: SqliteScheduler, clock: FakeClock) -> None:
    clock.now = local(2026, 3, 2, 10, 7)

    slots = day_slots(scheduler, "dry_needling", date(2026, 3, 2))

    assert walls(slots)[0] == "10:15"
    assert all(slot.start > clock.now for slot in slots)
    clock.now = local(2026, 3, 2, 10, 15)  # a slot starting now is already gone
    assert walls(day_slots(scheduler, "dry_needling", date(2026, 3, 2)))[0] == "10:30"


def test_past_slot_can_be_neither_held_nor_booked(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    slot = day_slots(scheduler, "dry_needling", date(2026, 3, 2))[0]
    clock.now = slot.start + timedelta(minutes=1)

    with pytest.raises(SlotUnavailable):
        scheduler.hold(slot)
    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, ANN, "late")


def test_no_slots_beyond_the_booking_horizon(tmp_path: Path, clock: FakeClock) -> None:
    scheduler = SqliteScheduler(
        tmp_path / "s.db", make_config(booking_horizon_days=2), clock=clock
    )

    slots = scheduler.find_slots(
        "dry_needling", local(2026, 3, 1), local(2026, 3, 20), limit=1000
    )

    assert slots and all(slot.start < clock.now + timedelta(days=2) for slot in slots)
    # Sunday noon + 2 days: all of Monday, Tuesday until noon.
    days = {slot.start.astimezone(TZ).date() for slot in slots}
    assert days == {date(2026, 3, 2), date(2026, 3, 3)}
    assert f"{slots[-1].start.astimezone(TZ):%a %H:%M}" == "Tue 11:30"
    later = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 4, 9))
    with pytest.raises(SlotUnavailable):
        scheduler.hold(later)
    with pytest.raises(SlotUnavailable):
        scheduler.book(later, ANN, "far")


def test_unknown_visit_type_is_a_caller_error(scheduler: SqliteScheduler) -> None:
    with pytest.raises(ValueError, match="unknown visit type"):
        scheduler.find_slots("massage", local(2026, 3, 2), local(2026, 3, 3))


# --- daylight-saving time -------------------------------------------------------------


def test_nine_am_is_nine_local_on_both_sides_of_spring_forward(
    scheduler: SqliteScheduler,
) -> None:
    friday = day_slots(scheduler, "dry_needling", date(2026, 3, 6))
    monday = day_slots(scheduler, "dry_needling", date(2026, 3, 9))

    before = next(slot for slot in friday if wall(slot) == "09:00")
    after = next(slot for slot in monday if wall(slot) == "09:00")
    assert offset(before) == CST and before.start == utc(2026, 3, 6, 15)
    assert offset(after) == CDT and after.start == utc(2026, 3, 9, 14)
    assert walls(friday) == walls(monday)


def test_nine_am_is_nine_local_on_both_sides_of_fall_back(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    clock.now = local(2026, 10, 25)
    friday = day_slots(scheduler, "dry_needling", date(2026, 10, 30))
    monday = day_slots(scheduler, "dry_needling", date(2026, 11, 2))

    assert friday[4].start == utc(2026, 10, 30, 14) and wall(friday[4]) == "09:00"
    assert monday[4].start == utc(2026, 11, 2, 15) and wall(monday[4]) == "09:00"
    assert walls(friday) == walls(monday)


@pytest.fixture
def night_scheduler(tmp_path: Path, clock: FakeClock) -> SqliteScheduler:
    """Open on Sundays 01:00-04:00 (across the change) and 08:00-12:00."""
    config = make_config(
        opening_hours={"sun": ["01:00-04:00", "08:00-12:00"]}, booking_horizon_days=400
    )
    return SqliteScheduler(tmp_path / "night.db", config, clock=clock)


def test_spring_forward_day_has_no_slot_at_a_nonexistent_time(
    night_scheduler: SqliteScheduler,
) -> None:
    slots = day_slots(night_scheduler, "dry_needling", date(2026, 3, 8))

    assert walls(slots) == (
        grid("01:00", "01:45") + grid("03:00", "03:30") + grid("08:00", "11:30")
    )
    assert [offset(slot) for slot in slots[:4]] == [CST] * 4
    assert {offset(slot) for slot in slots[4:]} == {CDT}
    # 01:45 CST and 03:00 CDT are 15 real minutes apart: nothing is missing.
    assert slots[4].start - slots[3].start == timedelta(minutes=15)
    assert slots[3].end == slots[3].start + timedelta(minutes=30)
    assert f"{slots[3].end.astimezone(TZ):%H:%M}" == "03:15"


def test_fall_back_day_offers_the_repeated_hour_once(
    night_scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    clock.now = local(2026, 10, 31, 12)

    slots = day_slots(night_scheduler, "dry_needling", date(2026, 11, 1))

    assert walls(slots) == grid("01:00", "03:30") + grid("08:00", "11:30")
    assert len({slot.slot_id for slot in slots}) == len(slots)
    assert [offset(slot) for slot in slots[:4]] == [CDT] * 4  # first 1:xx
    assert {offset(slot) for slot in slots[4:]} == {CST}
    assert slots[0].start == utc(2026, 11, 1, 6, 0)
    assert slots[4].start == utc(2026, 11, 1, 8, 0)  # 02:00 CST
    # The second 01:00 (01:00 CST, 07:00 UTC) is not a slot of its own.
    with pytest.raises(SlotUnavailable):
        slot_at(night_scheduler, "dry_needling", "provider-1", utc(2026, 11, 1, 7, 0))


def test_long_visit_across_fall_back_lasts_its_real_length(
    night_scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    clock.now = local(2026, 10, 31, 12)
    slots = day_slots(night_scheduler, "physical_therapy", date(2026, 11, 1))

    one_thirty = next(slot for slot in slots if wall(slot) == "01:30")
    assert one_thirty.end - one_thirty.start == timedelta(hours=1)
    assert f"{one_thirty.end.astimezone(TZ):%H:%M}" == "01:30"  # 01:30 CST
    assert walls(slots) == grid("01:00", "03:00") + grid("08:00", "11:00")


# --- overlap, holds ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 10, False),  # before everything
        (10, 20, False),  # ends when the first range starts
        (15, 25, True),
        (30, 35, False),  # between ranges
        (40, 50, True),  # inside the long range, after the short one ended
        (95, 120, True),
        (100, 110, False),  # starts when the long range ends
        (45, 46, True),
    ],
)
def test_busy_times_overlap(start: int, end: int, expected: bool) -> None:
    # A long range (35-100) that starts before a short one (36-37) ends later:
    # the overlap test must not look only at the nearest range.
    busy = sqlite_backend.BusyTimes([(20, 30), (36, 37), (35, 100)])

    assert busy.overlaps(start, end) is expected
    assert sqlite_backend.BusyTimes([]).overlaps(start, end) is False


def test_long_booking_blocks_overlapping_short_slots_of_that_provider_only(
    scheduler: SqliteScheduler,
) -> None:
    therapy = slot_at(scheduler, "physical_therapy", "provider-1", local(2026, 3, 2, 9))
    scheduler.book(therapy, ANN, "therapy")

    slots = scheduler.find_slots(
        "dry_needling", local(2026, 3, 2, 8), local(2026, 3, 2, 10, 30), limit=20
    )

    providers = {wall(slot): slot.provider for slot in slots}
    assert providers == {
        "08:00": "provider-1",
        "08:15": "provider-1",
        "08:30": "provider-1",  # ends 09:00, when the therapy starts
        "08:45": "provider-2",
        "09:00": "provider-2",
        "09:15": "provider-2",
        "09:30": "provider-2",
        "09:45": "provider-2",
        "10:00": "provider-1",  # starts when the therapy ends
        "10:15": "provider-1",
    }
    for start in (local(2026, 3, 2, 8, 45), local(2026, 3, 2, 9, 30)):
        with pytest.raises(SlotUnavailable):
            scheduler.book(
                slot_at(scheduler, "dry_needling", "provider-1", start), BOB, "x"
            )
    other = slot_at(scheduler, "dry_needling", "provider-2", local(2026, 3, 2, 9, 30))
    assert scheduler.book(other, BOB, "other").slot == other


def test_the_database_itself_refuses_overlapping_bookings(
    scheduler: SqliteScheduler,
) -> None:
    booking = scheduler.book(
        slot_at(scheduler, "physical_therapy", "provider-1", local(2026, 3, 2, 9)),
        ANN,
        "k",
    )
    start = int(booking.slot.start.timestamp())
    insert = (
        "INSERT INTO bookings (reference, slot_id, visit_type, provider, start_utc,"
        " end_utc, patient_name, patient_phone, status, created_utc)"
        " VALUES (?, 'x', 'dry_needling', ?, ?, ?, 'Eve', '+18175550122', ?, 0)"
    )
    where = scheduler.location
    for provider, offset, status in [
        ("provider-1", 30 * 60, "booked"),  # inside the 60-minute visit
        ("provider-1", -15 * 60, "booked"),  # overlaps its start
        ("provider-1", 0, "pending"),  # not a known status
    ]:
        with pytest.raises(INTEGRITY_ERRORS):
            execute_raw(
                where,
                insert,
                ("RAW001", provider, start + offset, start + offset + 1800, status),
            )
    execute_raw(  # another provider, or cancelled: fine
        where, insert, ("RAW002", "provider-2", start, start + 1800, "booked")
    )
    execute_raw(
        where, insert, ("RAW003", "provider-1", start, start + 1800, "cancelled")
    )
    with pytest.raises(INTEGRITY_ERRORS):
        execute_raw(
            where, "UPDATE bookings SET status = 'booked' WHERE reference = 'RAW003'"
        )


def test_a_held_slot_blocks_others_but_not_its_holder(
    scheduler: SqliteScheduler,
) -> None:
    slot = slot_at(scheduler, "evaluation", "provider-1", local(2026, 3, 2, 9))
    hold = scheduler.hold(slot)

    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, BOB, "bob")
    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, BOB, "bob-2", hold_id="someone-elses-hold")
    with pytest.raises(SlotUnavailable):
        scheduler.hold(slot)
    offered = scheduler.find_slots(
        "evaluation", local(2026, 3, 2, 9), local(2026, 3, 2, 9, 15)
    )
    assert [slot.provider for slot in offered] == ["provider-2"]

    booking = scheduler.book(slot, ANN, "ann", hold_id=hold.hold_id)

    assert booking.slot == slot and booking.status == BOOKED
    assert count_rows(scheduler.location, "SELECT count(*) FROM holds") == 0


def test_hold_expires_after_hold_minutes(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    hold = scheduler.hold(slot)
    assert hold.expires_at == clock.now + timedelta(minutes=10)
    assert hold.slot == slot

    clock.advance(minutes=9, seconds=59)
    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, BOB, "too-early")

    clock.advance(seconds=1)
    booking = scheduler.book(slot, BOB, "after-expiry")
    assert booking.patient == BOB


def test_hold_ttl_argument_and_release(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    hold = scheduler.hold(slot, ttl=timedelta(minutes=2))
    assert hold.expires_at == clock.now + timedelta(minutes=2)

    scheduler.release(hold.hold_id)
    scheduler.release(hold.hold_id)  # again: no-op
    scheduler.release("never-existed")

    assert scheduler.book(slot, BOB, "released").status == BOOKED
    with pytest.raises(ValueError):
        scheduler.hold(slot, ttl=timedelta(0))


def test_own_expired_hold_still_books_if_the_slot_is_free(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    hold = scheduler.hold(slot)
    clock.advance(minutes=30)

    assert scheduler.book(slot, ANN, "k", hold_id=hold.hold_id).status == BOOKED


# --- slot ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "slot_id",
    [
        "nonsense",
        "dry_needling|provider-1",
        "dry_needling|provider-1|2026-03-02T15:00:00Z|extra",
        "massage|provider-1|2026-03-02T15:00:00Z",
        "dry_needling|provider-9|2026-03-02T15:00:00Z",
        "dry_needling|provider-1|2026-03-02 15:00",
        "dry_needling|provider-1|2026-03-02T15:05:00Z",  # off the grid
        "dry_needling|provider-1|2026-03-02T18:00:00Z",  # 12:00, lunch
        "dry_needling|provider-1|2026-03-02T17:45:00Z",  # 11:45, ends 12:15
        "dry_needling|provider-1|2026-03-07T15:00:00Z",  # Saturday
    ],
)
def test_malformed_or_unscheduled_slot_ids_are_refused(
    scheduler: SqliteScheduler, slot_id: str
) -> None:
    slot = Slot(
        slot_id, local(2026, 3, 2, 9), local(2026, 3, 2, 9, 30), "dry_needling", "x"
    )

    with pytest.raises(SlotUnavailable):
        scheduler.slot_from_id(slot_id)
    with pytest.raises(SlotUnavailable):
        scheduler.hold(slot)
    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, ANN, "key-malformed-slot")
    assert count_rows(scheduler.location, "SELECT count(*) FROM bookings") == 0


def test_a_slot_that_does_not_match_its_id_is_refused(
    scheduler: SqliteScheduler,
) -> None:
    real = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    longer = Slot(
        real.slot_id,
        real.start,
        real.end + timedelta(hours=1),
        "dry_needling",
        "provider-1",
    )
    moved = Slot(
        real.slot_id,
        real.start + timedelta(hours=1),
        real.end + timedelta(hours=1),
        "dry_needling",
        "provider-1",
    )
    other_provider = Slot(
        real.slot_id, real.start, real.end, "dry_needling", "provider-2"
    )

    for index, slot in enumerate((longer, moved, other_provider)):
        with pytest.raises(SlotUnavailable):
            scheduler.book(slot, ANN, f"k-{index}")
    assert scheduler.book(real, ANN, "real").slot == real


# --- idempotency ---------------------------------------------------------------------


def test_book_replay_returns_the_first_booking_and_changes_nothing(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    first = scheduler.book(slot, ANN, "request-1")

    again = scheduler.book(slot, ANN, "request-1")
    clock.now = slot.end + timedelta(days=1)  # even once the slot is past
    later = scheduler.book(slot, ANN, "request-1")

    assert again == first and later == first
    assert count_rows(scheduler.location, "SELECT count(*) FROM bookings") == 1


def test_same_key_for_a_different_request_is_refused(
    scheduler: SqliteScheduler,
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    other = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 10))
    first = scheduler.book(slot, ANN, "request-1")

    with pytest.raises(ValueError, match="different request"):
        scheduler.book(other, ANN, "request-1")
    with pytest.raises(ValueError, match="different request"):
        scheduler.book(slot, BOB, "request-1")
    with pytest.raises(ValueError, match="different request"):
        scheduler.cancel(first.reference, ANN.phone, "request-1")
    assert count_rows(scheduler.location, "SELECT count(*) FROM bookings") == 1
    assert scheduler.get_booking(first.reference, ANN.phone).status == BOOKED


def test_cancel_replay_returns_the_first_result_and_changes_nothing(
    scheduler: SqliteScheduler,
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    booking = scheduler.book(slot, ANN, "book-ann")

    cancelled = scheduler.cancel(booking.reference, ANN.phone, "cancel-1")
    assert cancelled.status == CANCELLED and cancelled.reference == booking.reference
    rebooked = scheduler.book(slot, BOB, "book-bob")  # the slot is free again

    assert scheduler.cancel(booking.reference, ANN.phone, "cancel-1") == cancelled
    assert scheduler.cancel(booking.reference, ANN.phone, "cancel-2") == cancelled
    assert scheduler.get_booking(rebooked.reference, BOB.phone).status == BOOKED
    with pytest.raises(ValueError, match="different request"):
        scheduler.cancel(rebooked.reference, BOB.phone, "cancel-1")
    assert scheduler.get_booking(rebooked.reference, BOB.phone).status == BOOKED
    # The book key now answers with the booking as it is: same reference, cancelled.
    assert scheduler.book(slot, ANN, "book-ann") == cancelled


def test_failed_cancel_does_not_use_up_its_key(scheduler: SqliteScheduler) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    booking = scheduler.book(slot, ANN, "book")

    with pytest.raises(BookingNotFound):
        scheduler.cancel(booking.reference, BOB.phone, "cancel")

    assert scheduler.cancel(booking.reference, ANN.phone, "cancel").status == CANCELLED


@pytest.mark.parametrize("key", ["", "   ", "x" * 201])
def test_unusable_idempotency_keys(scheduler: SqliteScheduler, key: str) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    with pytest.raises(ValueError, match="idempotency_key"):
        scheduler.book(slot, ANN, key)


# --- references and lookups ----------------------------------------------------------


def test_reference_codes_are_short_and_readable(scheduler: SqliteScheduler) -> None:
    slots = day_slots(scheduler, "dry_needling", date(2026, 3, 2))
    references = [
        scheduler.book(slot, ANN, f"k{index}").reference
        for index, slot in enumerate(slots[::2][:10])  # every other: no overlap
    ]

    assert len(set(references)) == 10
    for reference in references:
        assert len(reference) == 6
        assert set(reference) <= set(REFERENCE_ALPHABET)
    assert not set("0O1IL") & set(REFERENCE_ALPHABET)


def test_reference_collision_is_retried(
    scheduler: SqliteScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = iter(["AAAAAA", "AAAAAA", "AAAAAA", "BBBBBB"])
    monkeypatch.setattr(sqlite_backend, "new_reference", lambda: next(codes))
    slots = day_slots(scheduler, "dry_needling", date(2026, 3, 2))

    first = scheduler.book(slots[0], ANN, "one")
    second = scheduler.book(slots[2], BOB, "two")

    assert (first.reference, second.reference) == ("AAAAAA", "BBBBBB")


def test_get_booking_needs_reference_and_phone(scheduler: SqliteScheduler) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    booking = scheduler.book(slot, Patient(" Ann Example ", " +18175550100 "), "k")
    assert booking.patient == ANN
    code = booking.reference
    spoken = f"{code[:3].lower()} - {code[3:].lower()}"

    assert scheduler.get_booking(spoken, "+18175550100") == booking
    assert normalize_reference(spoken) == code

    messages = set()
    for reference, phone in [
        (code, "+18175550199"),  # wrong phone
        ("ZZZZZZ" if code != "ZZZZZZ" else "YYYYYY", ANN.phone),  # wrong reference
        (code, "(817) 555-0100"),  # not E.164
        ("", ANN.phone),
    ]:
        with pytest.raises(BookingNotFound) as error:
            scheduler.get_booking(reference, phone)
        messages.add(str(error.value))
        with pytest.raises(BookingNotFound):
            scheduler.cancel(reference, phone, f"c-{len(messages)}-{reference}")
    assert len(messages) == 1  # no hint which part was wrong
    assert scheduler.get_booking(code, ANN.phone).status == BOOKED


@pytest.mark.parametrize(
    "patient",
    [
        Patient("", "+18175550100"),
        Patient("Ann", "8175550100"),
        Patient("Ann", "+1 817"),
    ],
)
def test_unusable_patients_are_refused(
    scheduler: SqliteScheduler, patient: Patient
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    scheduler.find_slots("dry_needling", local(2026, 3, 2), local(2026, 3, 3))  # create

    with pytest.raises(ValueError) as error:
        scheduler.book(slot, patient, "k")

    assert str(error.value) in {  # fixed texts: never the patient's values
        "the patient's name is empty",
        "the patient's phone must be in E.164 form, e.g. +18175550100",
    }
    assert count_rows(scheduler.location, "SELECT count(*) FROM bookings") == 0


# --- concurrency ---------------------------------------------------------------------


def _attempt(scheduler: SqliteScheduler, slot: Slot, index: int, barrier: Any) -> str:
    barrier.wait()
    try:
        scheduler.book(slot, Patient(f"P{index}", f"+1817555{index:04d}"), f"k{index}")
    except SlotUnavailable:
        return "unavailable"
    except Exception as error:  # reported, so the test shows what went wrong
        return repr(error)
    return "booked"


@pytest.mark.parametrize(
    "visits",
    [
        pytest.param([("dry_needling", 9, 0)], id="one-slot"),
        # Different start times: only the overlap check, not a unique index, stops
        # them.
        pytest.param(
            [("dry_needling", 9, 30), ("physical_therapy", 9, 0)],
            id="overlapping-visit-lengths",
        ),
    ],
)
def test_fifty_threads_race_for_one_time(
    scheduler: SqliteScheduler, visits: List[Tuple[str, int, int]]
) -> None:
    slots = [
        slot_at(scheduler, visit, "provider-1", local(2026, 3, 2, hour, minute))
        for visit, hour, minute in visits
    ]
    barrier = threading.Barrier(50)
    results: List[str] = [""] * 50

    def run(index: int) -> None:
        results[index] = _attempt(scheduler, slots[index % len(slots)], index, barrier)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == ["booked"] + ["unavailable"] * 49
    assert count_rows(scheduler.location, "SELECT count(*) FROM bookings") == 1


def _process_attempt(
    path: str, now: datetime, slot_id: str, index: int, barrier: Any, results: Any
) -> None:
    scheduler = SqliteScheduler(path, CONFIG, clock=lambda: now)  # its own connections
    results.put(_attempt(scheduler, scheduler.slot_from_id(slot_id), index, barrier))


def test_fifty_processes_race_for_one_slot(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    """Exactly one wins, on one SQLite file as on PostgreSQL (several servers)."""
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(50)
    results = context.Queue()
    processes = [
        context.Process(
            target=_process_attempt,
            args=(
                str(scheduler.location),
                clock.now,
                slot.slot_id,
                index,
                barrier,
                results,
            ),
        )
        for index in range(50)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)

    assert sorted(outcomes) == ["booked"] + ["unavailable"] * 49
    assert all(process.exitcode == 0 for process in processes)
    assert count_rows(scheduler.location, "SELECT count(*) FROM bookings") == 1


# --- blocks and staff views ----------------------------------------------------------


def test_a_blocked_time_is_not_offered_and_cannot_be_booked(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    block = scheduler.block(
        local(2026, 3, 2, 9), local(2026, 3, 2, 10), reason="Staff meeting"
    )
    assert block.provider is None and block.reason == "Staff meeting"

    slots = scheduler.find_slots(
        "dry_needling", local(2026, 3, 2, 8), local(2026, 3, 2, 11), limit=20
    )
    assert walls(slots) == grid("08:00", "08:30") + grid("10:00", "10:45")
    for provider in CONFIG.providers:
        with pytest.raises(SlotUnavailable):
            scheduler.book(
                slot_at(scheduler, "dry_needling", provider, local(2026, 3, 2, 9, 15)),
                ANN,
                f"blocked-{provider}",
            )

    assert scheduler.unblock(block.block_id) is True
    assert scheduler.unblock(block.block_id) is False
    assert "09:15" in walls(
        scheduler.find_slots(
            "dry_needling", local(2026, 3, 2, 8), local(2026, 3, 2, 11), limit=20
        )
    )


def test_a_provider_block_leaves_the_other_provider_bookable(
    scheduler: SqliteScheduler,
) -> None:
    scheduler.block(local(2026, 3, 2, 8), local(2026, 3, 2, 12), provider="provider-1")

    slots = day_slots(scheduler, "dry_needling", date(2026, 3, 2))

    assert {slot.provider for slot in slots if wall(slot) < "12:00"} == {"provider-2"}
    assert {slot.provider for slot in slots if wall(slot) > "12:00"} == {"provider-1"}
    with pytest.raises(ValueError, match="unknown provider"):
        scheduler.block(local(2026, 3, 2, 8), local(2026, 3, 2, 9), provider="dr-x")
    with pytest.raises(ValueError, match="end after"):
        scheduler.block(local(2026, 3, 2, 9), local(2026, 3, 2, 9))


def test_list_blocks_shows_blocks_not_yet_over(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    early = scheduler.block(local(2026, 3, 2, 8), local(2026, 3, 2, 9), reason="a")
    late = scheduler.block(
        local(2026, 3, 3, 8), local(2026, 3, 3, 9), "provider-2", "b"
    )

    assert scheduler.list_blocks() == [early, late]
    clock.now = local(2026, 3, 2, 9)
    assert scheduler.list_blocks() == [late]
    assert scheduler.list_blocks(include_past=True) == [early, late]


def test_bookings_on_a_day_and_bookings_in_a_block(
    scheduler: SqliteScheduler,
) -> None:
    late = scheduler.book(
        slot_at(scheduler, "evaluation", "provider-2", local(2026, 3, 2, 15)), BOB, "b"
    )
    early = scheduler.book(
        slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9)), ANN, "a"
    )
    scheduler.book(
        slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 3, 9)), ANN, "c"
    )
    scheduler.cancel(late.reference, BOB.phone, "cancel-b")

    on_monday = scheduler.bookings_on(date(2026, 3, 2))

    assert [(b.reference, b.status) for b in on_monday] == [
        (early.reference, BOOKED),
        (late.reference, CANCELLED),
    ]
    assert on_monday[0] == early
    assert scheduler.active_bookings_between(
        local(2026, 3, 2, 9, 15), local(2026, 3, 2, 16)
    ) == [early]
    assert (
        scheduler.active_bookings_between(
            local(2026, 3, 2, 9), local(2026, 3, 2, 10), provider="provider-2"
        )
        == []
    )


# --- safety ------------------------------------------------------------------------


def test_naive_datetimes_are_refused(
    scheduler: SqliteScheduler, clock: FakeClock
) -> None:
    naive = datetime(2026, 3, 2, 9)
    aware = local(2026, 3, 2, 9)

    with pytest.raises(ValueError, match="time-zone aware"):
        scheduler.find_slots("dry_needling", naive, aware)
    with pytest.raises(ValueError, match="time-zone aware"):
        scheduler.find_slots("dry_needling", aware, naive)
    with pytest.raises(ValueError, match="time-zone aware"):
        scheduler.block(naive, aware)
    clock.now = naive
    with pytest.raises(ValueError, match="time-zone aware"):
        scheduler.find_slots("dry_needling", aware, aware + timedelta(days=1))


def test_nothing_touches_the_disk_until_first_use(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "state" / "scheduler.db"
    scheduler = SqliteScheduler(path, CONFIG, clock=clock)

    assert not path.parent.exists()
    scheduler.find_slots("dry_needling", local(2026, 3, 2), local(2026, 3, 3))
    assert path.exists()


def test_database_files_are_readable_by_their_owner_only(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "state" / "scheduler.db"
    scheduler = SqliteScheduler(path, CONFIG, clock=clock)
    old_umask = os.umask(0)  # the modes must not depend on the umask
    try:
        scheduler.book(
            slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9)),
            ANN,
            "k",
        )
        with sqlite3.connect(path) as reader:  # keeps -wal and -shm in place
            reader.execute("SELECT count(*) FROM bookings").fetchone()
            scheduler.book(
                slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 10)),
                ANN,
                "k2",
            )
            modes = {
                name: stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode)
                for name in os.listdir(tmp_path / "state")
            }
    finally:
        os.umask(old_umask)

    assert modes == {
        "scheduler.db": 0o600,
        "scheduler.db-wal": 0o600,
        "scheduler.db-shm": 0o600,
    }
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert count_rows(path, "SELECT count(*) FROM bookings") == 2
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_existing_file_is_tightened_to_0600(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "scheduler.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)

    SqliteScheduler(path, CONFIG, clock=clock).find_slots(
        "dry_needling", local(2026, 3, 2), local(2026, 3, 3)
    )

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_locked_database_is_backend_unavailable(
    scheduler: SqliteScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))
    scheduler.find_slots("dry_needling", local(2026, 3, 2), local(2026, 3, 3))  # create
    if is_url(scheduler.location):
        pytest.skip("SQLite's file lock (PostgreSQL's: test_pg_stores.py)")
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_SECONDS", 0.2)
    other = sqlite3.connect(scheduler.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendUnavailable):
            scheduler.book(slot, ANN, "k")
    finally:
        other.rollback()
        other.close()

    assert scheduler.book(slot, ANN, "k").status == BOOKED


@pytest.mark.parametrize("kind", ["directory", "garbage"])
def test_an_unusable_file_is_backend_unavailable(
    tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    path = tmp_path / "scheduler.db"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not a database" * 100)
    scheduler = SqliteScheduler(path, CONFIG, clock=clock)

    with pytest.raises(BackendUnavailable):
        scheduler.find_slots("dry_needling", local(2026, 3, 2), local(2026, 3, 3))
    with pytest.raises(BackendUnavailable):
        scheduler.get_booking("ABCDEF", ANN.phone)


def test_patient_data_is_never_logged(
    scheduler: SqliteScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slot = slot_at(scheduler, "dry_needling", "provider-1", local(2026, 3, 2, 9))

    hold = scheduler.hold(slot)
    booking = scheduler.book(slot, ANN, "k", hold_id=hold.hold_id)
    scheduler.get_booking(booking.reference, ANN.phone)
    scheduler.cancel(booking.reference, ANN.phone, "c")
    with pytest.raises(BookingNotFound):
        scheduler.get_booking(booking.reference, BOB.phone)

    assert booking.reference in caplog.text and slot.slot_id in caplog.text
    for secret in (ANN.name, ANN.phone, "Example", "5550100", BOB.phone):
        assert secret not in caplog.text
