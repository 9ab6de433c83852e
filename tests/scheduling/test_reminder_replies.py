"""Reminders on every backend: consent stored with the booking, replies read back.

The embedded scheduler on SQLite and PostgreSQL (and an older SQLite database
opened by this version), the FHIR adapter against the FHIR fake, the webhook
adapter against the contract's fake receiver.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Tuple, Union

import pytest
from fakes.webhook_server import FakeWebhookServer

from scheduling.base import BookingNotFound, Patient
from scheduling.fhir_backend import VISIT_TYPE_SYSTEM, FhirScheduler
from scheduling.sqlite_backend import SqliteScheduler
from scheduling.webhook_backend import WebhookScheduler
from tests.fakes.fhir_facade import FhirFacade
from tests.scheduling.test_sqlite_backend import make_config
from tests.staff.pgkit import store_url

CENTRAL = timezone(timedelta(hours=-5))
DAY = (datetime.now(CENTRAL) + timedelta(days=7)).replace(
    hour=9, minute=0, second=0, microsecond=0
)
ANN = Patient("Ann Example", "+18175550100")
SECRET = "s3cret-for-tests-only-0123456789"

AnyScheduler = Union[SqliteScheduler, FhirScheduler, WebhookScheduler]
# A scheduler and the visit type its slots are of.
Backend = Tuple[AnyScheduler, str]


@pytest.fixture
def webhook() -> Iterator[FakeWebhookServer]:
    with FakeWebhookServer(SECRET) as fake:
        fake.add_slot("slot-0", DAY)
        fake.add_slot("slot-1", DAY + timedelta(hours=1))
        yield fake


@pytest.fixture(params=["sqlite", "postgresql", "fhir", "webhook"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteScheduler(tmp_path / "scheduler.db", make_config()), "evaluation"
    if request.param == "postgresql":
        url = store_url(request.getfixturevalue("store_cluster"))
        return SqliteScheduler(url, make_config()), "evaluation"
    if request.param == "fhir":
        facade: FhirFacade = request.getfixturevalue("facade")
        schedule = request.getfixturevalue("schedule")
        starts = [DAY, DAY + timedelta(hours=1)]
        facade.seed_slots(schedule, starts, (VISIT_TYPE_SYSTEM, "evaluation"))
        return FhirScheduler(facade.base_url, timeout=2.0), "evaluation"
    server = request.getfixturevalue("webhook")
    return WebhookScheduler(server.base_url, SECRET, timeout=2.0), "new_patient"


def _book(backend: Backend, index: int, consent: bool) -> str:
    """Books the ``index``-th of the first two open times (an hour apart or more)."""
    scheduler, visit = backend
    slots = scheduler.find_slots(visit, DAY, DAY + timedelta(days=7), limit=8)
    slot = slots[index * 4] if isinstance(scheduler, SqliteScheduler) else slots[0]
    booking = scheduler.book(slot, ANN, f"key-{index}", reminder_consent=consent)
    assert booking.reminder_consent is consent
    return booking.reference


def test_consent_is_stored_and_read_back(backend: Backend) -> None:
    scheduler = backend[0]
    with_consent = _book(backend, 0, True)
    without = _book(backend, 1, False)
    assert scheduler.get_booking(with_consent, ANN.phone).reminder_consent
    assert not scheduler.get_booking(without, ANN.phone).reminder_consent


def test_confirm_and_reschedule_request(backend: Backend) -> None:
    scheduler = backend[0]
    first, second = _book(backend, 0, True), _book(backend, 1, True)
    confirmed = scheduler.confirm(first, ANN.phone)
    assert (confirmed.confirmed, confirmed.reschedule_requested) == (True, False)
    assert scheduler.confirm(first, ANN.phone) == confirmed  # twice: no change
    asked = scheduler.note_reschedule_request(second.lower(), ANN.phone)
    assert (asked.confirmed, asked.reschedule_requested) == (False, True)
    assert scheduler.get_booking(second, ANN.phone) == asked
    assert scheduler.get_booking(first, ANN.phone) == confirmed
    with pytest.raises(BookingNotFound):
        scheduler.confirm(first, "+18175550199")
    with pytest.raises(BookingNotFound):
        scheduler.note_reschedule_request("ZZZZZZ", ANN.phone)


def test_a_cancelled_booking_is_not_confirmed(backend: Backend) -> None:
    scheduler = backend[0]
    reference = _book(backend, 0, True)
    scheduler.cancel(reference, ANN.phone, "cancel-key")
    assert not scheduler.confirm(reference, ANN.phone).confirmed


def test_an_older_database_gains_the_reminder_table(tmp_path: Path) -> None:
    """A scheduler.db made before reminders: its bookings read as without consent."""
    path = tmp_path / "scheduler.db"
    reference = _book((SqliteScheduler(path, make_config()), "evaluation"), 0, False)
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE booking_reminders")
    reopened = SqliteScheduler(path, make_config())
    assert not reopened.get_booking(reference, ANN.phone).reminder_consent
    assert reopened.confirm(reference, ANN.phone).confirmed
