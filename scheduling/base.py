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
- Failures are one of the exceptions below, never a raw library error.
- A booking is only ever returned to a caller that gives both its reference code and
  the phone number it was booked with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import List, Optional, Protocol, runtime_checkable

BOOKED = "booked"
CANCELLED = "cancelled"


class SchedulerError(Exception):
    """Base class of the scheduler's typed outcomes."""


class SlotUnavailable(SchedulerError):
    """The slot is taken, held by someone else, blocked, or no longer exists."""


class BookingNotFound(SchedulerError):
    """No booking has this reference code with this phone number."""


class BackendUnavailable(SchedulerError):
    """The scheduling system cannot be reached, timed out or answered with an error."""


def require_aware(value: datetime, name: str = "datetime") -> datetime:
    """Returns ``value`` if it carries a time zone, else raises ``ValueError``."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be time-zone aware, got {value!r}")
    return value


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


@dataclass(frozen=True)
class Booking:
    """A booked (or cancelled) appointment."""

    reference: str
    slot: Slot
    patient: Patient
    status: str = BOOKED


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
    ) -> Booking:
        """Books ``slot`` for ``patient`` atomically.

        Raises ``SlotUnavailable`` if anyone else booked or holds it (a hold of
        ``hold_id`` is the caller's own). The same ``idempotency_key`` again returns
        the same booking.
        """

    def cancel(self, reference: str, phone: str, idempotency_key: str) -> Booking:
        """Cancels the booking; ``BookingNotFound`` unless reference and phone match.

        Cancelling an already cancelled booking returns it unchanged.
        """

    def get_booking(self, reference: str, phone: str) -> Booking:
        """The booking with this reference and phone, else ``BookingNotFound``."""
