"""The FHIR scheduler backend against the FHIR R4 facade over HTTP on loopback.

Nothing of the backend is mocked: every call goes through ``requests`` to a real
server thread that implements the FHIR R4 behaviour the backend relies on.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Union

import pytest

from clinic_common.settings import load
from scheduling.base import (
    BOOKED,
    CANCELLED,
    REFERENCE_ALPHABET,
    BackendUnavailable,
    Booking,
    BookingNotFound,
    Patient,
    Scheduler,
    Slot,
    SlotUnavailable,
)
from scheduling.fhir_backend import (
    BOOKING_REFERENCE_SYSTEM,
    IDEMPOTENCY_KEY_SYSTEM,
    VISIT_TYPE_SYSTEM,
    FhirScheduler,
)
from tests.fakes.fhir_facade import Fault, FhirFacade

CENTRAL = timezone(timedelta(hours=-5))
DAY = (datetime.now(CENTRAL) + timedelta(days=7)).replace(
    hour=0, minute=0, second=0, microsecond=0
)
NEW = "new_patient"
FOLLOW_UP = "follow_up"
PATIENT = Patient(name="Dana Testperson", phone="+18175550142")


def at(hour: int, minute: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute)


@pytest.fixture
def new_slots(facade: FhirFacade, schedule: str) -> List[str]:
    """New-patient slots at 09:00, 10:00, 11:00 and 12:00 Central."""
    starts = [at(h) for h in (9, 10, 11, 12)]
    return facade.seed_slots(schedule, starts, (VISIT_TYPE_SYSTEM, NEW), minutes=60)


@pytest.fixture
def follow_up_slots(facade: FhirFacade, schedule: str) -> List[str]:
    """Follow-up slots at 09:30 and 10:30."""
    starts = [at(9, 30), at(10, 30)]
    return facade.seed_slots(schedule, starts, (VISIT_TYPE_SYSTEM, FOLLOW_UP))


@pytest.fixture
def scheduler(facade: FhirFacade) -> FhirScheduler:
    return FhirScheduler(facade.base_url, timeout=2.0)


def first_slot(scheduler: FhirScheduler) -> Slot:
    return scheduler.find_slots(NEW, at(0), at(23), limit=1)[0]


def stored(facade: FhirFacade, resource_type: str, resource_id: str) -> Dict[str, Any]:
    resource = facade.read_resource(resource_type, resource_id)
    assert resource is not None
    return resource


def take_slot_elsewhere(facade: FhirFacade, slot_id: str) -> None:
    """Another system (the front desk) books the slot at the FHIR server."""
    facade.put_resource({**stored(facade, "Slot", slot_id), "status": "busy"})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- configuration ------------------------------------------------------------------


def test_it_is_a_scheduler(scheduler: FhirScheduler) -> None:
    assert isinstance(scheduler, Scheduler)


def test_from_settings_needs_the_base_url() -> None:
    with pytest.raises(ValueError, match="FHIR_BASE_URL"):
        FhirScheduler.from_settings(load({"FHIR_AUTH_TOKEN": "t"}))


def test_from_settings_reads_every_setting(facade: FhirFacade) -> None:
    facade.required_token = "s3cret"
    other = facade.seed_schedule("Practitioner/other")
    mine = facade.seed_schedule("Practitioner/mine")
    facade.seed_slots(other, [at(9)], ("http://snomed.info/sct", "185389009"))
    [wanted] = facade.seed_slots(
        mine, [at(10)], ("http://snomed.info/sct", "185389009")
    )

    scheduler = FhirScheduler.from_settings(
        load(
            {
                "FHIR_BASE_URL": facade.base_url + "/",
                "FHIR_AUTH_TOKEN": "s3cret",
                "FHIR_SCHEDULE_IDS": f" {mine} ,",
                "SCHEDULER_TIMEOUT": "1.5",
                "FHIR_VISIT_TYPE_CODES": f"{NEW}=http://snomed.info/sct|185389009",
            }
        )
    )

    assert [s.slot_id for s in scheduler.find_slots(NEW, at(0), at(23))] == [wanted]


@pytest.mark.parametrize(
    "environ",
    [
        {"FHIR_BASE_URL": "ftp://x"},
        {"FHIR_BASE_URL": "http://x", "FHIR_VISIT_TYPE_CODES": "new_patient"},
    ],
)
def test_from_settings_refuses_malformed_settings(environ: Dict[str, str]) -> None:
    with pytest.raises(ValueError):
        FhirScheduler.from_settings(load(environ))


def test_without_the_token_the_server_is_unavailable(
    facade: FhirFacade, new_slots: List[str]
) -> None:
    facade.required_token = "s3cret"

    with pytest.raises(BackendUnavailable):
        FhirScheduler(facade.base_url).find_slots(NEW, at(0), at(23))


# --- find_slots ---------------------------------------------------------------------


def test_find_slots_in_a_window(
    scheduler: FhirScheduler, schedule: str, new_slots: List[str]
) -> None:
    slots = scheduler.find_slots(NEW, at(10), at(12))

    assert [s.slot_id for s in slots] == new_slots[1:3]  # 12:00 is not before 12:00
    assert slots[0].start == at(10)
    assert slots[0].end == at(11)
    assert slots[0].start.utcoffset() == timedelta(hours=-5)
    assert slots[0].visit_type == NEW
    assert slots[0].provider == f"Schedule/{schedule}"


def test_find_slots_by_service_type(
    scheduler: FhirScheduler, new_slots: List[str], follow_up_slots: List[str]
) -> None:
    found = scheduler.find_slots(FOLLOW_UP, at(0), at(23))

    assert [s.slot_id for s in found] == follow_up_slots
    assert {s.visit_type for s in found} == {FOLLOW_UP}


def test_find_slots_in_another_time_zone_and_with_a_limit(
    scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    earliest = at(10).astimezone(timezone.utc)  # 15:00Z

    found = scheduler.find_slots(NEW, earliest, earliest + timedelta(days=1), limit=2)

    assert [s.slot_id for s in found] == new_slots[1:3]


def test_find_slots_leaves_out_taken_and_past_slots(
    facade: FhirFacade, scheduler: FhirScheduler, schedule: str, new_slots: List[str]
) -> None:
    take_slot_elsewhere(facade, new_slots[0])
    an_hour_ago = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    facade.seed_slots(schedule, [an_hour_ago], (VISIT_TYPE_SYSTEM, NEW))

    found = scheduler.find_slots(NEW, an_hour_ago - timedelta(hours=1), at(23))

    assert [s.slot_id for s in found] == new_slots[1:]


def test_find_slots_with_configured_codes(
    facade: FhirFacade, schedule: str, new_slots: List[str]
) -> None:
    [coded] = facade.seed_slots(schedule, [at(14)], ("http://snomed.info/sct", "1"))
    scheduler = FhirScheduler(
        facade.base_url, visit_type_codes={NEW: "http://snomed.info/sct|1"}
    )

    assert [s.slot_id for s in scheduler.find_slots(NEW, at(0), at(23))] == [coded]
    with pytest.raises(ValueError, match="follow_up"):
        scheduler.find_slots(FOLLOW_UP, at(0), at(23))


def test_naive_datetimes_are_refused(scheduler: FhirScheduler) -> None:
    naive = datetime(2030, 1, 1, 9)
    with pytest.raises(ValueError, match="aware"):
        scheduler.find_slots(NEW, naive, at(23))
    with pytest.raises(ValueError, match="aware"):
        scheduler.find_slots(NEW, at(0), naive)


# --- hold and release ---------------------------------------------------------------


def test_a_hold_hides_the_slot_until_released(
    scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)

    hold = scheduler.hold(slot, ttl=timedelta(minutes=5))

    assert timedelta(minutes=4) < hold.expires_at - datetime.now(timezone.utc)
    assert slot.slot_id not in {
        s.slot_id for s in scheduler.find_slots(NEW, at(0), at(23))
    }
    with pytest.raises(SlotUnavailable):
        scheduler.hold(slot)
    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, PATIENT, "someone-else")
    scheduler.release(hold.hold_id)
    scheduler.release(hold.hold_id)  # a no-op
    assert slot in scheduler.find_slots(NEW, at(0), at(23))


def test_the_holder_can_book(scheduler: FhirScheduler, new_slots: List[str]) -> None:
    slot = first_slot(scheduler)
    hold = scheduler.hold(slot)

    booking = scheduler.book(slot, PATIENT, "key-1", hold_id=hold.hold_id)

    assert booking.slot.slot_id == slot.slot_id
    assert scheduler.hold(first_slot(scheduler))  # the booked slot's hold is gone


def test_an_expired_hold_does_not_block(
    scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    scheduler.hold(slot, ttl=timedelta(microseconds=1))

    assert scheduler.book(slot, PATIENT, "key-1").status == BOOKED


def test_a_hold_does_not_stop_another_system(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    hold = scheduler.hold(slot)
    take_slot_elsewhere(facade, slot.slot_id)

    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, PATIENT, "key-1", hold_id=hold.hold_id)
    assert facade.inspect("Appointment") == []


# --- book ---------------------------------------------------------------------------


def test_book_makes_the_slot_busy_and_creates_the_appointment(
    facade: FhirFacade, scheduler: FhirScheduler, schedule: str, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)

    booking = scheduler.book(slot, PATIENT, "key-1")

    assert booking == Booking(booking.reference, slot, PATIENT, BOOKED)
    assert len(booking.reference) == 6
    assert set(booking.reference) <= set(REFERENCE_ALPHABET)
    busy = stored(facade, "Slot", slot.slot_id)
    assert (busy["status"], busy["meta"]["versionId"]) == ("busy", "2")
    [appointment] = facade.inspect("Appointment")
    assert appointment["status"] == "booked"
    assert {"system": BOOKING_REFERENCE_SYSTEM, "value": booking.reference} in (
        appointment["identifier"]
    )
    assert {"system": IDEMPOTENCY_KEY_SYSTEM, "value": "key-1"} in (
        appointment["identifier"]
    )
    assert appointment["slot"] == [{"reference": f"Slot/{slot.slot_id}"}]
    assert appointment["start"] == busy["start"]
    assert appointment["end"] == busy["end"]
    assert appointment["serviceType"] == busy["serviceType"]
    [patient] = appointment["contained"]
    assert patient["name"] == [{"text": PATIENT.name}]
    assert patient["telecom"][0]["value"] == PATIENT.phone
    assert appointment["participant"][0]["actor"] == {"reference": "#patient"}


def test_the_same_key_again_returns_the_same_booking(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    first = scheduler.book(slot, PATIENT, "key-1")
    requests_before = len(facade.request_log)

    again = scheduler.book(slot, PATIENT, "key-1")
    elsewhere = FhirScheduler(facade.base_url).book(slot, PATIENT, "key-1")

    assert again == first
    assert elsewhere == first
    replay_methods = {method for method, _ in facade.request_log[requests_before:]}
    assert replay_methods == {"GET"}  # a replay writes nothing
    assert len(facade.inspect("Appointment")) == 1
    assert stored(facade, "Slot", slot.slot_id)["meta"]["versionId"] == "2"


def test_a_late_retry_after_cancelling_books_nothing(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    first = scheduler.book(slot, PATIENT, "key-1")
    scheduler.cancel(first.reference, PATIENT.phone, "cancel-1")
    requests_before = len(facade.request_log)

    late = scheduler.book(slot, PATIENT, "key-1")

    assert (late.reference, late.status) == (first.reference, CANCELLED)
    assert {m for m, _ in facade.request_log[requests_before:]} == {"GET"}
    assert stored(facade, "Slot", slot.slot_id)["status"] == "free"
    assert len(facade.inspect("Appointment")) == 1


def test_a_retry_after_a_lost_answer_returns_the_booking(
    facade: FhirFacade, new_slots: List[str]
) -> None:
    scheduler = FhirScheduler(facade.base_url, timeout=0.3)
    slot = first_slot(scheduler)
    facade.inject(
        Fault(delay=1.0, after=True, method="POST", resource_type="", times=1)
    )

    with pytest.raises(BackendUnavailable):
        scheduler.book(slot, PATIENT, "key-1")  # committed, but the answer was late
    booking = scheduler.book(slot, PATIENT, "key-1")

    [appointment] = facade.inspect("Appointment")
    assert {"system": BOOKING_REFERENCE_SYSTEM, "value": booking.reference} in (
        appointment["identifier"]
    )
    assert booking.patient == PATIENT


@pytest.mark.parametrize(
    "take",
    [
        pytest.param(lambda scheduler, slot: scheduler.hold(slot), id="hold"),
        pytest.param(
            lambda scheduler, slot: scheduler.book(slot, PATIENT, "key-1"), id="book"
        ),
    ],
)
def test_a_slot_taken_after_it_was_found_cannot_be_held_or_booked(
    facade: FhirFacade,
    scheduler: FhirScheduler,
    new_slots: List[str],
    take: Callable[[FhirScheduler, Slot], object],
) -> None:
    slot = first_slot(scheduler)
    take_slot_elsewhere(facade, slot.slot_id)

    with pytest.raises(SlotUnavailable):
        take(scheduler, slot)
    assert facade.inspect("Appointment") == []


def test_if_match_stops_a_booking_made_between_read_and_transaction(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    facade.before_transaction = lambda: take_slot_elsewhere(facade, slot.slot_id)

    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, PATIENT, "key-1")
    assert facade.inspect("Appointment") == []
    assert stored(facade, "Slot", slot.slot_id)["meta"]["versionId"] == "2"


def test_fifty_concurrent_bookings_of_one_slot_make_one_appointment(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    barrier = threading.Barrier(50)
    outcomes: List[Union[Booking, Exception]] = []

    def attempt(number: int) -> None:
        barrier.wait()
        try:
            outcomes.append(scheduler.book(slot, PATIENT, f"key-{number}"))
        except Exception as error:
            outcomes.append(error)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    bookings = [o for o in outcomes if isinstance(o, Booking)]
    refused = [o for o in outcomes if isinstance(o, SlotUnavailable)]
    assert (len(bookings), len(refused)) == (1, 49), outcomes
    [appointment] = facade.inspect("Appointment")
    assert {"system": BOOKING_REFERENCE_SYSTEM, "value": bookings[0].reference} in (
        appointment["identifier"]
    )
    assert stored(facade, "Slot", slot.slot_id)["status"] == "busy"


def test_a_concurrent_call_with_the_same_key_for_another_slot(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    mine, theirs = scheduler.find_slots(NEW, at(0), at(23), limit=2)
    won: List[Booking] = []

    def book_theirs_first() -> None:  # after our key search, before our transaction
        facade.before_transaction = None
        won.append(FhirScheduler(facade.base_url).book(theirs, PATIENT, "key-1"))

    facade.before_transaction = book_theirs_first

    booking = scheduler.book(mine, PATIENT, "key-1")

    assert booking == won[0]
    assert len(facade.inspect("Appointment")) == 1
    assert stored(facade, "Slot", mine.slot_id)["status"] == "free"


def test_booking_checks_its_input(
    scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    with pytest.raises(ValueError):
        scheduler.book(slot, Patient("Dana", "817-555-0142"), "key-1")
    with pytest.raises(ValueError):
        scheduler.book(slot, Patient(" ", PATIENT.phone), "key-1")
    with pytest.raises(ValueError):
        scheduler.book(slot, PATIENT, "")
    with pytest.raises(ValueError, match="aware"):
        Slot("x", datetime(2030, 1, 1, 9), datetime(2030, 1, 1, 10), NEW)


def test_a_slot_that_no_longer_exists_is_unavailable(
    scheduler: FhirScheduler,
) -> None:
    gone = Slot("no-such-slot", at(9), at(10), NEW)

    with pytest.raises(SlotUnavailable):
        scheduler.book(gone, PATIENT, "key-1")
    with pytest.raises(SlotUnavailable):
        scheduler.hold(gone)


# --- get_booking and cancel ---------------------------------------------------------


@pytest.fixture
def booking(scheduler: FhirScheduler, new_slots: List[str]) -> Booking:
    return scheduler.book(first_slot(scheduler), PATIENT, "key-1")


def test_get_booking_needs_reference_and_phone(
    scheduler: FhirScheduler, booking: Booking
) -> None:
    assert scheduler.get_booking(booking.reference, PATIENT.phone) == booking
    assert scheduler.get_booking(booking.reference.lower(), "+1 817-555-0142") == (
        booking
    )
    for reference, phone in [
        (booking.reference, "+18175550199"),
        ("ZZZZZZ", PATIENT.phone),
        ("", PATIENT.phone),
        (booking.reference, ""),
    ]:
        with pytest.raises(BookingNotFound) as raised:
            scheduler.get_booking(reference, phone)
        assert "phone" in str(raised.value) and "reference" in str(raised.value)


def test_cancel_frees_the_slot_and_is_idempotent(
    facade: FhirFacade, scheduler: FhirScheduler, booking: Booking
) -> None:
    cancelled = scheduler.cancel(booking.reference, PATIENT.phone, "cancel-1")

    assert cancelled == Booking(booking.reference, booking.slot, PATIENT, CANCELLED)
    [appointment] = facade.inspect("Appointment")
    assert appointment["status"] == "cancelled"
    assert appointment["cancelationReason"]["coding"][0]["code"] == "pat"
    assert stored(facade, "Slot", booking.slot.slot_id)["status"] == "free"
    assert booking.slot in scheduler.find_slots(NEW, at(0), at(23))

    again = scheduler.cancel(booking.reference, PATIENT.phone, "cancel-1")

    assert again == cancelled
    assert stored(facade, "Appointment", appointment["id"])["meta"]["versionId"] == "2"
    assert scheduler.get_booking(booking.reference, PATIENT.phone).status == CANCELLED


def test_cancel_with_a_wrong_phone_or_reference_changes_nothing(
    facade: FhirFacade, scheduler: FhirScheduler, booking: Booking
) -> None:
    with pytest.raises(BookingNotFound):
        scheduler.cancel(booking.reference, "+18175550199", "cancel-1")
    with pytest.raises(BookingNotFound):
        scheduler.cancel("ZZZZZZ", PATIENT.phone, "cancel-1")
    assert facade.inspect("Appointment")[0]["status"] == "booked"
    assert stored(facade, "Slot", booking.slot.slot_id)["status"] == "busy"


def test_cancel_leaves_a_slot_that_staff_blocked(
    facade: FhirFacade, scheduler: FhirScheduler, booking: Booking
) -> None:
    blocked = {
        **stored(facade, "Slot", booking.slot.slot_id),
        "status": "busy-unavailable",
    }
    facade.put_resource(blocked)

    scheduler.cancel(booking.reference, PATIENT.phone, "cancel-1")

    assert stored(facade, "Slot", booking.slot.slot_id)["status"] == "busy-unavailable"


def test_cancel_retries_when_the_appointment_changed_meanwhile(
    facade: FhirFacade, scheduler: FhirScheduler, booking: Booking
) -> None:
    def staff_edit_once() -> None:
        facade.before_transaction = None
        [appointment] = facade.inspect("Appointment")
        facade.put_resource({**appointment, "comment": "prefers mornings"})

    facade.before_transaction = staff_edit_once

    assert scheduler.cancel(booking.reference, PATIENT.phone, "c").status == CANCELLED
    [appointment] = facade.inspect("Appointment")
    assert (appointment["status"], appointment["comment"]) == (
        "cancelled",
        "prefers mornings",
    )


# --- listing the assistant's Appointments (reminders; more in test_contract.py) ------


def test_only_the_assistants_appointments_are_listed_through_every_page(
    facade: FhirFacade, schedule: str, new_slots: List[str]
) -> None:
    facade.required_token = "s3cret"  # sent with every page
    scheduler = FhirScheduler(facade.base_url, timeout=2.0, auth_token="s3cret")
    ours = [
        scheduler.book(slot, PATIENT, f"key-{index}", reminder_consent=True)
        for index, slot in enumerate(scheduler.find_slots(NEW, at(9), at(11)))
    ]
    facade.page_size = 1
    # The front desk's booking at 11:00: no reference of ours, so not listed.
    [desk_slot] = facade.seed_slots(schedule, [at(11)], (VISIT_TYPE_SYSTEM, NEW))
    facade.put_resource(
        {
            "resourceType": "Appointment",
            "id": "front-desk",
            "status": "booked",
            "identifier": [{"system": "urn:clinic:mrn", "value": "A-1"}],
            "start": at(11).isoformat(),
            "end": at(11, 30).isoformat(),
            "slot": [{"reference": f"Slot/{desk_slot}"}],
            "participant": [{"actor": {"display": "front desk"}, "status": "accepted"}],
        }
    )

    listed = scheduler.active_bookings_between(at(0), at(23))
    assert len(ours) == 2 and listed == ours
    assert scheduler.bookings_between(at(0), at(23)) == ours
    assert [b.slot.provider for b in listed] == [f"Schedule/{schedule}"] * 2
    assert scheduler.active_bookings_between(at(0), at(23), "Schedule/other") == []


def test_a_next_link_off_the_base_url_is_not_followed(
    facade: FhirFacade, new_slots: List[str]
) -> None:
    scheduler = FhirScheduler(facade.base_url, timeout=2.0)
    for index, slot in enumerate(scheduler.find_slots(NEW, at(9), at(11))):
        scheduler.book(slot, PATIENT, f"key-{index}")
    facade.page_size = 1
    # The same server under another name: its next links name 127.0.0.1.
    other_name = facade.base_url.replace("127.0.0.1", "localhost")

    with pytest.raises(BackendUnavailable, match="not on its base URL"):
        FhirScheduler(other_name, timeout=2.0).bookings_between(at(0), at(23))


# --- an unavailable server ----------------------------------------------------------


def calls(scheduler: FhirScheduler, slot: Slot) -> List[Any]:
    return [
        lambda: scheduler.find_slots(NEW, at(0), at(23)),
        lambda: scheduler.hold(slot),
        lambda: scheduler.book(slot, PATIENT, "key-1"),
        lambda: scheduler.get_booking("ABCDEF", PATIENT.phone),
        lambda: scheduler.cancel("ABCDEF", PATIENT.phone, "key-2"),
    ]


def test_a_closed_port_is_unavailable() -> None:
    scheduler = FhirScheduler(f"http://127.0.0.1:{closed_port()}/fhir", timeout=1)

    for call in calls(scheduler, Slot("s", at(9), at(10), NEW)):
        with pytest.raises(BackendUnavailable):
            call()


def test_a_slow_server_is_unavailable(facade: FhirFacade, new_slots: List[str]) -> None:
    slot = first_slot(FhirScheduler(facade.base_url))
    scheduler = FhirScheduler(facade.base_url, timeout=0.2)
    facade.inject(Fault(delay=1.0))

    for call in calls(scheduler, slot):
        with pytest.raises(BackendUnavailable):
            call()


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_unavailable(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str], status: int
) -> None:
    slot = first_slot(scheduler)
    facade.inject(Fault(status=status))

    for call in calls(scheduler, slot):
        with pytest.raises(BackendUnavailable):
            call()


def test_a_failed_booking_transaction_is_unavailable(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str]
) -> None:
    slot = first_slot(scheduler)
    facade.inject(Fault(status=500, method="POST", resource_type=""))

    with pytest.raises(BackendUnavailable):
        scheduler.book(slot, PATIENT, "key-1")
    assert stored(facade, "Slot", slot.slot_id)["status"] == "free"


@pytest.mark.parametrize("status", [409, 412, 422])
def test_conflicts_on_the_transaction_are_slot_unavailable(
    facade: FhirFacade, scheduler: FhirScheduler, new_slots: List[str], status: int
) -> None:
    slot = first_slot(scheduler)
    facade.inject(Fault(status=status, method="POST", resource_type=""))

    with pytest.raises(SlotUnavailable):
        scheduler.book(slot, PATIENT, "key-1")


# --- privacy ------------------------------------------------------------------------


def test_names_and_phones_are_never_logged(
    facade: FhirFacade,
    scheduler: FhirScheduler,
    new_slots: List[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    slot = first_slot(scheduler)
    booking = scheduler.book(slot, PATIENT, "key-1")
    scheduler.get_booking(booking.reference, PATIENT.phone)
    scheduler.cancel(booking.reference, PATIENT.phone, "cancel-1")
    facade.inject(Fault(status=503))
    with pytest.raises(BackendUnavailable) as raised:
        scheduler.book(slot, PATIENT, "key-2")

    assert caplog.records  # the backend and urllib3 did log
    for secret in (PATIENT.name, "Testperson", PATIENT.phone, "5550142"):
        assert secret not in caplog.text
        assert secret not in str(raised.value)
