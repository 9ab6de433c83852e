"""The scheduler contract (scheduling/base.py): one request check for every backend.

Each backend runs against its real counterpart here: a SQLite file, the FHIR facade
and the webhook receiver (both fakes on loopback). The same invalid request gets the
same typed outcome from all three, before anything is booked; and each lists the
assistant's bookings of a time range alike (the reminder job and the staff's view).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from clinic_common.clinic_config import ReminderConfig
from scheduling.base import (
    BOOKED,
    CANCELLED,
    REFERENCE_ALPHABET,
    REFERENCE_LENGTH,
    Booking,
    InvalidRequest,
    Patient,
    Scheduler,
    SchedulerError,
    Slot,
    checked_idempotency_key,
    checked_patient,
    new_reference,
    normalize_reference,
    utc_now,
)
from scheduling.config import parse_scheduling_config
from scheduling.fhir_backend import VISIT_TYPE_SYSTEM, FhirScheduler
from scheduling.reminders import (
    ReminderSchedule,
    ReminderSettings,
    ReminderStore,
    reminder_settings,
    send_time,
)
from scheduling.sqlite_backend import SqliteScheduler
from scheduling.webhook_backend import WebhookScheduler
from staff.reminders import day_view
from tests.fakes.fhir_facade import FhirFacade
from tests.fakes.webhook_server import FakeWebhookServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CENTRAL = timezone(timedelta(hours=-5))
DAY = (datetime.now(CENTRAL) + timedelta(days=2)).replace(
    hour=0, minute=0, second=0, microsecond=0
)
PATIENT = Patient(name="Dana Testperson", phone="+18175550142")
SECRET = "s3cret-for-tests-only-0123456789"


# --- the checks themselves ------------------------------------------------------------


@pytest.mark.parametrize(
    "phone", ["+18175550142", " +18175550142 ", "+4930123456", "+123456789012345"]
)
def test_e164_phones_are_accepted_and_trimmed(phone: str) -> None:
    checked = checked_patient(Patient(" Dana ", phone))
    assert checked == Patient("Dana", phone.strip())


@pytest.mark.parametrize(
    "phone",
    [
        "",
        "8175550142",  # no country code
        "+1 817 555 0142",  # spaces: the caller normalises first
        "+1817",  # too short to be any number
        "+1234567890123456",  # 16 digits: longer than E.164 allows
        "+08175550142",  # country codes do not start with 0
    ],
)
def test_phones_that_are_not_e164_are_refused_without_quoting_them(
    phone: str,
) -> None:
    with pytest.raises(InvalidRequest) as error:
        checked_patient(Patient("Dana", phone))
    assert str(error.value) == (
        "the patient's phone must be in E.164 form, e.g. +18175550100"
    )


def test_a_patient_needs_a_name() -> None:
    with pytest.raises(InvalidRequest, match="^the patient's name is empty$"):
        checked_patient(Patient("  ", PATIENT.phone))


@pytest.mark.parametrize("key", ["k", "a" * 128, "c-WR43S2-abc|2026-12-08T19:00Z"])
def test_idempotency_keys_up_to_128_visible_characters(key: str) -> None:
    assert checked_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "a" * 129, "has space", "tab\there", "é", None])
def test_other_idempotency_keys_are_refused(key: object) -> None:
    with pytest.raises(InvalidRequest, match="1 to 128 visible ASCII"):
        checked_idempotency_key(key)


def test_invalid_request_is_a_scheduler_outcome_and_a_value_error() -> None:
    assert issubclass(InvalidRequest, SchedulerError)
    assert issubclass(InvalidRequest, ValueError)


def test_references_use_only_unmistakable_characters() -> None:
    assert not set("0O1IL") & set(REFERENCE_ALPHABET)
    for _ in range(200):
        reference = new_reference()
        assert len(reference) == REFERENCE_LENGTH
        assert set(reference) <= set(REFERENCE_ALPHABET)
    assert normalize_reference(" k7m-3qx ") == normalize_reference("K7M 3QX")
    assert normalize_reference("k7m-3qx") == "K7M3QX"


# --- every backend, the same outcomes -------------------------------------------------


CHICAGO = parse_scheduling_config(
    {
        "timezone": "America/Chicago",
        "slot_minutes": 30,
        "opening_hours": {
            day: ["08:00-17:00"]
            for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        },
        "visit_types": [{"key": "new_patient", "name": "New", "minutes": 30}],
        "providers": ["provider-1"],
        "booking_horizon_days": 30,
    },
    "test",
)


def sqlite_scheduler(tmp_path: Path) -> Tuple[Scheduler, Slot]:
    scheduler = SqliteScheduler(tmp_path / "scheduler.db", CHICAGO)
    slot = scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1), 1)[0]
    return scheduler, slot


@pytest.fixture(params=["sqlite", "fhir", "webhook"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scheduler]:
    """Each backend, with one open new-patient slot on ``DAY`` at 10:00."""
    if request.param == "sqlite":
        yield sqlite_scheduler(tmp_path)[0]
    elif request.param == "fhir":
        with FhirFacade() as facade:
            schedule = facade.seed_schedule("Practitioner/dr-valliant")
            facade.seed_slots(
                schedule,
                [DAY.replace(hour=10)],
                (VISIT_TYPE_SYSTEM, "new_patient"),
                minutes=30,
            )
            yield FhirScheduler(facade.base_url, timeout=2.0)
    else:
        with FakeWebhookServer(SECRET) as server:
            server.add_slot("slot-0", DAY.replace(hour=10))
            yield WebhookScheduler(
                server.base_url, SECRET, timeout=2.0, retries=0, backoff=0.001
            )


def open_slot(scheduler: Scheduler) -> Slot:
    return scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1), 1)[0]


INVALID_BOOKINGS = [
    (Patient("", PATIENT.phone), "key-1"),
    (Patient(PATIENT.name, "8175550142"), "key-1"),
    (Patient(PATIENT.name, "+1817"), "key-1"),  # FHIR used to take this
    (PATIENT, ""),
    (PATIENT, "has space"),
    (PATIENT, "k" * 129),  # SQLite and the webhook used to take this
]


@pytest.mark.parametrize(("patient", "key"), INVALID_BOOKINGS)
def test_every_backend_refuses_the_same_invalid_bookings(
    backend: Scheduler, patient: Patient, key: str
) -> None:
    slot = open_slot(backend)
    with pytest.raises(InvalidRequest):
        backend.book(slot, patient, key)
    assert open_slot(backend) == slot  # nothing was booked


def test_every_backend_takes_the_longest_key(backend: Scheduler) -> None:
    booking = backend.book(open_slot(backend), PATIENT, "k" * 128)
    assert booking.reference  # the webhook's receiver makes its own references
    assert backend.book(booking.slot, PATIENT, "k" * 128) == booking
    with pytest.raises(InvalidRequest):
        backend.cancel(booking.reference, PATIENT.phone, "")
    assert backend.get_booking(booking.reference, PATIENT.phone) == booking


# --- listing the assistant's bookings (issue 14) ------------------------------------

HOURS = (9, 10, 11)  # on DAY; pages of one booking, so that each listing pages


@pytest.fixture(params=["sqlite", "fhir", "webhook"])
def lister(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scheduler]:
    """Each backend with open slots at 9, 10 and 11 on ``DAY``, one booking a page."""
    starts = [DAY.replace(hour=hour) for hour in HOURS]
    if request.param == "sqlite":
        yield sqlite_scheduler(tmp_path)[0]
    elif request.param == "fhir":
        with FhirFacade(page_size=1) as facade:
            schedule = facade.seed_schedule("Practitioner/dr-valliant")
            facade.seed_slots(schedule, starts, (VISIT_TYPE_SYSTEM, "new_patient"))
            yield FhirScheduler(facade.base_url, timeout=2.0)
    else:
        with FakeWebhookServer(SECRET, page_size=1) as server:
            for index, start in enumerate(starts):
                server.add_slot(f"slot-{index}", start)
            yield WebhookScheduler(server.base_url, SECRET, timeout=2.0, retries=0)


@pytest.fixture
def project_reminder_settings() -> Iterator[None]:
    """The reminder settings of the project's clinic.yml, read afresh and forgotten."""
    reminder_settings.cache_clear()
    yield
    reminder_settings.cache_clear()


def book_at(scheduler: Scheduler, hour: int, consent: bool = True) -> Booking:
    start = DAY.replace(hour=hour)
    [slot] = scheduler.find_slots("new_patient", start, start + timedelta(minutes=1))
    return scheduler.book(slot, PATIENT, f"key-{hour}", reminder_consent=consent)


def references(bookings: List[Booking]) -> List[str]:
    return [booking.reference for booking in bookings]


def test_every_backend_lists_active_bookings_overlapping_a_range(
    lister: Scheduler,
) -> None:
    nine, ten, eleven = (book_at(lister, hour) for hour in HOURS)
    lister.cancel(ten.reference, PATIENT.phone, "cancel-10")
    at = DAY.replace

    listed = lister.active_bookings_between(at(hour=9), at(hour=11))
    assert references(listed) == [nine.reference]  # cancelled out, 11:00 is the end
    assert listed[0] == lister.get_booking(nine.reference, PATIENT.phone)
    assert listed[0].reminder_consent
    everything = lister.active_bookings_between(at(hour=8), at(hour=12))
    assert references(everything) == [nine.reference, eleven.reference]  # paged
    # Overlap: a 9:00-9:30 visit is in a range from 9:29, not in one from 9:30.
    assert references(
        lister.active_bookings_between(at(hour=9, minute=29), at(hour=10))
    )
    assert not lister.active_bookings_between(at(hour=9, minute=30), at(hour=11))
    assert not lister.active_bookings_between(at(hour=8), at(hour=12), "nobody")


def test_every_backend_lists_a_days_bookings_cancelled_too(lister: Scheduler) -> None:
    nine, ten, eleven = (book_at(lister, hour, consent=False) for hour in HOURS)
    lister.cancel(ten.reference, PATIENT.phone, "cancel-10")

    day = lister.bookings_between(DAY, DAY + timedelta(days=1))
    assert references(day) == [nine.reference, ten.reference, eleven.reference]
    assert [booking.status for booking in day] == [BOOKED, CANCELLED, BOOKED]
    # Starting in [start, end): 9:00 is in from 9:00, 11:00 is not before 11:00.
    edges = lister.bookings_between(DAY.replace(hour=9), DAY.replace(hour=11))
    assert references(edges) == [nine.reference, ten.reference]
    assert lister.bookings_between(DAY.replace(hour=12), DAY + timedelta(days=1)) == []


def test_listing_refuses_naive_datetimes(lister: Scheduler) -> None:
    naive = datetime(2026, 3, 2, 9)
    with pytest.raises(ValueError):
        lister.active_bookings_between(naive, naive + timedelta(hours=1))
    with pytest.raises(ValueError):
        lister.bookings_between(naive, naive + timedelta(hours=1))


def test_the_reminder_job_reminds_once_on_every_backend(
    lister: Scheduler, tmp_path: Path
) -> None:
    wanted = book_at(lister, 10)
    book_at(lister, 11, consent=False)
    settings = ReminderSettings(ReminderConfig(), CHICAGO, "Test Clinic")
    due = send_time(
        wanted.slot.start, timedelta(hours=24), ReminderConfig(), CHICAGO.tz
    )
    sent: List[str] = []
    schedule = ReminderSchedule(
        bookings=lister,
        store=ReminderStore(tmp_path / "reminders.db"),
        send=lambda booking: not sent.append(booking.reference),
        reachable=lambda phone: True,
        settings=settings,
        clock=lambda: due,
    )

    assert schedule.run_once().sent == 1
    assert schedule.run_once().sent == 0
    assert sent == [wanted.reference]


@pytest.mark.usefixtures("project_reminder_settings")
def test_the_staff_day_view_on_every_backend(lister: Scheduler, tmp_path: Path) -> None:
    book_at(lister, 9)
    book_at(lister, 10, consent=False)
    cancelled = book_at(lister, 11)
    lister.cancel(cancelled.reference, PATIENT.phone, "cancel-11")

    title, entries = day_view(
        DAY.date(), utc_now, lister, ReminderStore(tmp_path / "reminders.db")
    )

    assert title.startswith(f"{DAY:%A %Y-%m-%d} (America/Chicago")
    assert [(entry.patient, entry.state) for entry in entries] == [
        ("Dana T.", "not due"),
        ("Dana T.", "not allowed"),
        ("Dana T.", "cancelled"),
    ]


# --- what the package may import ------------------------------------------------------


def test_scheduling_imports_neither_actions_nor_rasa() -> None:
    code = (
        "import json, sys\n"
        "import scheduling, scheduling.base, scheduling.callbacks, scheduling.config\n"
        "import scheduling.fhir_backend, scheduling.sqlite_backend\n"
        "import scheduling.timeparse, scheduling.webhook_backend\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert "scheduling.webhook_backend" in loaded  # the check itself ran
    forbidden = [
        name for name in loaded if name.split(".")[0] in {"actions", "rasa", "rasa_sdk"}
    ]
    assert forbidden == []
