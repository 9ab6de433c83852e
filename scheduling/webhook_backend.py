"""A scheduler for clinics whose system is reached through a signed JSON webhook.

The clinic's developer implements the small contract of ``docs/webhook_contract.md``
(``POST`` operations under one base URL); this module is the assistant's side of
it. Every request body is serialised once and signed, together with a timestamp,
with HMAC-SHA256 and a secret shared with the clinic, so the receiver can refuse
forged and replayed requests.

Why every operation may be retried: searching, reading or listing bookings and
releasing a hold change nothing, or nothing more the second time; creating a hold,
booking and cancelling carry an ``Idempotency-Key`` that the contract obliges the
receiver to honour (the same key returns the first answer). Retrying a booking
after a timeout is what keeps a patient from being told "that failed" about an
appointment that was in fact made. Only failures that may be transient are retried
(connection errors, timeouts, 429 and 5xx); any other 4xx is an answer, never
retried.

Settings (read by ``clinic_common.settings``; :meth:`WebhookScheduler.from_settings`):
    SCHEDULER_WEBHOOK_URL: the base URL, ``https://`` (plain ``http://`` only to a
        loopback address, since requests carry patients' names and phone numbers).
    SCHEDULER_WEBHOOK_SECRET: the shared signing secret, at least 16 characters.
    SCHEDULER_TIMEOUT: seconds to wait for each connection and each read (default 5).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

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
    InvalidRequest,
    ListingUnsupported,
    Patient,
    Slot,
    SlotUnavailable,
    checked_idempotency_key,
    checked_patient,
    normalize_reference,
    overlapping,
    require_aware,
    search_window,
    utc_now,
)

logger = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 16

TIMESTAMP_HEADER = "X-Clinicbot-Timestamp"
SIGNATURE_HEADER = "X-Clinicbot-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_VERSION = "v1"

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_SUCCESS = frozenset({200, 201})
# Visible ASCII only: anything else cannot travel in an HTTP header unchanged.
_ERROR_CODE = re.compile(r"^[a-z0-9_]{1,64}$")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)

T = TypeVar("T")

# Failures of the connection itself, which another attempt may not meet.
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


class WebhookConfigError(ValueError):
    """A setting of the webhook backend is missing, malformed or unsafe."""


@dataclass(frozen=True)
class _Operation:
    """One operation of the contract: where it is posted and how it may be retried.

    Attributes:
        path: appended to the base URL, e.g. ``bookings/cancel``.
        keyed: sends an ``Idempotency-Key``, which is what makes a changing
            operation safe to send twice.
        retry_safe: a second identical request cannot change more than the first.
    """

    path: str
    keyed: bool
    retry_safe: bool


SEARCH = _Operation("slots/search", keyed=False, retry_safe=True)  # reads only
HOLD = _Operation("holds", keyed=True, retry_safe=True)
RELEASE = _Operation("holds/release", keyed=False, retry_safe=True)  # a no-op twice
BOOK = _Operation("bookings", keyed=True, retry_safe=True)
CANCEL = _Operation("bookings/cancel", keyed=True, retry_safe=True)
GET = _Operation("bookings/get", keyed=False, retry_safe=True)  # reads only
# The patient's replies to a reminder: setting a flag twice changes nothing more.
CONFIRM = _Operation("bookings/confirm", keyed=False, retry_safe=True)
RESCHEDULE_REQUEST = _Operation(
    "bookings/reschedule-request", keyed=False, retry_safe=True
)
# The bookings of a time range, for reminders; optional for receivers (a 404 means
# they have none).
LIST = _Operation("bookings/list", keyed=False, retry_safe=True)  # reads only
# Pages of bookings/list followed before a receiver's cursors count as a loop.
_MAX_PAGES = 1000


class _TransientError(Exception):
    """An attempt failed in a way that another attempt may not (internal only)."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Clinicbot-Signature`` value of ``body`` sent at ``timestamp``.

    The timestamp is part of the signed bytes, so a captured request cannot be
    replayed with a fresh timestamp once the receiver's window has passed.
    """
    signed = timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def format_rfc3339(value: datetime, name: str = "datetime") -> str:
    """``value`` as RFC 3339 with its offset; naive datetimes raise ``ValueError``.

    An offset with seconds (historic local mean time) has no RFC 3339 form, so such
    a value is sent in UTC instead.
    """
    require_aware(value, name)
    offset = value.utcoffset()
    if offset is not None and offset.total_seconds() % 60:
        value = value.astimezone(timezone.utc)
    return value.isoformat()


def parse_rfc3339(text: str) -> datetime:
    """Parses an RFC 3339 date-time, which must carry ``Z`` or a numeric offset.

    Python 3.10's ``fromisoformat`` takes neither ``Z`` nor fractions other than 3
    or 6 digits, both of which RFC 3339 allows, hence the normalisation.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time with an offset")
    day, clock, fraction, offset = match.groups()
    micro = "." + fraction[1:7].ljust(6, "0") if fraction else ""
    zone = "+00:00" if offset in ("Z", "z") else offset
    return datetime.fromisoformat(f"{day}T{clock}{micro}{zone}")


class WebhookScheduler:
    """The :class:`~scheduling.base.Scheduler` of a signed JSON webhook.

    Safe to share between threads: without an injected ``session`` each thread
    uses its own ``requests.Session`` (a session is not documented thread-safe).
    """

    def __init__(
        self,
        base_url: str,
        secret: str,
        timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.2,
        session: Optional[requests.Session] = None,
        clock: Clock = utc_now,
    ) -> None:
        """Checks the settings; opens no connection.

        Args:
            base_url: the contract's base URL; operations are posted below it.
            secret: the shared HMAC secret, at least 16 characters.
            timeout: seconds for connecting and for each read of one attempt.
            retries: further attempts after the first, for transient failures.
            backoff: seconds before the first retry; doubles each retry, jittered.
            session: a ``requests.Session`` to use instead of per-thread ones.
            clock: the current time, for the signature timestamp (tests move it).
        """
        self._base_url = _checked_base_url(base_url)
        if len(secret) < MIN_SECRET_LENGTH:
            raise WebhookConfigError(
                f"the webhook secret must be at least {MIN_SECRET_LENGTH} characters"
            )
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise WebhookConfigError(
                "timeout must be positive, retries and backoff not negative"
            )
        self._secret = secret.encode("utf-8")
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._session = session
        self._clock = clock
        self._local = threading.local()

    @classmethod
    def from_settings(cls, config: Settings) -> WebhookScheduler:
        """Builds the scheduler from ``SCHEDULER_WEBHOOK_*`` and ``SCHEDULER_TIMEOUT``.

        Raises:
            WebhookConfigError: naming the setting that is missing or wrong; the
                secret's value is never part of the message.
        """
        url, secret = config.scheduler_webhook_url, config.scheduler_webhook_secret
        for name, value in (
            ("SCHEDULER_WEBHOOK_URL", url),
            ("SCHEDULER_WEBHOOK_SECRET", secret),
        ):
            if not value:
                raise WebhookConfigError(
                    f"{name} is not set; the webhook scheduler needs it"
                )
        if len(secret) < MIN_SECRET_LENGTH:
            raise WebhookConfigError(
                "SCHEDULER_WEBHOOK_SECRET is too short: use at least "
                f"{MIN_SECRET_LENGTH} random characters"
            )
        return cls(url, secret, timeout=config.scheduler_timeout)

    def __repr__(self) -> str:
        """Shows where requests go, never the secret."""
        return f"WebhookScheduler({self._base_url!r})"

    # The Scheduler protocol.

    def find_slots(
        self,
        visit_type: str,
        earliest: datetime,
        latest: datetime,
        limit: int = 5,
    ) -> List[Slot]:
        """Open slots of ``visit_type`` starting in [earliest, latest), soonest first.

        Sorted and cut to ``limit`` here too, so a receiver's slip in ordering
        cannot reorder what patients are offered.
        """
        if search_window(earliest, latest, limit) is None:
            return []  # as the other backends: nothing to ask for
        payload = {
            "visit_type": visit_type,
            "earliest": format_rfc3339(earliest, "earliest"),
            "latest": format_rfc3339(latest, "latest"),
            "limit": limit,
        }
        answer = self._call(SEARCH, payload)
        slots = _parsed(SEARCH, answer, _parse_slots)
        return sorted(slots, key=lambda slot: slot.start)[:limit]

    def hold(self, slot: Slot, ttl: timedelta = timedelta(minutes=10)) -> Hold:
        """Reserves ``slot`` for ``ttl``; raises ``SlotUnavailable`` if it is gone.

        The key is made here, once per call, so that only this call's retries
        share it.
        """
        seconds = int(ttl.total_seconds())
        if seconds < 1:
            raise ValueError("a hold must last at least one second")
        payload = {"slot_id": slot.slot_id, "ttl_seconds": seconds}
        answer = self._call(HOLD, payload, idempotency_key=uuid.uuid4().hex)
        return _parsed(HOLD, answer, _parse_hold)

    def release(self, hold_id: str) -> None:
        """Gives a held slot back; releasing an unknown or expired hold is a no-op."""
        self._call(RELEASE, {"hold_id": hold_id})

    def book(
        self,
        slot: Slot,
        patient: Patient,
        idempotency_key: str,
        hold_id: Optional[str] = None,
        reminder_consent: bool = False,
    ) -> Booking:
        """Books ``slot`` for ``patient``; the same key again returns the same booking.

        ``reminder_consent`` is sent for the receiver to store with the booking.

        Raises:
            SlotUnavailable: someone else booked or holds the slot.
            BackendUnavailable: the receiver could not be reached or answered badly.
            InvalidRequest: the patient's name or phone is unusable, or the key
                was used for a different request.
        """
        patient = checked_patient(patient)
        payload = {
            "slot_id": slot.slot_id,
            "patient": {"name": patient.name, "phone": patient.phone},
            "hold_id": hold_id,
            "reminder_consent": reminder_consent,
        }
        answer = self._call(BOOK, payload, idempotency_key=idempotency_key)
        return _parsed(BOOK, answer, _parse_booking)

    def cancel(self, reference: str, phone: str, idempotency_key: str) -> Booking:
        """Cancels the booking; ``BookingNotFound`` unless reference and phone match.

        Cancelling an already cancelled booking returns it unchanged.
        """
        phone = phone.strip()
        payload = {"reference": reference, "phone": phone}
        answer = self._call(CANCEL, payload, idempotency_key=idempotency_key)
        return _owned(CANCEL, _parsed(CANCEL, answer, _parse_booking), reference, phone)

    def get_booking(self, reference: str, phone: str) -> Booking:
        """The booking with this reference and phone, else ``BookingNotFound``."""
        phone = phone.strip()
        answer = self._call(GET, {"reference": reference, "phone": phone})
        return _owned(GET, _parsed(GET, answer, _parse_booking), reference, phone)

    def confirm(self, reference: str, phone: str) -> Booking:
        """The patient confirmed by replying to a reminder; errors as get."""
        return self._reply(CONFIRM, reference, phone)

    def note_reschedule_request(self, reference: str, phone: str) -> Booking:
        """The patient asked to move the booking; ``BookingNotFound`` as get."""
        return self._reply(RESCHEDULE_REQUEST, reference, phone)

    def _reply(self, operation: _Operation, reference: str, phone: str) -> Booking:
        """Posts a reply to a reminder; the answer is the booking as it is now."""
        phone = phone.strip()
        answer = self._call(operation, {"reference": reference, "phone": phone})
        return _owned(
            operation, _parsed(operation, answer, _parse_booking), reference, phone
        )

    def active_bookings_between(
        self, start: datetime, end: datetime, provider: Optional[str] = None
    ) -> List[Booking]:
        """Active bookings overlapping [start, end), soonest first (``bookings/list``).

        Listed by start from ``start - LONGEST_VISIT``, the overlapping ones kept.

        Raises:
            ListingUnsupported: the receiver does not implement ``bookings/list``.
            BackendUnavailable: it could not be reached or answered badly.
        """
        require_aware(start, "start")
        listed = self._list(start - LONGEST_VISIT, end, include_cancelled=False)
        return overlapping(listed, start, end, provider)

    def bookings_between(self, start: datetime, end: datetime) -> List[Booking]:
        """Every booking starting in [start, end), cancelled too; errors as above."""
        return self._list(start, end, include_cancelled=True)

    def _list(
        self, start: datetime, end: datetime, include_cancelled: bool
    ) -> List[Booking]:
        """All pages of ``bookings/list``, checked against what was asked.

        A booking outside the range, or cancelled when not asked for, is a
        receiver's bug: it is refused, as a search's stray slot would be sorted out.
        """
        payload: Dict[str, Any] = {
            "from": format_rfc3339(start, "start"),
            "to": format_rfc3339(end, "end"),
            "include_cancelled": include_cancelled,
        }
        found: Dict[str, Booking] = {}
        for _ in range(_MAX_PAGES):
            bookings, cursor = _parsed(LIST, self._call(LIST, payload), _parse_list)
            for booking in bookings:
                if not start <= booking.slot.start < end or (
                    booking.status != BOOKED and not include_cancelled
                ):
                    raise BackendUnavailable(
                        f"scheduling webhook {LIST.path} answered a booking it was "
                        "not asked for"
                    )
                found[booking.reference] = booking
            if cursor is None:
                return sorted(found.values(), key=lambda booking: booking.slot.start)
            payload["cursor"] = cursor
        raise BackendUnavailable(f"scheduling webhook {LIST.path} never ended")

    # HTTP.

    def _call(
        self,
        operation: _Operation,
        payload: Mapping[str, Any],
        idempotency_key: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Posts ``payload`` with retries; returns the JSON object answered.

        The body is serialised once, so every attempt sends (and signs) the very
        same bytes; only the timestamp is renewed, so a late retry is not refused
        as stale.
        """
        if operation.keyed:
            checked_idempotency_key(idempotency_key)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        attempts = 1 + self._retries if operation.retry_safe else 1
        reason = ""
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(operation, body, idempotency_key)
            except _TransientError as failure:
                reason = str(failure)
                logger.warning(
                    "scheduling webhook %s: attempt %d of %d failed: %s",
                    operation.path,
                    attempt,
                    attempts,
                    reason,
                )
            if attempt < attempts:
                time.sleep(self._delay(attempt))
        raise BackendUnavailable(
            f"scheduling webhook {operation.path} failed after {attempts} "
            f"attempt(s): {reason}"
        )

    def _attempt(
        self, operation: _Operation, body: bytes, idempotency_key: Optional[str]
    ) -> Dict[str, Any]:
        """One signed request; raises ``_TransientError`` for what a retry may cure."""
        started = time.monotonic()
        try:
            response = self._http().post(
                f"{self._base_url}/{operation.path}",
                data=body,
                headers=self._headers(body, idempotency_key),
                timeout=self._timeout,
                allow_redirects=False,  # a redirect would carry patient data elsewhere
            )
        except requests.Timeout as error:
            raise _TransientError(f"timed out after {self._timeout:g} s") from error
        except _TRANSPORT_ERRORS as error:
            raise _TransientError(
                f"connection failed ({type(error).__name__})"
            ) from error
        except requests.RequestException as error:
            raise BackendUnavailable(
                f"scheduling webhook {operation.path} could not be sent "
                f"({type(error).__name__})"
            ) from error
        status = int(response.status_code)
        logger.debug(
            "scheduling webhook %s answered %d in %.0f ms",
            operation.path,
            status,
            (time.monotonic() - started) * 1000,
        )
        if status in _SUCCESS:
            return _json_object(operation, response.content)
        if status == 429 or 500 <= status <= 599:
            raise _TransientError(f"HTTP {status}")
        raise _refusal(operation, status, response.content)

    def _headers(self, body: bytes, idempotency_key: Optional[str]) -> Dict[str, str]:
        """Content type, timestamp, signature of ``body`` and the idempotency key."""
        timestamp = str(int(self._clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        return headers

    def _http(self) -> requests.Session:
        """The injected session, else this thread's own (made on first use)."""
        if self._session is not None:
            return self._session
        session: Optional[requests.Session] = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so that many clients do not retry at once.

        The wait before retry ``n`` is drawn from [b * 2^(n-1) / 2, b * 2^(n-1)].
        """
        ceiling = self._backoff * 2 ** (attempt - 1)
        return random.uniform(ceiling / 2, ceiling)


def _checked_base_url(base_url: str) -> str:
    """The base URL without a trailing slash, refusing unsafe or unusable ones."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not echoed: a mistyped URL may hold credentials.
        raise WebhookConfigError(
            "SCHEDULER_WEBHOOK_URL must be an http(s) URL with a host"
        )
    if parts.query or parts.fragment or parts.password:
        raise WebhookConfigError(
            "SCHEDULER_WEBHOOK_URL must not carry a query, a fragment or a password"
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise WebhookConfigError(
            "SCHEDULER_WEBHOOK_URL must use https: requests carry patients' names "
            "and phone numbers (plain http is allowed only to localhost)"
        )
    return url


def _json_object(operation: _Operation, content: bytes) -> Dict[str, Any]:
    """The response body as a JSON object, else ``BackendUnavailable``."""
    try:
        decoded = json.loads(content)
    except ValueError as error:  # also covers undecodable bytes
        raise BackendUnavailable(
            f"scheduling webhook {operation.path} answered with invalid JSON"
        ) from error
    if not isinstance(decoded, dict):
        raise BackendUnavailable(
            f"scheduling webhook {operation.path} answered with JSON that is not "
            "an object"
        )
    return decoded


def _error_code(content: bytes) -> str:
    """The contract's ``error.code`` of a refusal, or ``""`` if there is none.

    Only a short token is kept: the message could echo patient data.
    """
    try:
        decoded = json.loads(content)
    except ValueError:
        return ""
    error = decoded.get("error") if isinstance(decoded, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else ""


def _refusal(operation: _Operation, status: int, content: bytes) -> Exception:
    """The typed outcome of an answer that is neither success nor transient.

    A 404 means "no such booking" only with the contract's error code: any web
    server answers a bare 404 to a wrong URL, and a patient must not be told their
    booking is gone because ``SCHEDULER_WEBHOOK_URL`` has a typo.
    """
    code = _error_code(content)
    where = f"scheduling webhook {operation.path}"
    if status == 409:
        return SlotUnavailable("the slot is no longer available")
    if status == 422 and code == "idempotency_key_reused":
        return InvalidRequest("this idempotency key was used for a different request")
    if status == 404 and code == "booking_not_found":
        return BookingNotFound("no booking has this reference with this phone")
    if status == 404 and operation is LIST:
        return ListingUnsupported(
            f"{where} does not exist (404): the receiver cannot list bookings"
        )
    if status == 404:
        return BackendUnavailable(
            f"{where} does not exist (404); check SCHEDULER_WEBHOOK_URL"
        )
    if status == 401:
        return BackendUnavailable(
            f"{where} refused our signature (401): SCHEDULER_WEBHOOK_SECRET is "
            "wrong, or the two clocks differ by more than 5 minutes"
        )
    if status == 400:
        return BackendUnavailable(f"{where} refused the request as malformed: {code}")
    return BackendUnavailable(f"{where} answered with unexpected HTTP {status} {code}")


def _parsed(
    operation: _Operation, answer: Dict[str, Any], parse: Callable[[Any], T]
) -> T:
    """``parse(answer)``, turning a malformed answer into ``BackendUnavailable``."""
    try:
        return parse(answer)
    except ValueError as error:
        raise BackendUnavailable(
            f"scheduling webhook {operation.path} answered with a malformed "
            f"body: {error}"
        ) from error


def _owned(
    operation: _Operation, booking: Booking, reference: str, phone: str
) -> Booking:
    """Refuses an answer about any booking other than the one asked for.

    A receiver's bug must not show one patient another patient's appointment.
    References are compared as the contract matches them: case, spaces and hyphens
    aside.
    """
    asked = normalize_reference(reference)
    answered = normalize_reference(booking.reference)
    if asked != answered or booking.patient.phone.strip() != phone:
        raise BackendUnavailable(
            f"scheduling webhook {operation.path} answered about another booking"
        )
    return booking


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` of a JSON object, else ``ValueError``."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object holding '{name}'")
    if name not in obj:
        raise ValueError(f"field '{name}' is missing")
    return obj[name]


def _text(obj: Any, name: str) -> str:
    """A non-empty string field."""
    value = _field(obj, name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field '{name}' must be a non-empty string")
    return value


def _time(obj: Any, name: str) -> datetime:
    """An RFC 3339 date-time field with an offset."""
    try:
        return parse_rfc3339(_text(obj, name))
    except ValueError as error:
        raise ValueError(f"field '{name}': {error}") from error


def _parse_slot(obj: Any) -> Slot:
    """A slot object; ``Slot`` itself refuses an empty or reversed interval."""
    slot_id = _text(obj, "slot_id")  # also proves that obj is an object
    provider = obj.get("provider")
    if provider is None:  # optional: absent or null means "not said"
        provider = ""
    if not isinstance(provider, str):
        raise ValueError("field 'provider' must be a string")
    return Slot(
        slot_id=slot_id,
        start=_time(obj, "start"),
        end=_time(obj, "end"),
        visit_type=_text(obj, "visit_type"),
        provider=provider,
    )


def _parse_slots(answer: Any) -> List[Slot]:
    """The ``slots`` list of a search answer."""
    items = _field(answer, "slots")
    if not isinstance(items, list):
        raise ValueError("field 'slots' must be a list")
    return [_parse_slot(item) for item in items]


def _parse_hold(answer: Any) -> Hold:
    """A hold object."""
    return Hold(
        hold_id=_text(answer, "hold_id"),
        slot=_parse_slot(_field(answer, "slot")),
        expires_at=_time(answer, "expires_at"),
    )


def _parse_booking(answer: Any) -> Booking:
    """A booking object, whose status is ``booked`` or ``cancelled``."""
    status = _text(answer, "status")
    if status not in (BOOKED, CANCELLED):
        raise ValueError(f"field 'status' must be '{BOOKED}' or '{CANCELLED}'")
    patient = _field(answer, "patient")
    return Booking(
        reference=_text(answer, "reference"),
        slot=_parse_slot(_field(answer, "slot")),
        patient=Patient(name=_text(patient, "name"), phone=_text(patient, "phone")),
        status=status,
        reminder_consent=_flag(answer, "reminder_consent"),
        confirmed=_flag(answer, "confirmed"),
        reschedule_requested=_flag(answer, "reschedule_requested"),
    )


def _parse_list(answer: Any) -> Tuple[List[Booking], Optional[str]]:
    """The ``bookings`` of a list answer and its ``next_cursor`` (None: the last)."""
    items = _field(answer, "bookings")
    if not isinstance(items, list):
        raise ValueError("field 'bookings' must be a list")
    cursor = answer.get("next_cursor")
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise ValueError("field 'next_cursor' must be a non-empty string or null")
    return [_parse_booking(item) for item in items], cursor


def _flag(obj: Any, name: str) -> bool:
    """An optional boolean field (absent: false, for receivers older than reminders)."""
    value = obj.get(name, False) if isinstance(obj, dict) else False
    if not isinstance(value, bool):
        raise ValueError(f"field '{name}' must be true or false")
    return value
