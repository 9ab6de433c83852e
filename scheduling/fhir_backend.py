"""Scheduler backend for a clinic's FHIR R4 server (Slot, Appointment, Schedule).

How the :class:`~scheduling.base.Scheduler` contract maps onto FHIR R4
(v4.0.1, https://hl7.org/fhir/R4/):

- Open times are ``Slot`` resources (slot.html) with status ``free``, found with the
  Slot search parameters ``status``, ``start``, ``service-type`` and ``schedule``
  (search.html: date prefixes ``ge``/``lt``, ``system|code`` tokens, comma = OR).
  A visit type is a ``Slot.serviceType`` coding; the provider is the Slot's
  ``schedule`` reference.
- A booking is an ``Appointment`` (appointment.html) with status ``booked`` that
  references its Slot, and booking marks the Slot ``busy``. Both changes go in one
  transaction Bundle (http.html#transaction), so they happen together or not at all.
- Double booking is prevented by a version-aware update (http.html#concurrency):
  the Slot is PUT with ``ifMatch`` carrying the version read just before, so if
  anything changed the Slot in between, the server answers 412 and the whole
  transaction fails. A server that does not report versions is refused.
- Retries never book twice: the Appointment carries the idempotency key as an
  identifier and is created with ``ifNoneExist`` on it (http.html#ccreate), and
  before booking -- and after any conflict -- the backend searches for that
  identifier and returns the booking it finds.
- The patient is a *contained* Patient (references.html#contained) with a name and
  a phone number, referenced by the Appointment's participant. A chat booking is
  not a verified identity, so it creates no Patient record and matches none in the
  clinic's patient index; staff reconcile it at check-in.
- Holds: FHIR R4 has no hold. A hold here is an in-process reservation in this
  backend only: it keeps this action server from offering or booking the slot for
  someone else, but it does not stop another system (the front desk, a portal)
  from booking the slot at the FHIR server. That cannot double book -- the
  transaction's ``If-Match`` makes the later booking fail -- but a patient holding
  a slot can still lose it and get ``SlotUnavailable`` when confirming.
- A booking is only found by its reference code identifier *and* the phone number
  of its contained Patient; a mismatch of either gives ``BookingNotFound``.
- Reminders (issue 14): the patient's consent to an SMS reminder, and a reply
  confirming the booking or asking to move it, are ``valueBoolean`` extensions
  (extensibility.html) of the Appointment the assistant booked (``REMINDER_*``
  URLs below), read back by ``get_booking``. A reply is a version-aware PUT of the
  Appointment, retried on 412 like a cancel. Appointments booked by others carry
  none: no consent. The reminder job and the staff's view list the assistant's
  Appointments -- those with an identifier in ``BOOKING_REFERENCE_SYSTEM`` -- with
  one search (``identifier=<system>|``, ``status``, ``date`` on ``Appointment.start``
  with ``ge``/``lt``, search.html#token and #date), following the searchset
  Bundle's ``next`` links (search.html#paging, only to this server's base URL).

Patient names and phone numbers are never logged, nor put in exception messages.

Settings (read by ``clinic_common.settings``; :meth:`FhirScheduler.from_settings`):
    FHIR_BASE_URL: the FHIR server's service base URL (required).
    FHIR_AUTH_TOKEN: a bearer token sent as ``Authorization: Bearer ...``.
    FHIR_SCHEDULE_IDS: comma-separated Schedule ids to search; all if unset.
    SCHEDULER_TIMEOUT: seconds to wait for each HTTP request (default 5).
    FHIR_VISIT_TYPE_CODES: ``visit_type=system|code`` pairs, comma-separated; if
        unset a visit type ``x`` is the code ``x`` of ``VISIT_TYPE_SYSTEM``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import quote

import requests

from clinic_common.settings import DEFAULT_SCHEDULER_TIMEOUT, Settings
from scheduling.base import (
    BOOKED,
    CANCELLED,
    LONGEST_VISIT,
    BackendUnavailable,
    Booking,
    BookingNotFound,
    Clock,
    Hold,
    Patient,
    Slot,
    SlotUnavailable,
    checked_idempotency_key,
    checked_patient,
    new_reference,
    normalize_reference,
    overlapping,
    positive_ttl,
    require_aware,
    search_window,
    utc_now,
)

logger = logging.getLogger(__name__)

Resource = Dict[str, Any]

BOOKING_REFERENCE_SYSTEM = "urn:valliant-life-medical:booking-reference"
IDEMPOTENCY_KEY_SYSTEM = "urn:valliant-life-medical:idempotency-key"
VISIT_TYPE_SYSTEM = "urn:valliant-life-medical:visit-type"
# https://hl7.org/fhir/R4/valueset-appointment-cancellation-reason.html
CANCELLATION_REASON_SYSTEM = (
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
)
FHIR_JSON = "application/fhir+json"
# Extensions of the assistant's Appointments (valueBoolean), for reminders.
REMINDER_CONSENT_URL = "urn:valliant-life-medical:reminder-consent"
REMINDER_CONFIRMED_URL = "urn:valliant-life-medical:reminder-confirmed"
RESCHEDULE_REQUESTED_URL = "urn:valliant-life-medical:reschedule-requested"

# Answers that mean "someone else changed or took it": version conflict (409, 412,
# http.html#concurrency) or a business rule of the server (422).
CONFLICT_STATUSES = frozenset({409, 412, 422})
# Appointment statuses a patient can still cancel (valueset-appointmentstatus.html).
CANCELLABLE_STATUSES = frozenset({"proposed", "pending", "booked", "waitlist"})
# Appointment statuses that keep a Slot taken.
ACTIVE_STATUSES = ("pending", "booked", "arrived", "checked-in")

# Our statuses for FHIR's; any other FHIR status (e.g. "fulfilled") is kept as is.
_STATUSES = {"booked": BOOKED, "cancelled": CANCELLED}
_REFERENCE_ATTEMPTS = 5
_CANCEL_ATTEMPTS = 3
# Appointments asked for per page when listing; a server may send fewer.
_LIST_PAGE_SIZE = 100
# Pages followed before a listing is given up on as a server's paging loop.
_MAX_PAGES = 1000
_INSTANT = re.compile(
    r"^(?P<head>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})$"
)


class FhirScheduler:
    """A :class:`~scheduling.base.Scheduler` backed by a FHIR R4 server.

    Thread-safe: each thread gets its own ``requests.Session`` (unless one is
    passed in), and the local holds are guarded by a lock.
    """

    def __init__(
        self,
        base_url: str,
        visit_type_codes: Optional[Mapping[str, str]] = None,
        schedule_ids: Sequence[str] = (),
        timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
        auth_token: Optional[str] = None,
        session: Any = None,
        clock: Clock = utc_now,
    ) -> None:
        """Configures the backend; nothing is sent until the first call.

        Args:
            base_url: The FHIR service base URL, e.g. ``https://fhir.example/r4``.
            visit_type_codes: Visit type -> ``"system|code"`` (or just ``"code"``
                of ``VISIT_TYPE_SYSTEM``) of ``Slot.serviceType``. If None, every
                visit type ``x`` is the code ``x`` of ``VISIT_TYPE_SYSTEM``.
            schedule_ids: Schedules whose Slots are offered (``id`` or
                ``Schedule/id``); empty for all.
            timeout: Seconds to wait for each HTTP request.
            auth_token: Bearer token for the ``Authorization`` header.
            session: A ``requests.Session`` to use for every call, e.g. one with
                client certificates. By default each thread makes its own.
            clock: The current time (tests fix it).

        Raises:
            ValueError: The base URL is not http(s) or the timeout is not positive.
        """
        if not re.match(r"^https?://[^/]", base_url or ""):
            raise ValueError(
                f"the FHIR base URL must be http(s)://..., not {base_url!r}"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self._base_url = base_url.rstrip("/")
        self._visit_types: Optional[Dict[str, Tuple[str, str]]] = (
            None
            if visit_type_codes is None
            else {key: _parse_code(value) for key, value in visit_type_codes.items()}
        )
        self._schedules = tuple(
            s if s.startswith("Schedule/") else f"Schedule/{s}"
            for s in (i.strip() for i in schedule_ids)
            if s
        )
        self._timeout = timeout
        self._auth_token = auth_token
        self._session = session
        self._clock = clock
        self._local = threading.local()
        self._holds: Dict[str, Hold] = {}
        self._holds_lock = threading.Lock()

    @classmethod
    def from_settings(cls, config: Settings) -> FhirScheduler:
        """Builds the backend from the settings (see the module docstring).

        Raises:
            ValueError: ``FHIR_BASE_URL`` is missing, or a setting is malformed.
        """
        if not config.fhir_base_url:
            raise ValueError(
                "FHIR_BASE_URL is not set: the FHIR scheduler needs the base URL of "
                "the clinic's FHIR R4 server, e.g. https://fhir.example.org/r4"
            )
        return cls(
            config.fhir_base_url,
            visit_type_codes=_parse_visit_types(config.fhir_visit_type_codes),
            schedule_ids=config.fhir_schedule_ids,
            timeout=config.scheduler_timeout,
            auth_token=config.fhir_auth_token,
        )

    # --- the Scheduler protocol -----------------------------------------------------

    def find_slots(
        self,
        visit_type: str,
        earliest: datetime,
        latest: datetime,
        limit: int = 5,
    ) -> List[Slot]:
        """Free slots of ``visit_type`` starting in [earliest, latest), soonest first.

        One Slot search; slots that start in the past or are held here are left
        out. The results are filtered and sorted again locally, so a server that
        ignores ``_sort`` or reads the date range loosely cannot widen them.

        Raises:
            ValueError: A naive datetime, or a visit type without a configured code.
            BackendUnavailable: The server cannot be reached or answered an error.
        """
        window = search_window(earliest, latest, limit, self._clock())
        system, code = self._service_type(visit_type)
        if window is None:
            return []
        earliest, latest = window
        held = self._held_slot_ids()
        params = [
            ("status", "free"),
            ("start", f"ge{_instant(earliest)}"),
            ("start", f"lt{_instant(latest, round_up=True)}"),
            ("service-type", f"{_escape(system)}|{_escape(code)}"),
        ]
        if self._schedules:
            params.append(("schedule", ",".join(map(_escape, self._schedules))))
        params += [("_sort", "start"), ("_count", str(limit + len(held)))]
        slots = [
            slot
            for resource in self._search("Slot", params)
            if resource.get("status") == "free" and resource.get("id") not in held
            for slot in [_slot_from_resource(resource, visit_type)]
            if slot is not None and earliest <= slot.start < latest
        ]
        return sorted(slots, key=lambda s: s.start)[:limit]

    def hold(self, slot: Slot, ttl: timedelta = timedelta(minutes=10)) -> Hold:
        """Reserves ``slot`` in this process for ``ttl`` (see the module docstring).

        Raises:
            ValueError: ``ttl`` is not positive.
            SlotUnavailable: The Slot is gone, not free, past, or held here.
            BackendUnavailable: The server cannot be reached or answered an error.
        """
        positive_ttl(ttl)
        resource, _ = self._read_slot(slot.slot_id)
        now = self._clock()
        _require_bookable(resource, now)
        with self._holds_lock:
            self._drop_expired_holds(now)
            if any(h.slot.slot_id == slot.slot_id for h in self._holds.values()):
                raise SlotUnavailable("the slot is held by someone else")
            hold = Hold(hold_id=uuid.uuid4().hex, slot=slot, expires_at=now + ttl)
            self._holds[hold.hold_id] = hold
        return hold

    def release(self, hold_id: str) -> None:
        """Drops a local hold; unknown or expired holds are ignored."""
        with self._holds_lock:
            self._holds.pop(hold_id, None)

    def book(
        self,
        slot: Slot,
        patient: Patient,
        idempotency_key: str,
        hold_id: Optional[str] = None,
        reminder_consent: bool = False,
    ) -> Booking:
        """Books ``slot`` with one transaction: Slot busy (If-Match) + Appointment.

        ``reminder_consent`` is stored as an extension of the Appointment.

        A booking made earlier with the same ``idempotency_key`` is returned as it
        is. If the request times out, the booking may or may not have been made;
        calling again with the same key returns it if it was.

        Raises:
            InvalidRequest: No key, a phone number that is not E.164, or no name.
            SlotUnavailable: The slot is gone, taken, held by another hold, or
                changed while booking (409/412/422 from the server).
            BackendUnavailable: The server cannot be reached, timed out, answered
                an error, or does not version Slots.
        """
        checked_idempotency_key(idempotency_key)
        patient = checked_patient(patient)
        existing = self._find_by_key(idempotency_key)
        if existing is not None:
            return self._booking_from(existing)
        self._check_not_held_by_others(slot.slot_id, hold_id)
        current, version = self._read_slot(slot.slot_id)
        now = self._clock()
        try:
            _require_bookable(current, now)
        except SlotUnavailable:
            return self._replay_or_unavailable(idempotency_key)
        reference = self._new_reference()
        bundle = _booking_bundle(
            current,
            version,
            self._slot_service_type(current, slot.visit_type),
            patient,
            reference,
            idempotency_key,
            now,
            reminder_consent,
        )
        response = self._http("POST", "", body=bundle)
        if response.status_code in CONFLICT_STATUSES:
            logger.info("slot %s was taken while booking", slot.slot_id)
            return self._replay_or_unavailable(idempotency_key)
        entries = self._transaction_entries(response, "booking", expected=2)
        self._forget_holds_of(slot.slot_id)
        if _entry_status(entries[1]) != 201:  # the key was used by a concurrent call
            return self._settle_concurrent_replay(idempotency_key, current, entries[0])
        logger.info("booked slot %s", slot.slot_id)
        booked = _slot_from_resource(current, slot.visit_type)
        if booked is None:
            raise BackendUnavailable("the FHIR server returned a Slot without times")
        return Booking(reference, booked, patient, BOOKED, reminder_consent)

    def cancel(self, reference: str, phone: str, idempotency_key: str) -> Booking:
        """Cancels the Appointment and frees its Slot in one transaction.

        Cancelling an already cancelled booking returns it unchanged; so does
        cancelling one that can no longer be cancelled (e.g. ``fulfilled``), whose
        status the caller then sees. Cancelling is idempotent by state, so the key
        is only checked, not stored. If the Appointment or Slot changes while
        cancelling (412), the cancel is retried on the new versions.

        Raises:
            InvalidRequest: No idempotency key.
            BookingNotFound: No booking has this reference and phone.
            BackendUnavailable: The server cannot be reached or answered an error.
        """
        checked_idempotency_key(idempotency_key)
        for _ in range(_CANCEL_ATTEMPTS):
            appointment = self._find_booking_resource(reference, phone)
            if appointment.get("status") not in CANCELLABLE_STATUSES:
                return self._booking_from(appointment)
            cancelled = {
                **appointment,
                "status": "cancelled",
                "cancelationReason": {
                    "coding": [{"system": CANCELLATION_REASON_SYSTEM, "code": "pat"}]
                },
            }
            entries = [_put_entry(cancelled, _version(appointment))]
            slot_entry = self._slot_release_entry(appointment)
            if slot_entry is not None:
                entries.append(slot_entry)
            response = self._http("POST", "", body=_transaction(entries))
            if response.status_code in CONFLICT_STATUSES:
                continue
            self._transaction_entries(response, "cancel", expected=len(entries))
            logger.info("cancelled appointment %s", appointment.get("id"))
            return self._booking_from(cancelled)
        raise BackendUnavailable("the appointment kept changing while cancelling it")

    def get_booking(self, reference: str, phone: str) -> Booking:
        """The booking with this reference code and phone number.

        Raises:
            BookingNotFound: No booking has both (which one was wrong is not said).
            BackendUnavailable: The server cannot be reached or answered an error.
        """
        return self._booking_from(self._find_booking_resource(reference, phone))

    def confirm(self, reference: str, phone: str) -> Booking:
        """Marks the Appointment confirmed (an extension); see :meth:`_mark`."""
        return self._mark(reference, phone, REMINDER_CONFIRMED_URL)

    def note_reschedule_request(self, reference: str, phone: str) -> Booking:
        """Marks that the patient asked to move it (an extension); see :meth:`_mark`."""
        return self._mark(reference, phone, RESCHEDULE_REQUESTED_URL)

    def active_bookings_between(
        self, start: datetime, end: datetime, provider: Optional[str] = None
    ) -> List[Booking]:
        """The assistant's booked Appointments overlapping [start, end), soonest first.

        ``provider`` is a Schedule reference (``Schedule/dr-lee``), as in slots.
        Searched by start from ``start - LONGEST_VISIT`` (FHIR R4 cannot search
        Appointments by their end), the overlapping ones kept.

        Raises:
            ValueError: A naive datetime.
            BackendUnavailable: The server cannot be reached or answered an error.
        """
        require_aware(start, "start")
        listed = self._appointments(start - LONGEST_VISIT, end, (BOOKED,))
        return overlapping(listed, start, end, provider)

    def bookings_between(self, start: datetime, end: datetime) -> List[Booking]:
        """The assistant's booked and cancelled Appointments starting in [start, end).

        Other statuses (``arrived``, ``fulfilled``...) are the clinic's own
        workflow after the visit has begun, which reminders know nothing of.

        Raises:
            ValueError: A naive datetime.
            BackendUnavailable: The server cannot be reached or answered an error.
        """
        return self._appointments(start, end, (BOOKED, CANCELLED))

    def _appointments(
        self, start: datetime, end: datetime, statuses: Sequence[str]
    ) -> List[Booking]:
        """The assistant's Appointments of ``statuses`` starting in [start, end).

        Soonest first; checked again here, so a server that reads the search
        loosely cannot widen it.
        """
        require_aware(start, "start")
        require_aware(end, "end")
        params = [
            ("identifier", _token(BOOKING_REFERENCE_SYSTEM, "")),
            ("status", ",".join(statuses)),
            ("date", f"ge{_instant(start)}"),
            ("date", f"lt{_instant(end, round_up=True)}"),
            ("_sort", "date"),
            ("_count", str(_LIST_PAGE_SIZE)),
        ]
        bookings = [
            self._booking_from(appointment)
            for appointment in self._search_all("Appointment", params)
            if appointment.get("status") in statuses
            and _identifier_value(appointment, BOOKING_REFERENCE_SYSTEM)
        ]
        return sorted(
            (booking for booking in bookings if start <= booking.slot.start < end),
            key=lambda booking: booking.slot.start,
        )

    def _mark(self, reference: str, phone: str, url: str) -> Booking:
        """Sets the extension ``url`` true on an active Appointment (If-Match PUT).

        Already set, or not active (cancelled, fulfilled): returned unchanged.

        Raises:
            BookingNotFound: No booking has this reference and phone.
            BackendUnavailable: The server cannot be reached, answered an error,
                or the Appointment kept changing.
        """
        for _ in range(_CANCEL_ATTEMPTS):
            appointment = self._find_booking_resource(reference, phone)
            if appointment.get("status") != "booked" or _flag(appointment, url):
                return self._booking_from(appointment)
            marked = {
                **appointment,
                "extension": [
                    *appointment.get("extension", []),
                    {"url": url, "valueBoolean": True},
                ],
            }
            entries = [_put_entry(marked, _version(appointment))]
            response = self._http("POST", "", body=_transaction(entries))
            if response.status_code in CONFLICT_STATUSES:
                continue
            self._transaction_entries(response, "reminder reply", expected=1)
            logger.info("noted a reminder reply on appointment %s", marked.get("id"))
            return self._booking_from(marked)
        raise BackendUnavailable("the appointment kept changing while updating it")

    # --- booking helpers ------------------------------------------------------------

    def _find_by_key(self, idempotency_key: str) -> Optional[Resource]:
        """The Appointment created with this idempotency key, if any."""
        matches = self._search(
            "Appointment",
            [("identifier", _token(IDEMPOTENCY_KEY_SYSTEM, idempotency_key))],
        )
        return matches[0] if matches else None

    def _replay_or_unavailable(self, idempotency_key: str) -> Booking:
        """After a conflict: our own earlier booking if there is one, else the error.

        A concurrent call with the same key may have booked the slot a moment ago;
        that is a success for the caller, not a taken slot.
        """
        existing = self._find_by_key(idempotency_key)
        if existing is not None:
            return self._booking_from(existing)
        raise SlotUnavailable("the slot was taken")

    def _settle_concurrent_replay(
        self, idempotency_key: str, slot: Resource, slot_entry: Resource
    ) -> Booking:
        """The transaction went through but ``ifNoneExist`` found an Appointment.

        A concurrent call with the same key created that Appointment between our
        search and our transaction. If it is for another Slot (or no longer
        active), our transaction still made this Slot busy with no Appointment on
        it, so the Slot is freed again.
        """
        existing = self._find_by_key(idempotency_key)
        if existing is None:
            raise BackendUnavailable("the FHIR server lost a conditional create match")
        if (
            _slot_id_of(existing) != slot.get("id")
            or existing.get("status") not in ACTIVE_STATUSES
        ):
            etag = slot_entry.get("response", {}).get("etag", "")
            version = re.sub(r'^(W/)?"|"$', "", etag)
            freed = {**slot, "status": "free"}
            response = self._http(
                "POST", "", body=_transaction([_put_entry(freed, version)])
            )
            if response.status_code != 200:
                logger.warning(
                    "slot %s is busy without an appointment; free it by hand",
                    slot.get("id"),
                )
        return self._booking_from(existing)

    def _new_reference(self) -> str:
        """A random reference code that no Appointment has yet."""
        for _ in range(_REFERENCE_ATTEMPTS):
            reference = new_reference()
            if not self._search(
                "Appointment",
                [("identifier", _token(BOOKING_REFERENCE_SYSTEM, reference))],
            ):
                return reference
        raise BackendUnavailable("no unused booking reference code was found")

    def _slot_service_type(self, slot: Resource, visit_type: str) -> List[Any]:
        """The Appointment's serviceType: the Slot's own, else the configured code."""
        if slot.get("serviceType"):
            return list(slot["serviceType"])
        system, code = self._service_type(visit_type)
        return [{"coding": [{"system": system, "code": code}]}]

    def _slot_release_entry(self, appointment: Resource) -> Optional[Resource]:
        """A PUT setting the Appointment's Slot free, if it should be freed.

        Only a ``busy`` Slot is freed (staff may have blocked it since), and only
        if no other active Appointment uses it.
        """
        slot_id = _slot_id_of(appointment)
        if slot_id is None:
            return None
        try:
            slot, version = self._read_slot(slot_id)
        except SlotUnavailable:
            return None
        if slot.get("status") != "busy":
            return None
        others = self._search(
            "Appointment",
            [
                ("slot", f"Slot/{_escape(slot_id)}"),
                ("status", ",".join(ACTIVE_STATUSES)),
            ],
        )
        if any(other.get("id") != appointment.get("id") for other in others):
            return None
        return _put_entry({**slot, "status": "free"}, version)

    def _find_booking_resource(self, reference: str, phone: str) -> Resource:
        """The Appointment with this reference code whose patient has this phone."""
        code = normalize_reference(reference)
        wanted = _normalize_phone(phone)
        if not code or not wanted:
            raise BookingNotFound("no booking has this reference and phone number")
        for appointment in self._search(
            "Appointment", [("identifier", _token(BOOKING_REFERENCE_SYSTEM, code))]
        ):
            if appointment.get("status") == "entered-in-error":
                continue
            if _normalize_phone(_patient_of(appointment).phone) == wanted:
                return appointment
        raise BookingNotFound("no booking has this reference and phone number")

    def _booking_from(self, appointment: Resource) -> Booking:
        """A :class:`Booking` from one of our Appointments (provider from its Slot)."""
        reference = _identifier_value(appointment, BOOKING_REFERENCE_SYSTEM)
        start = _parse_instant(appointment.get("start"))
        end = _parse_instant(appointment.get("end"))
        slot_id = _slot_id_of(appointment)
        if not reference or start is None or end is None or slot_id is None:
            raise BackendUnavailable(
                "the FHIR server returned an unreadable Appointment"
            )
        provider = ""
        try:
            slot, _ = self._read_slot(slot_id)
            provider = _schedule_of(slot)
        except SlotUnavailable:
            pass
        status = str(appointment.get("status", ""))
        return Booking(
            reference=reference,
            slot=Slot(
                slot_id=slot_id,
                start=start,
                end=end,
                visit_type=self._visit_type_of(appointment.get("serviceType")),
                provider=provider,
            ),
            patient=_patient_of(appointment),
            status=_STATUSES.get(status, status),
            reminder_consent=_flag(appointment, REMINDER_CONSENT_URL),
            confirmed=_flag(appointment, REMINDER_CONFIRMED_URL),
            reschedule_requested=_flag(appointment, RESCHEDULE_REQUESTED_URL),
        )

    # --- visit types ----------------------------------------------------------------

    def _service_type(self, visit_type: str) -> Tuple[str, str]:
        """The ``(system, code)`` of a visit type."""
        if self._visit_types is None:
            return VISIT_TYPE_SYSTEM, visit_type
        try:
            return self._visit_types[visit_type]
        except KeyError:
            raise ValueError(
                f"no FHIR service type is configured for visit type {visit_type!r}"
            ) from None

    def _visit_type_of(self, service_types: Any) -> str:
        """Our visit type for a serviceType list; the first code if none is ours."""
        codings = [
            (coding.get("system"), coding.get("code"))
            for concept in service_types or []
            for coding in concept.get("coding", [])
        ]
        known = (
            {(VISIT_TYPE_SYSTEM, code): code for _, code in codings}
            if self._visit_types is None
            else {value: key for key, value in self._visit_types.items()}
        )
        for coding in codings:
            if coding in known:
                return str(known[coding])
        return str(codings[0][1]) if codings else ""

    # --- holds ----------------------------------------------------------------------

    def _drop_expired_holds(self, now: datetime) -> None:
        """Forgets expired holds; the caller holds ``_holds_lock``."""
        for hold_id in [h for h, hold in self._holds.items() if hold.expires_at <= now]:
            del self._holds[hold_id]

    def _held_slot_ids(self) -> Set[str]:
        """Slots under an active local hold."""
        with self._holds_lock:
            self._drop_expired_holds(self._clock())
            return {hold.slot.slot_id for hold in self._holds.values()}

    def _check_not_held_by_others(self, slot_id: str, hold_id: Optional[str]) -> None:
        """``SlotUnavailable`` if another active local hold has the slot."""
        with self._holds_lock:
            self._drop_expired_holds(self._clock())
            if any(
                hold.slot.slot_id == slot_id and hold.hold_id != hold_id
                for hold in self._holds.values()
            ):
                raise SlotUnavailable("the slot is held by someone else")

    def _forget_holds_of(self, slot_id: str) -> None:
        """Drops the holds of a slot that has just been booked."""
        with self._holds_lock:
            for hold_id in [
                h for h, hold in self._holds.items() if hold.slot.slot_id == slot_id
            ]:
                del self._holds[hold_id]

    # --- HTTP -----------------------------------------------------------------------

    def _client(self) -> Any:
        """The session for this thread (``requests.Session`` is not thread-safe)."""
        if self._session is not None:
            return self._session
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _http(
        self,
        method: str,
        path: str,
        params: Optional[List[Tuple[str, str]]] = None,
        body: Optional[Resource] = None,
    ) -> Any:
        """Sends one request; connection errors, timeouts and 5xx are unavailable.

        Returns the ``requests.Response`` for the caller to read its status.
        """
        headers = {"Accept": FHIR_JSON}
        if body is not None:
            headers["Content-Type"] = FHIR_JSON
        if self._auth_token:
            headers["Authorization"] = f"Bearer {self._auth_token}"
        what = f"{method} {re.split('[/?]', path)[0] or '[base]'}"
        try:
            response = self._client().request(
                method,
                # A page link may be the base URL's own ("?_getpages=...", HAPI).
                f"{self._base_url}{'' if path[:1] in ('', '?') else '/'}{path}",
                params=params,
                data=None if body is None else json.dumps(body).encode("utf-8"),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            logger.warning("FHIR %s failed: %s", what, type(error).__name__)
            raise BackendUnavailable(
                f"the FHIR server did not answer {what} ({type(error).__name__})"
            ) from error
        if response.status_code >= 500:
            logger.warning("FHIR %s answered %s", what, response.status_code)
            raise BackendUnavailable(
                f"the FHIR server answered {response.status_code} to {what}"
            )
        return response

    def _json(self, response: Any, what: str) -> Resource:
        """The JSON object of a 2xx answer; any other answer is unavailable."""
        if not 200 <= response.status_code < 300:
            logger.warning("FHIR %s answered %s", what, response.status_code)
            raise BackendUnavailable(
                f"the FHIR server answered {response.status_code} to {what}"
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise BackendUnavailable(f"the FHIR server's answer to {what} is not JSON")
        return data

    def _search(
        self, resource_type: str, params: List[Tuple[str, str]]
    ) -> List[Resource]:
        """The matching resources of a search's first page (search.html)."""
        bundle = self._json(
            self._http("GET", resource_type, params=params), f"{resource_type} search"
        )
        return _matches(bundle, resource_type)

    def _search_all(
        self, resource_type: str, params: List[Tuple[str, str]]
    ) -> List[Resource]:
        """Every match of a search, following ``next`` links (search.html#paging).

        A link is followed only below this server's base URL, so the bearer token
        is never sent anywhere else.
        """
        what = f"{resource_type} search"
        bundle = self._json(self._http("GET", resource_type, params=params), what)
        found = _matches(bundle, resource_type)
        for _ in range(_MAX_PAGES):
            link = _next_link(bundle)
            if link is None:
                return found
            below = link[len(self._base_url) :]
            if not link.startswith(self._base_url) or below[:1] not in ("/", "?"):
                raise BackendUnavailable(
                    f"the FHIR server's next page of a {what} is not on its base URL"
                )
            bundle = self._json(self._http("GET", below.lstrip("/")), what)
            found += _matches(bundle, resource_type)
        raise BackendUnavailable(f"the FHIR server's {what} has too many pages")

    def _read_slot(self, slot_id: str) -> Tuple[Resource, str]:
        """The Slot and its version (http.html#read); ``SlotUnavailable`` if gone."""
        response = self._http("GET", f"Slot/{quote(slot_id, safe='')}")
        if response.status_code in (404, 410):
            raise SlotUnavailable("the slot no longer exists")
        slot = self._json(response, "Slot read")
        version = str((slot.get("meta") or {}).get("versionId") or "")
        if not version:
            version = re.sub(r'^(W/)?"|"$', "", response.headers.get("ETag", ""))
        if not version:
            raise BackendUnavailable(
                "the FHIR server does not version Slots, so booking cannot be safe"
            )
        return slot, version

    def _transaction_entries(
        self, response: Any, what: str, expected: int
    ) -> List[Resource]:
        """The entries of a transaction-response Bundle, one per request entry."""
        bundle = self._json(response, f"{what} transaction")
        entries = bundle.get("entry") or []
        if bundle.get("type") != "transaction-response" or len(entries) != expected:
            raise BackendUnavailable(
                f"the FHIR server's answer to the {what} transaction is malformed"
            )
        return list(entries)


# --- module helpers -----------------------------------------------------------------


def _matches(bundle: Resource, resource_type: str) -> List[Resource]:
    """The resources of ``resource_type`` in a searchset Bundle's entries."""
    return [
        entry["resource"]
        for entry in bundle.get("entry") or []
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == resource_type
    ]


def _next_link(bundle: Resource) -> Optional[str]:
    """The URL of a searchset Bundle's ``next`` page (bundle.html), if any."""
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def _parse_code(value: str) -> Tuple[str, str]:
    """``"system|code"`` -> ``(system, code)``; a bare code is in VISIT_TYPE_SYSTEM."""
    system, separator, code = value.strip().rpartition("|")
    if not code:
        raise ValueError(f"visit type code {value!r} has no code")
    return (system if separator else VISIT_TYPE_SYSTEM), code


def _parse_visit_types(raw: str) -> Optional[Dict[str, str]]:
    """``FHIR_VISIT_TYPE_CODES``: ``visit_type=system|code`` pairs, or None."""
    if not raw.strip():
        return None
    pairs: Dict[str, str] = {}
    for item in raw.split(","):
        key, separator, code = item.partition("=")
        if not separator or not key.strip() or not code.strip():
            raise ValueError(
                f"FHIR_VISIT_TYPE_CODES items look like visit_type=system|code, "
                f"not {item.strip()!r}"
            )
        pairs[key.strip()] = code.strip()
    return pairs


def _normalize_phone(phone: str) -> str:
    """A phone number without spaces, dashes, dots or parentheses."""
    return re.sub(r"[\s().-]", "", phone or "")


def _escape(value: str) -> str:
    """Escapes backslash, comma, bar and dollar in a search value (search.html)."""
    return re.sub(r"([\\,|$])", r"\\\1", value)


def _token(system: str, value: str) -> str:
    """A ``system|code`` token search value."""
    return f"{_escape(system)}|{_escape(value)}"


def _instant(value: datetime, round_up: bool = False) -> str:
    """An aware datetime as a FHIR instant with its offset, to the second."""
    if round_up and value.microsecond:
        value = value.replace(microsecond=0) + timedelta(seconds=1)
    return value.replace(microsecond=0).isoformat()


def _parse_instant(value: Any) -> Optional[datetime]:
    """A FHIR instant (datatypes.html#instant) as an aware datetime, else None."""
    match = _INSTANT.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    return datetime.fromisoformat(f"{match['head']}.{fraction}{zone}")


def _schedule_of(slot: Resource) -> str:
    """The Slot's ``schedule`` reference, e.g. ``Schedule/dr-lee``."""
    schedule = slot.get("schedule")
    return str(schedule.get("reference", "")) if isinstance(schedule, dict) else ""


def _slot_from_resource(resource: Resource, visit_type: str) -> Optional[Slot]:
    """A :class:`Slot` from a FHIR Slot, or None if it is malformed."""
    start = _parse_instant(resource.get("start"))
    end = _parse_instant(resource.get("end"))
    slot_id = resource.get("id")
    if start is None or end is None or end <= start or not isinstance(slot_id, str):
        logger.warning("skipping malformed Slot %s", slot_id)
        return None
    return Slot(
        slot_id=slot_id,
        start=start,
        end=end,
        visit_type=visit_type,
        provider=_schedule_of(resource),
    )


def _require_bookable(slot: Resource, now: datetime) -> None:
    """``SlotUnavailable`` unless the Slot is free and starts in the future."""
    start = _parse_instant(slot.get("start"))
    if slot.get("status") != "free":
        raise SlotUnavailable("the slot is no longer free")
    if start is None or start <= now:
        raise SlotUnavailable("the slot has already started")


def _version(resource: Resource) -> str:
    """``meta.versionId`` of a resource from a search (needed for If-Match)."""
    version = (resource.get("meta") or {}).get("versionId")
    if not version:
        raise BackendUnavailable("the FHIR server does not report resource versions")
    return str(version)


def _slot_id_of(appointment: Resource) -> Optional[str]:
    """The id of the first Slot the Appointment references."""
    for slot in appointment.get("slot") or []:
        reference = slot.get("reference") if isinstance(slot, dict) else None
        if isinstance(reference, str) and "Slot/" in reference:
            return reference.rsplit("Slot/", 1)[1].split("/")[0]
    return None


def _identifier_value(resource: Resource, system: str) -> str:
    """The value of the resource's identifier in ``system``; empty if none."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == system:
            return str(identifier.get("value", ""))
    return ""


def _patient_of(appointment: Resource) -> Patient:
    """The contained Patient the Appointment's participant references."""
    actors = {
        str(p.get("actor", {}).get("reference", ""))
        for p in appointment.get("participant") or []
        if isinstance(p, dict)
    }
    for contained in appointment.get("contained") or []:
        if (
            contained.get("resourceType") == "Patient"
            and f"#{contained.get('id')}" in actors
        ):
            names = contained.get("name") or [{}]
            phones = [
                t.get("value", "")
                for t in contained.get("telecom") or []
                if t.get("system") == "phone"
            ]
            return Patient(
                name=str(names[0].get("text", "")),
                phone=str(phones[0] if phones else ""),
            )
    return Patient(name="", phone="")


def _flag(resource: Resource, url: str) -> bool:
    """Whether ``resource`` has the extension ``url`` with ``valueBoolean`` true."""
    extensions = resource.get("extension")
    return isinstance(extensions, list) and any(
        isinstance(extension, dict)
        and extension.get("url") == url
        and extension.get("valueBoolean") is True
        for extension in extensions
    )


def _entry_status(entry: Resource) -> int:
    """The HTTP status code of a transaction-response entry, e.g. 201."""
    status = str(entry.get("response", {}).get("status", ""))
    code = status.split(" ")[0]
    return int(code) if code.isdigit() else 0


def _transaction(entries: List[Resource]) -> Resource:
    """A transaction Bundle (bundle.html, http.html#transaction)."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _put_entry(resource: Resource, version: str) -> Resource:
    """A version-aware update entry: PUT with ``ifMatch: W/"<version>"``."""
    body = {key: value for key, value in resource.items() if key != "meta"}
    return {
        "resource": body,
        "request": {
            "method": "PUT",
            "url": f"{body['resourceType']}/{body['id']}",
            "ifMatch": f'W/"{version}"',
        },
    }


def _booking_bundle(
    slot: Resource,
    version: str,
    service_type: List[Any],
    patient: Patient,
    reference: str,
    idempotency_key: str,
    created: datetime,
    reminder_consent: bool,
) -> Resource:
    """The booking transaction: the Slot made busy, and a conditional Appointment."""
    appointment = {
        "resourceType": "Appointment",
        "extension": [{"url": REMINDER_CONSENT_URL, "valueBoolean": reminder_consent}],
        "status": "booked",
        "identifier": [
            {"system": BOOKING_REFERENCE_SYSTEM, "value": reference},
            {"system": IDEMPOTENCY_KEY_SYSTEM, "value": idempotency_key},
        ],
        "serviceType": service_type,
        "start": slot["start"],
        "end": slot["end"],
        "slot": [{"reference": f"Slot/{slot['id']}"}],
        "created": created.isoformat(timespec="seconds"),
        "contained": [
            {
                "resourceType": "Patient",
                "id": "patient",
                "name": [{"text": patient.name}],
                "telecom": [
                    {"system": "phone", "value": patient.phone, "use": "mobile"}
                ],
            }
        ],
        "participant": [
            {
                "actor": {"reference": "#patient"},
                "required": "required",
                "status": "accepted",
            }
        ],
    }
    condition = "identifier=" + quote(
        _token(IDEMPOTENCY_KEY_SYSTEM, idempotency_key), safe=":|\\"
    )
    return _transaction(
        [
            _put_entry({**slot, "status": "busy"}, version),
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": appointment,
                "request": {
                    "method": "POST",
                    "url": "Appointment",
                    "ifNoneExist": condition,
                },
            },
        ]
    )
