"""WebhookScheduler against the contract's reference receiver on loopback HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests
from fakes.webhook_server import FakeWebhookServer

from clinic_common.settings import load
from scheduling import get_scheduler
from scheduling.base import (
    BOOKED,
    CANCELLED,
    BackendUnavailable,
    BookingNotFound,
    ListingUnsupported,
    Patient,
    Scheduler,
    Slot,
    SlotUnavailable,
    utc_now,
)
from scheduling.webhook_backend import WebhookConfigError, WebhookScheduler
from staff import reminders

SECRET = "s3cret-for-tests-only-0123456789"
PATIENT = Patient(name="Dolores Haze-Testperson", phone="+18175550123")
CENTRAL = timezone(timedelta(hours=-5))
# Tomorrow at 09:00 Fort Worth time, so the slots are always in the future.
DAY = (datetime.now(CENTRAL) + timedelta(days=1)).replace(
    hour=9, minute=0, second=0, microsecond=0
)


@pytest.fixture
def server() -> Iterator[FakeWebhookServer]:
    with FakeWebhookServer(SECRET) as fake:
        for index in range(4):
            fake.add_slot(f"slot-{index}", DAY + timedelta(minutes=30 * index))
        fake.add_slot("follow-1", DAY, visit_type="follow_up", provider="Dr. Valliant")
        yield fake


def make_scheduler(server: FakeWebhookServer, **options: Any) -> WebhookScheduler:
    settings: Dict[str, Any] = {"timeout": 2.0, "retries": 2, "backoff": 0.001}
    settings.update(options)
    return WebhookScheduler(server.base_url, SECRET, **settings)


@pytest.fixture
def scheduler(server: FakeWebhookServer) -> WebhookScheduler:
    return make_scheduler(server)


def slot(scheduler: WebhookScheduler, index: int = 0) -> Slot:
    found = scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1), 10)
    return [item for item in found if item.slot_id == f"slot-{index}"][0]


def expected_signature(timestamp: str, body: bytes, secret: str = SECRET) -> str:
    signed = timestamp.encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def post_raw(
    server: FakeWebhookServer, operation: str, body: bytes, headers: Dict[str, str]
) -> requests.Response:
    return requests.post(f"{server.base_url}/{operation}", data=body, headers=headers)


# Signatures.


def test_implements_the_scheduler_protocol(scheduler: WebhookScheduler) -> None:
    assert isinstance(scheduler, Scheduler)
    assert SECRET not in repr(scheduler)


def test_every_request_is_signed_and_accepted(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    booking = scheduler.book(slot(scheduler), PATIENT, "key-sign")
    scheduler.get_booking(booking.reference, PATIENT.phone)

    assert [request.status for request in server.requests] == [200, 201, 200]
    for request in server.requests:
        timestamp = request.headers["x-clinicbot-timestamp"]
        assert abs(int(timestamp) - time.time()) < 60
        assert request.headers["x-clinicbot-signature"] == expected_signature(
            timestamp, request.body
        )
        assert request.headers["content-type"] == "application/json"


def test_receiver_refuses_a_body_that_does_not_match_its_signature(
    server: FakeWebhookServer,
) -> None:
    """The fake's check is real, so the acceptance above means something."""
    timestamp = str(int(time.time()))
    signed_body = b'{"hold_id":"hold-1"}'
    headers = {
        "Content-Type": "application/json",
        "X-Clinicbot-Timestamp": timestamp,
        "X-Clinicbot-Signature": expected_signature(timestamp, signed_body),
    }
    assert post_raw(server, "holds/release", signed_body, headers).status_code == 200
    tampered = post_raw(server, "holds/release", b'{"hold_id":"hold-2"}', headers)
    assert tampered.status_code == 401
    assert tampered.json()["error"]["code"] == "bad_signature"


def test_signed_bytes_are_the_bytes_received(server: FakeWebhookServer) -> None:
    sent: List[requests.PreparedRequest] = []

    class RecordingSession(requests.Session):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> Any:
            sent.append(request)
            return super().send(request, **kwargs)

    scheduler = make_scheduler(server, session=RecordingSession())
    scheduler.book(slot(scheduler), PATIENT, "key-bytes")

    received = server.requests
    assert len(sent) == len(received) == 2
    for prepared, request in zip(sent, received, strict=True):
        assert prepared.body == request.body
        timestamp = prepared.headers["X-Clinicbot-Timestamp"]
        assert prepared.headers["X-Clinicbot-Signature"] == expected_signature(
            timestamp, request.body
        )
    assert received[1].json()["patient"] == {
        "name": PATIENT.name,
        "phone": PATIENT.phone,
    }


def test_wrong_secret_is_backend_unavailable_naming_the_secret_setting(
    server: FakeWebhookServer,
) -> None:
    wrong = "another-secret-of-enough-length"
    scheduler = WebhookScheduler(server.base_url, wrong, backoff=0.001)

    with pytest.raises(BackendUnavailable) as raised:
        scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))

    assert "SCHEDULER_WEBHOOK_SECRET is wrong" in str(raised.value)
    assert wrong not in str(raised.value) and SECRET not in str(raised.value)
    assert [request.status for request in server.requests] == [401]  # not retried


@pytest.mark.parametrize(
    ("skew", "accepted"), [(-301, False), (301, False), (-200, True), (200, True)]
)
def test_timestamps_outside_five_minutes_are_refused(
    server: FakeWebhookServer, skew: int, accepted: bool
) -> None:
    scheduler = make_scheduler(
        server, clock=lambda: utc_now() + timedelta(seconds=skew)
    )
    if accepted:
        scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))
    else:
        with pytest.raises(BackendUnavailable, match="401"):
            scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))
    assert [request.status for request in server.requests] == [200 if accepted else 401]


# Happy paths.


def test_search_returns_open_slots_soonest_first_up_to_limit(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    found = scheduler.find_slots("new_patient", DAY, DAY + timedelta(hours=2), 3)

    assert [item.slot_id for item in found] == ["slot-0", "slot-1", "slot-2"]
    assert found[0] == Slot("slot-0", DAY, DAY + timedelta(minutes=30), "new_patient")
    follow_up = scheduler.find_slots("follow_up", DAY, DAY + timedelta(hours=2))
    assert [(item.slot_id, item.provider) for item in follow_up] == [
        ("follow-1", "Dr. Valliant")
    ]
    request = server.requests_to("slots/search")[0].json()
    assert request == {
        "visit_type": "new_patient",
        "earliest": DAY.isoformat(),
        "latest": (DAY + timedelta(hours=2)).isoformat(),
        "limit": 3,
    }


def test_hold_hides_the_slot_until_released(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    first = slot(scheduler)
    hold = scheduler.hold(first, ttl=timedelta(minutes=5))

    assert hold.slot == first
    assert timedelta(minutes=4) < hold.expires_at - datetime.now(timezone.utc)
    assert first not in scheduler.find_slots(
        "new_patient", DAY, DAY + timedelta(days=1)
    )
    with pytest.raises(SlotUnavailable):
        scheduler.hold(first)
    with pytest.raises(SlotUnavailable):
        scheduler.book(first, PATIENT, "key-held-by-other")

    scheduler.release(hold.hold_id)
    scheduler.release(hold.hold_id)  # unknown now: still no error
    assert first in scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))
    assert server.requests_to("holds")[0].json() == {
        "slot_id": "slot-0",
        "ttl_seconds": 300,
    }


def test_book_with_own_hold_then_get_then_cancel(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    hold = scheduler.hold(slot(scheduler))
    booking = scheduler.book(hold.slot, PATIENT, "key-book", hold_id=hold.hold_id)

    assert (booking.slot, booking.patient, booking.status) == (
        hold.slot,
        PATIENT,
        BOOKED,
    )
    assert scheduler.get_booking(booking.reference, PATIENT.phone) == booking

    cancelled = scheduler.cancel(booking.reference, PATIENT.phone, "key-cancel")
    assert cancelled.status == CANCELLED
    again = scheduler.cancel(booking.reference, PATIENT.phone, "key-cancel-2")
    assert again == cancelled
    assert hold.slot in scheduler.find_slots(
        "new_patient", DAY, DAY + timedelta(days=1)
    )


def test_idempotency_keys_are_sent_only_where_the_contract_says(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    hold = scheduler.hold(slot(scheduler))
    scheduler.release(hold.hold_id)
    booking = scheduler.book(hold.slot, PATIENT, "key-b")
    scheduler.get_booking(booking.reference, PATIENT.phone)
    scheduler.cancel(booking.reference, PATIENT.phone, "key-c")

    keys = {
        request.operation: request.headers.get("idempotency-key")
        for request in server.requests
    }
    assert keys["slots/search"] is None
    assert keys["holds/release"] is None
    assert keys["bookings/get"] is None
    assert keys["holds"]
    assert (keys["bookings"], keys["bookings/cancel"]) == ("key-b", "key-c")


def test_replayed_booking_key_returns_the_same_booking_once(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    chosen = slot(scheduler)
    first = scheduler.book(chosen, PATIENT, "key-replay")
    second = scheduler.book(chosen, PATIENT, "key-replay")

    assert second == first
    assert len(server.bookings) == 1
    assert [request.status for request in server.requests_to("bookings")] == [201] * 2


def test_booking_key_reused_for_another_request_is_a_value_error(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    """As the SQLite backend: reusing a key for something else is the caller's bug."""
    scheduler.book(slot(scheduler), PATIENT, "key-reused")

    with pytest.raises(ValueError, match="different request"):
        scheduler.book(slot(scheduler, 1), PATIENT, "key-reused")
    assert len(server.bookings) == 1


def test_slot_booked_by_someone_else_is_slot_unavailable(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    taken = slot(scheduler)
    scheduler.book(taken, PATIENT, "key-one")

    with pytest.raises(SlotUnavailable):
        scheduler.book(taken, Patient("Someone Else", "+18175550999"), "key-two")
    assert [request.status for request in server.requests_to("bookings")] == [201, 409]


@pytest.mark.parametrize("wrong", ["reference", "phone"])
def test_unknown_booking_or_wrong_phone_is_booking_not_found(
    scheduler: WebhookScheduler, wrong: str
) -> None:
    booking = scheduler.book(slot(scheduler), PATIENT, "key-nf")
    reference = "VLM-NOPE" if wrong == "reference" else booking.reference
    phone = "+18175550000" if wrong == "phone" else PATIENT.phone

    with pytest.raises(BookingNotFound):
        scheduler.get_booking(reference, phone)
    with pytest.raises(BookingNotFound):
        scheduler.cancel(reference, phone, "key-nf-cancel")
    assert scheduler.get_booking(booking.reference, PATIENT.phone).status == BOOKED


def test_reference_is_matched_as_patients_type_it(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    booking = scheduler.book(slot(scheduler), PATIENT, "key-typed")
    typed = booking.reference.lower()[:3] + "-" + booking.reference.lower()[3:]

    found = scheduler.get_booking(typed, f" {PATIENT.phone} ")

    assert found == booking
    assert server.requests_to("bookings/get")[0].json()["phone"] == PATIENT.phone


def test_bare_404_from_a_wrong_url_is_not_booking_not_found(
    server: FakeWebhookServer,
) -> None:
    base = server.base_url.replace("/clinicbot/v1", "/wrong")
    scheduler = WebhookScheduler(base, SECRET, backoff=0.001)

    with pytest.raises(BackendUnavailable, match="SCHEDULER_WEBHOOK_URL"):
        scheduler.get_booking("VLM-123456", PATIENT.phone)


# Retries.


@pytest.mark.parametrize("status", [503, 500, 429])
def test_retry_safe_call_survives_two_transient_failures(
    server: FakeWebhookServer, scheduler: WebhookScheduler, status: int
) -> None:
    server.fail_next(2, status)

    found = scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))

    assert len(found) == 4
    assert [request.status for request in server.requests] == [status, status, 200]


def test_book_is_retried_with_the_same_key_and_bytes_and_books_once(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    """Documented: bookings are retried because the receiver must honour the key."""
    chosen = slot(scheduler)
    server.fail_next(2)

    booking = scheduler.book(chosen, PATIENT, "key-retry")

    attempts = server.requests_to("bookings")
    assert [request.status for request in attempts] == [503, 503, 201]
    assert {request.headers["idempotency-key"] for request in attempts} == {"key-retry"}
    assert len({request.body for request in attempts}) == 1
    assert [item.reference for item in server.bookings] == [booking.reference]


def test_gives_up_after_the_configured_retries(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    server.fail_next(3)

    with pytest.raises(BackendUnavailable, match="after 3 attempt"):
        scheduler.get_booking("VLM-123456", PATIENT.phone)
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (400, b'{"error":{"code":"bad_request","message":"x"}}', BackendUnavailable),
        (409, b'{"error":{"code":"slot_unavailable","message":"x"}}', SlotUnavailable),
        (404, b'{"error":{"code":"booking_not_found","message":"x"}}', BookingNotFound),
        (422, b"{}", BackendUnavailable),
        (307, b"{}", BackendUnavailable),
    ],
)
def test_refusals_are_not_retried(
    server: FakeWebhookServer,
    scheduler: WebhookScheduler,
    status: int,
    body: bytes,
    outcome: type,
) -> None:
    chosen = slot(scheduler)
    server.respond_next(status, body)

    with pytest.raises(outcome):
        scheduler.book(chosen, PATIENT, "key-refused")
    assert len(server.requests_to("bookings")) == 1
    assert server.bookings == []


def test_timeout_is_backend_unavailable_after_retries(
    server: FakeWebhookServer,
) -> None:
    scheduler = make_scheduler(server, timeout=0.2, retries=1)
    server.delay_next(1.0, count=2)
    started = time.monotonic()

    with pytest.raises(BackendUnavailable, match="timed out"):
        scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))

    assert time.monotonic() - started < 1.0
    assert len(server.requests) == 2


def test_booking_that_timed_out_is_retried_into_the_same_single_booking(
    server: FakeWebhookServer,
) -> None:
    """The first attempt is still processed late: the key keeps it to one booking."""
    scheduler = make_scheduler(server, timeout=0.3, retries=2)
    chosen = slot(scheduler)
    server.delay_next(0.6)

    booking = scheduler.book(chosen, PATIENT, "key-slow")

    deadline = time.monotonic() + 5  # let the late first attempt finish
    while None in [r.status for r in server.requests] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.requests_to("bookings")) == 2
    assert [item.reference for item in server.bookings] == [booking.reference]
    assert all(request.status == 201 for request in server.requests_to("bookings"))


def test_connection_refused_is_backend_unavailable(server: FakeWebhookServer) -> None:
    scheduler = make_scheduler(server)
    server.stop()

    with pytest.raises(BackendUnavailable, match="connection failed"):
        scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))


# Malformed answers.

GOOD_SLOT = {
    "slot_id": "s",
    "start": "2030-01-01T09:00:00-06:00",
    "end": "2030-01-01T09:30:00-06:00",
    "visit_type": "new_patient",
}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"slots": {}}',
        json.dumps({"slots": [{"slot_id": "s"}]}).encode(),
        json.dumps({"slots": [{**GOOD_SLOT, "start": "2030-01-01T09:00:00"}]}).encode(),
        json.dumps({"slots": [{**GOOD_SLOT, "end": GOOD_SLOT["start"]}]}).encode(),
        json.dumps({"slots": [{**GOOD_SLOT, "provider": 7}]}).encode(),
        json.dumps({"slots": [{**GOOD_SLOT, "slot_id": ""}]}).encode(),
    ],
)
def test_malformed_search_answer_is_backend_unavailable(
    server: FakeWebhookServer, scheduler: WebhookScheduler, body: bytes
) -> None:
    server.respond_next(200, body)

    with pytest.raises(BackendUnavailable, match="slots/search"):
        scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))
    assert len(server.requests) == 1  # a receiver's bug is not retried


@pytest.mark.parametrize(
    "booking",
    [
        {"reference": "R", "slot": GOOD_SLOT, "status": "booked"},
        {"reference": "R", "slot": GOOD_SLOT, "patient": {}, "status": "booked"},
        {
            "reference": "R",
            "slot": GOOD_SLOT,
            "patient": {"name": "N", "phone": "+1"},
            "status": "pending",
        },
    ],
)
def test_malformed_booking_answer_is_backend_unavailable(
    server: FakeWebhookServer, scheduler: WebhookScheduler, booking: Dict[str, Any]
) -> None:
    chosen = slot(scheduler)
    server.respond_next(201, json.dumps(booking).encode())

    with pytest.raises(BackendUnavailable, match="malformed"):
        scheduler.book(chosen, PATIENT, "key-malformed")


def test_answer_about_another_patients_booking_is_refused(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    other = {
        "reference": "VLM-OTHER",
        "slot": GOOD_SLOT,
        "patient": {"name": "Other", "phone": "+18175550777"},
        "status": "booked",
    }
    server.respond_next(200, json.dumps(other).encode())

    with pytest.raises(BackendUnavailable, match="another booking"):
        scheduler.get_booking("VLM-MINE", PATIENT.phone)


def test_rfc3339_variants_are_read(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    utc_slot = {
        **GOOD_SLOT,
        "start": "2030-01-01T15:00:00.5Z",
        "end": "2030-01-01T15:30:00.123456789z",
    }
    server.respond_next(200, json.dumps({"slots": [utc_slot]}).encode())

    (found,) = scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1))

    assert found.start == datetime(2030, 1, 1, 15, 0, 0, 500000, timezone.utc)
    assert found.end == datetime(2030, 1, 1, 15, 30, 0, 123456, timezone.utc)
    assert found.provider == ""


def test_search_answer_is_sorted_and_cut_to_the_limit_here_too(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    starts = ["2030-01-01T11:00:00-06:00", "2030-01-01T09:00:00-06:00"]
    starts.append("2030-01-01T10:00:00-06:00")
    slots = [
        {
            **GOOD_SLOT,
            "slot_id": f"s{index}",
            "start": start,
            "end": "2030-01-02T00:00:00Z",
        }
        for index, start in enumerate(starts)
    ]
    server.respond_next(200, json.dumps({"slots": slots}).encode())

    found = scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1), limit=2)

    assert [item.slot_id for item in found] == ["s1", "s2"]


# Concurrency.


def test_fifty_concurrent_bookings_of_one_slot_make_exactly_one(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    chosen = slot(scheduler)
    start = threading.Barrier(50)

    def attempt(index: int) -> str:
        start.wait()
        patient = Patient(f"Patient {index}", f"+1817555{index:04d}")
        try:
            return scheduler.book(chosen, patient, f"key-race-{index}").reference
        except SlotUnavailable:
            return ""

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(attempt, range(50)))

    winners = [reference for reference in outcomes if reference]
    assert len(winners) == 1
    assert [booking.reference for booking in server.bookings] == winners
    statuses = sorted(request.status for request in server.requests_to("bookings"))
    assert statuses == [201] + [409] * 49


# Privacy of logs.


def test_logs_hold_neither_patient_data_nor_the_secret(
    server: FakeWebhookServer,
    scheduler: WebhookScheduler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    chosen = slot(scheduler)
    server.fail_next(1)
    booking = scheduler.book(chosen, PATIENT, "key-logs")
    with pytest.raises(BookingNotFound):
        scheduler.get_booking(booking.reference, "+18175550000")

    assert "bookings" in caplog.text  # the retry was logged at all
    for private in (PATIENT.name, PATIENT.phone, "+18175550000", SECRET):
        assert private not in caplog.text


# Settings and arguments.

GOOD_ENV = {
    "SCHEDULER_WEBHOOK_URL": "https://scheduler.example.org/clinicbot/v1/",
    "SCHEDULER_WEBHOOK_SECRET": SECRET,
}


def test_from_settings_reads_the_settings() -> None:
    scheduler = WebhookScheduler.from_settings(
        load({**GOOD_ENV, "SCHEDULER_TIMEOUT": "2.5"})
    )

    assert repr(scheduler) == (
        "WebhookScheduler('https://scheduler.example.org/clinicbot/v1')"
    )
    assert scheduler._timeout == 2.5
    assert WebhookScheduler.from_settings(load(GOOD_ENV))._timeout == 5.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"SCHEDULER_WEBHOOK_URL": ""}, "SCHEDULER_WEBHOOK_URL is not set"),
        ({"SCHEDULER_WEBHOOK_SECRET": " "}, "SCHEDULER_WEBHOOK_SECRET is not set"),
        ({"SCHEDULER_WEBHOOK_SECRET": "short-secret"}, "too short"),
        ({"SCHEDULER_WEBHOOK_URL": "http://scheduler.example.org"}, "https"),
        ({"SCHEDULER_WEBHOOK_URL": "ftp://scheduler.example.org"}, "http"),
    ],
)
def test_from_settings_refuses_missing_or_unsafe_settings(
    changes: Dict[str, str], message: str
) -> None:
    with pytest.raises(WebhookConfigError, match=message) as raised:
        WebhookScheduler.from_settings(load({**GOOD_ENV, **changes}))
    assert "short-secret" not in str(raised.value)


def test_from_settings_names_a_variable_that_is_absent() -> None:
    url = {"SCHEDULER_WEBHOOK_URL": GOOD_ENV["SCHEDULER_WEBHOOK_URL"]}
    with pytest.raises(WebhookConfigError, match="SCHEDULER_WEBHOOK_SECRET"):
        WebhookScheduler.from_settings(load(url))


def test_naive_datetimes_are_refused_before_any_request(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    naive = datetime(2030, 1, 1, 9, 0)

    with pytest.raises(ValueError, match="time-zone aware"):
        scheduler.find_slots("new_patient", naive, DAY)
    with pytest.raises(ValueError, match="time-zone aware"):
        scheduler.find_slots("new_patient", DAY, naive)
    assert server.requests == []


def test_empty_search_window_or_limit_asks_nothing(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    assert scheduler.find_slots("new_patient", DAY, DAY + timedelta(days=1), 0) == []
    assert scheduler.find_slots("new_patient", DAY, DAY) == []
    assert server.requests == []


@pytest.mark.parametrize(
    "patient", [Patient(" ", "+18175550123"), Patient("Ann", "817-555-0123")]
)
def test_unusable_patient_is_refused_before_any_request(
    server: FakeWebhookServer, scheduler: WebhookScheduler, patient: Patient
) -> None:
    chosen = slot(scheduler)

    with pytest.raises(ValueError, match="patient") as raised:
        scheduler.book(chosen, patient, "key-patient")
    assert "817-555-0123" not in str(raised.value)
    assert server.requests_to("bookings") == []


@pytest.mark.parametrize("key", ["", "has space", "line\nbreak", "x" * 256])
def test_unusable_idempotency_keys_are_refused(
    server: FakeWebhookServer, scheduler: WebhookScheduler, key: str
) -> None:
    chosen = slot(scheduler)

    with pytest.raises(ValueError, match="idempotency_key"):
        scheduler.book(chosen, PATIENT, key)
    assert server.requests_to("bookings") == []


# Listing bookings (bookings/list, for reminders; the contract test lists on every
# backend).


def test_listing_pages_with_the_receivers_cursor_and_the_same_range(
    server: FakeWebhookServer, scheduler: WebhookScheduler
) -> None:
    server.page_size = 2
    booked = [scheduler.book(slot(scheduler, i), PATIENT, f"k{i}") for i in range(4)]
    scheduler.cancel(booked[1].reference, PATIENT.phone, "c1")

    listed = scheduler.bookings_between(DAY, DAY + timedelta(hours=2))

    assert [b.reference for b in listed] == [b.reference for b in booked]
    assert [b.status for b in listed] == [BOOKED, CANCELLED, BOOKED, BOOKED]
    bodies = [request.json() for request in server.requests_to("bookings/list")]
    assert [body.get("cursor") for body in bodies] == [None, "2"]
    assert {(b["from"], b["to"], b["include_cancelled"]) for b in bodies} == {
        (DAY.isoformat(), (DAY + timedelta(hours=2)).isoformat(), True)
    }


def test_a_receiver_without_bookings_list_makes_reminders_unavailable() -> None:
    with FakeWebhookServer(SECRET, lists_bookings=False) as server:
        scheduler = make_scheduler(server)
        with pytest.raises(ListingUnsupported, match="cannot list bookings"):
            scheduler.active_bookings_between(DAY, DAY + timedelta(days=1))
        assert issubclass(ListingUnsupported, BackendUnavailable)
        assert len(server.requests_to("bookings/list")) == 1  # an answer: no retry


@pytest.mark.parametrize(
    "answer",
    [
        {"bookings": "none"},
        {"bookings": [], "next_cursor": ""},
        {"bookings": [], "next_cursor": 2},
    ],
)
def test_malformed_list_answer_is_backend_unavailable(
    server: FakeWebhookServer, scheduler: WebhookScheduler, answer: Dict[str, Any]
) -> None:
    server.respond_next(200, json.dumps(answer).encode())
    with pytest.raises(BackendUnavailable, match="malformed"):
        scheduler.bookings_between(DAY, DAY + timedelta(days=1))


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_listed_booking_not_asked_for_is_refused(
    server: FakeWebhookServer, scheduler: WebhookScheduler, cancelled: bool
) -> None:
    booking = scheduler.book(slot(scheduler, 3), PATIENT, "k3")  # at 10:30
    answer = {
        "bookings": [
            {
                "reference": booking.reference,
                "status": CANCELLED if cancelled else BOOKED,
                "slot": {
                    "slot_id": booking.slot.slot_id,
                    "start": booking.slot.start.isoformat(),
                    "end": booking.slot.end.isoformat(),
                    "visit_type": booking.slot.visit_type,
                },
                "patient": {"name": PATIENT.name, "phone": PATIENT.phone},
            }
        ]
    }
    server.respond_next(200, json.dumps(answer).encode())
    # Cancelled when only active ones were asked for; or starting at the range's end.
    end = DAY + timedelta(days=1) if cancelled else booking.slot.start
    with pytest.raises(BackendUnavailable, match="not asked for"):
        scheduler.active_bookings_between(DAY, end)


class _Stop(Exception):
    """Ends the reminder job's endless loop in a test."""


def test_the_reminder_job_says_once_that_the_receiver_cannot_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    passes: List[float] = []

    def sleep(seconds: float) -> None:
        passes.append(seconds)
        if len(passes) == 3:
            raise _Stop

    with FakeWebhookServer(SECRET, lists_bookings=False) as server:
        for name, value in {
            "SCHEDULER_BACKEND": "webhook",
            "SCHEDULER_WEBHOOK_URL": server.base_url,
            "SCHEDULER_WEBHOOK_SECRET": SECRET,
            "STATE_DIR": str(tmp_path),
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "token-for-tests",
            "TWILIO_FROM_NUMBER": "+18175550000",
            "TWILIO_MESSAGING_SERVICE_SID": "",
            "TWILIO_WEBHOOK_URL": "https://clinic.example/webhooks/twilio/webhook",
            "TWILIO_API_BASE": "http://127.0.0.1:9",  # never reached: nothing is due
        }.items():
            monkeypatch.setenv(name, value)
        for name in ("STORE_DATABASE_URL", "SCHEDULER_DB", "CHANNEL_DB"):
            monkeypatch.delenv(name, raising=False)
        get_scheduler.cache_clear()
        try:
            with caplog.at_level(logging.WARNING), pytest.raises(_Stop):
                reminders.run_forever(60.0, sleep)
        finally:
            get_scheduler.cache_clear()
        asked = len(server.requests_to("bookings/list"))

    said = [r for r in caplog.records if "No reminders will be sent" in r.getMessage()]
    assert len(said) == 1 and "cannot list bookings" in said[0].getMessage()
    assert (passes, asked) == ([60.0] * 3, 3)  # it goes on asking, quietly
