"""The scheduler interface every backend implements, and its typed outcomes.

Backends: ``sqlite`` (embedded default, ``scheduling/sqlite_backend.py``),
``fhir`` (a FHIR R4 server, ``fhir_backend.py``) and ``webhook`` (any other system
behind a signed JSON webhook, ``webhook_backend.py``).
``scheduling/__init__.py`` picks one from the environment.

Rules every backend follows:

- Every datetime passed in or returned is time-zone aware; a naive one is refused
  with ``ValueError``.
- Calls are synchronous. Actions run them with ``asyncio.to_thread`` so that a slow
  backend never blocks the action server's event loop.
- ``book`` and ``cancel`` take an idempotency key: the same key again returns the
  first result and changes nothing, so a retried request never books twice.
- Requests are checked here, once, for every backend: :func:`checked_patient`
  (a name and an E.164 phone), :func:`checked_idempotency_key`; references are made
  by :func:`new_reference` and compared by :func:`normalize_reference`. A request
  these refuse raises ``InvalidRequest`` before anything is sent anywhere.
- A search is checked and cut to what can be found by :func:`search_window`, a
  hold's length by :func:`positive_ttl`.
- The current time comes from a :data:`Clock` (default :func:`utc_now`), so tests
  can fix it; no backend reads the system clock itself.
- Failures are one of the exceptions below, never a raw library error.
- A booking is only ever returned to a caller that gives both its reference code and
  the phone number it was booked with.
- Reminders (issue 14): ``book`` stores whether the patient agreed to a reminder by
  SMS (``reminder_consent``); ``confirm`` and ``note_reschedule_request`` record the
  patient's reply to one. ``scheduling/reminders.py`` decides when and what to send,
  from the bookings each backend lists: ``active_bookings_between`` (the reminder
  job) and ``bookings_between`` (a day's, for the staff's view of their reminders).
  Only the assistant's own bookings are listed; bookings made by others in the
  clinic's system carry no consent.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import (
    Callable,
    Iterable,
    List,
    Optional,
    Protocol,
    Tuple,
    runtime_checkable,
)

BOOKED = "booked"
CANCELLED = "cancelled"

# E.164: a "+", a country code not starting with 0, at most 15 digits in all. At
# least 7 digits: shorter is no dialable number in any country.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Idempotency keys travel as an HTTP header (webhook), a FHIR identifier in a search
# URL and a SQLite key: visible ASCII without spaces, at most 128 characters, which
# every one of them takes. The action server's keys are 40 hex characters.
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
# Reference codes are read out over the phone: no 0/O, 1/I/L look-alikes.
REFERENCE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
REFERENCE_LENGTH = 6
# No visit lasts this long: a booking overlapping [start, end) starts after
# ``start - LONGEST_VISIT``. Backends that can search bookings by their start only
# (FHIR, the webhook) list from there and keep the overlapping ones.
LONGEST_VISIT = timedelta(days=1)

# The current time, aware. Backends and the call-back store take one so that tests
# can fix or move it; the default is :func:`utc_now`.
Clock = Callable[[], datetime]


class SchedulerError(Exception):
    """Base class of the scheduler's typed outcomes."""


class SlotUnavailable(SchedulerError):
    """The slot is taken, held by someone else, blocked, or no longer exists."""


class BookingNotFound(SchedulerError):
    """No booking has this reference code with this phone number."""


class BackendUnavailable(SchedulerError):
    """The scheduling system cannot be reached, timed out or answered with an error."""


class ListingUnsupported(BackendUnavailable):
    """The scheduling system cannot list bookings, so reminders are unavailable.

    A webhook receiver that does not implement ``bookings/list``. Unlike its base
    class, trying again later does not help: the receiver must be extended.
    """


class InvalidRequest(SchedulerError, ValueError):
    """The caller's request is unusable; the scheduling system is not at fault.

    No name, a phone that is not E.164, a malformed or reused idempotency key. The
    message never quotes the values (callers may log it). Also a ``ValueError``,
    which is what backends raised before it existed.
    """


def require_aware(value: datetime, name: str = "datetime") -> datetime:
    """Returns ``value`` if it carries a time zone, else raises ``ValueError``."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be time-zone aware, got {value!r}")
    return value


def utc_now() -> datetime:
    """The current time in UTC: the :data:`Clock` everything uses unless told."""
    return datetime.now(timezone.utc)


def search_window(
    earliest: datetime,
    latest: datetime,
    limit: int,
    now: Optional[datetime] = None,
) -> Optional[Tuple[datetime, datetime]]:
    """The part of [earliest, latest) a search for ``limit`` slots can still find.

    Starts at ``now`` when that is later (a backend that offers no past slots);
    None when nothing can be found (``limit`` below 1, or an empty range).

    Raises:
        ValueError: ``earliest`` or ``latest`` is naive.
    """
    require_aware(earliest, "earliest")
    require_aware(latest, "latest")
    if now is not None:
        earliest = max(earliest, now)
    if limit < 1 or latest <= earliest:
        return None
    return earliest, latest


def positive_ttl(ttl: timedelta) -> timedelta:
    """``ttl`` if a hold of that length makes sense, else ``ValueError``."""
    if ttl <= timedelta(0):
        raise ValueError("a hold needs a positive ttl")
    return ttl


def checked_idempotency_key(key: object) -> str:
    """``key`` if it is 1 to 128 visible ASCII characters, else ``InvalidRequest``."""
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "idempotency_key must be 1 to 128 visible ASCII characters, no spaces"
        )
    return key


def new_reference() -> str:
    """A random reference code, e.g. ``K7M3QX``; backends check it is unused."""
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def normalize_reference(text: str) -> str:
    """A reference as typed or dictated (``k7m-3qx``) in its stored form."""
    return re.sub(r"[\s-]", "", text).upper()


@dataclass(frozen=True)
class Slot:
    """A bookable time for one visit type with one provider."""

    slot_id: str
    start: datetime
    end: datetime
    visit_type: str
    provider: str = ""

    def __post_init__(self) -> None:
        """Refuses naive datetimes and empty or reversed intervals."""
        require_aware(self.start, "start")
        require_aware(self.end, "end")
        # In UTC: Python compares two times of one zone by wall clock, ignoring
        # ``fold``, so 01:30 CDT -> 01:30 CST on 2026-11-01 would look empty.
        if self.end.astimezone(timezone.utc) <= self.start.astimezone(timezone.utc):
            raise ValueError("a slot must end after it starts")


@dataclass(frozen=True)
class Hold:
    """A short reservation of a slot while the patient confirms."""

    hold_id: str
    slot: Slot
    expires_at: datetime


@dataclass(frozen=True)
class Patient:
    """Who the booking is for. ``phone`` is E.164, e.g. ``+18175550100``."""

    name: str
    phone: str


def checked_patient(patient: Patient) -> Patient:
    """The patient with blanks trimmed; ``InvalidRequest`` if unusable.

    A booking needs a name and an E.164 phone number (``+18175550100``).
    """
    name, phone = patient.name.strip(), patient.phone.strip()
    if not name:
        raise InvalidRequest("the patient's name is empty")
    if not E164.match(phone):
        raise InvalidRequest(
            "the patient's phone must be in E.164 form, e.g. +18175550100"
        )
    return Patient(name=name, phone=phone)


@dataclass(frozen=True)
class Booking:
    """A booked (or cancelled) appointment.

    ``reminder_consent``: the patient agreed to a reminder by SMS at this number.
    ``confirmed``: the patient confirmed by replying to a reminder.
    ``reschedule_requested``: the patient asked to move it (replied 2), for the
    staff's view until the move is done.
    """

    reference: str
    slot: Slot
    patient: Patient
    status: str = BOOKED
    reminder_consent: bool = False
    confirmed: bool = False
    reschedule_requested: bool = False


def local_day(day: date, tz: tzinfo) -> Tuple[datetime, datetime]:
    """[start, end) of ``day`` in ``tz``: midnight to midnight (23 to 25 hours)."""
    return (
        datetime.combine(day, time(0), tzinfo=tz),
        datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz),
    )


def overlapping(
    bookings: Iterable[Booking],
    start: datetime,
    end: datetime,
    provider: Optional[str] = None,
) -> List[Booking]:
    """The active ``bookings`` overlapping [start, end), of ``provider`` if given.

    Soonest first. What ``active_bookings_between`` answers, for the backends that
    list bookings by their start (see :data:`LONGEST_VISIT`).
    """
    require_aware(start, "start")
    require_aware(end, "end")
    return sorted(
        (
            booking
            for booking in bookings
            if booking.status == BOOKED
            and booking.slot.start < end
            and booking.slot.end > start
            and provider in (None, booking.slot.provider)
        ),
        key=lambda booking: booking.slot.start,
    )


@runtime_checkable
class Scheduler(Protocol):
    """What the booking actions need from a scheduling system."""

    def find_slots(
        self,
        visit_type: str,
        earliest: datetime,
        latest: datetime,
        limit: int = 5,
    ) -> List[Slot]:
        """Open slots of ``visit_type`` starting in [earliest, latest), soonest first.

        Slots in the past, taken, held by someone else or blocked are left out.
        """

    def hold(self, slot: Slot, ttl: timedelta = timedelta(minutes=10)) -> Hold:
        """Reserves ``slot`` for ``ttl``; raises ``SlotUnavailable`` if it is gone."""

    def release(self, hold_id: str) -> None:
        """Gives a held slot back; releasing an unknown or expired hold is a no-op."""

    def book(
        self,
        slot: Slot,
        patient: Patient,
        idempotency_key: str,
        hold_id: Optional[str] = None,
        reminder_consent: bool = False,
    ) -> Booking:
        """Books ``slot`` for ``patient`` atomically.

        Raises ``SlotUnavailable`` if anyone else booked or holds it (a hold of
        ``hold_id`` is the caller's own). The same ``idempotency_key`` again returns
        the same booking. ``reminder_consent`` is stored with the booking.
        """

    def cancel(self, reference: str, phone: str, idempotency_key: str) -> Booking:
        """Cancels the booking; ``BookingNotFound`` unless reference and phone match.

        Cancelling an already cancelled booking returns it unchanged.
        """

    def get_booking(self, reference: str, phone: str) -> Booking:
        """The booking with this reference and phone, else ``BookingNotFound``."""

    def confirm(self, reference: str, phone: str) -> Booking:
        """Marks the booking confirmed (the patient replied to its reminder).

        Returns the booking as it is now; confirming twice changes nothing.
        ``BookingNotFound`` as :meth:`get_booking`.
        """

    def note_reschedule_request(self, reference: str, phone: str) -> Booking:
        """Notes that the patient asked to move the booking (replied 2).

        For the staff's view until the move is done; the booking stays booked.
        ``BookingNotFound`` as :meth:`get_booking`.
        """

    def active_bookings_between(
        self, start: datetime, end: datetime, provider: Optional[str] = None
    ) -> List[Booking]:
        """The assistant's active bookings overlapping [start, end), soonest first.

        Of ``provider`` only, if given. What the reminder job reminds. Raises
        ``BackendUnavailable`` (``ListingUnsupported`` if the system cannot list
        bookings at all).
        """

    def bookings_between(self, start: datetime, end: datetime) -> List[Booking]:
        """Every booking of the assistant starting in [start, end), soonest first.

        Cancelled ones too: a day's, for the staff's view of their reminders.
        Errors as :meth:`active_bookings_between`.
        """
