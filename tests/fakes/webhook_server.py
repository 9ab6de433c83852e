"""A loopback reference receiver of ``docs/webhook_contract.md``, for tests.

Written from the contract, not from the client: it verifies signatures with its own
code, so a client that signs the wrong bytes fails here as it would at a clinic.
Slots, holds, bookings and idempotency records live in memory behind one lock, so
that concurrent requests see the all-or-nothing behaviour a real receiver must give.

Test knobs: :meth:`FakeWebhookServer.fail_next` (answer the next N authenticated
requests with an error status), :meth:`respond_next` (a canned raw answer),
:meth:`delay_next` (sleep before handling), and :attr:`requests` (every request
received, with headers, raw body and the status answered); ``page_size`` (the most
bookings one ``bookings/list`` answer holds) and ``lists_bookings=False`` (a
receiver without ``bookings/list``, which the contract allows: a bare 404).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from tests.fakes.loopback import LoopbackFake, LoopbackServer

BASE_PATH = "/clinicbot/v1"
WINDOW_SECONDS = 300
KEYED = frozenset({"holds", "bookings", "bookings/cancel"})
# Outcomes that are the result of processing, so a replayed key must get them again.
STORED_STATUSES = frozenset({200, 201, 404, 409})


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    operation: str
    headers: Dict[str, str]
    body: bytes
    status: Optional[int] = None  # set once answered

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeSlot:
    slot_id: str
    start: datetime
    end: datetime
    visit_type: str
    provider: str = ""

    def as_json(self) -> Dict[str, Any]:
        return {
            "slot_id": self.slot_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "visit_type": self.visit_type,
            "provider": self.provider,
        }


@dataclass
class FakeBooking:
    reference: str
    slot_id: str
    name: str
    phone: str
    status: str = "booked"
    reminder_consent: bool = False
    confirmed: bool = False
    reschedule_requested: bool = False


class HttpError(Exception):
    """An error answer in the contract's shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def body(self) -> Dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self)}}


@dataclass
class _Knobs:
    canned: Deque[Tuple[int, bytes]] = field(default_factory=deque)
    delays: Deque[float] = field(default_factory=deque)


class FakeWebhookServer(LoopbackFake):
    """The contract's receiver on ``127.0.0.1`` and a free port, in a thread."""

    def __init__(
        self,
        secret: str,
        clock: Callable[[], float] = time.time,
        window_seconds: int = WINDOW_SECONDS,
        page_size: int = 50,
        lists_bookings: bool = True,
    ) -> None:
        self.secret = secret.encode()
        self.page_size = page_size
        self.lists_bookings = lists_bookings
        self.clock = clock
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self._slots: Dict[str, FakeSlot] = {}
        self._holds: Dict[str, Tuple[str, float]] = {}  # id -> slot id, expiry
        self._bookings: Dict[str, FakeBooking] = {}
        # (operation, key) -> (parsed first request, status, body answered)
        self._replies: Dict[Tuple[str, str], Tuple[Any, int, bytes]] = {}
        self._requests: List[RecordedRequest] = []
        self._knobs = _Knobs()
        self._server = LoopbackServer(type("Handler", (_Handler,), {"fake": self}))

    @property
    def base_url(self) -> str:
        return f"{self._server.origin}{BASE_PATH}"

    # Test knobs and inspection.

    def add_slot(
        self,
        slot_id: str,
        start: datetime,
        minutes: int = 30,
        visit_type: str = "new_patient",
        provider: str = "",
    ) -> FakeSlot:
        slot = FakeSlot(
            slot_id, start, start + timedelta(minutes=minutes), visit_type, provider
        )
        with self._lock:
            self._slots[slot_id] = slot
        return slot

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next ``count`` authenticated requests get ``status``, unprocessed."""
        body = HttpError(status, "unavailable", "injected failure").body()
        for _ in range(count):
            self.respond_next(status, json.dumps(body).encode())

    def respond_next(self, status: int, body: bytes) -> None:
        """The next authenticated request gets exactly this answer, unprocessed."""
        with self._lock:
            self._knobs.canned.append((status, body))

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` requests wait ``seconds`` before they are handled."""
        with self._lock:
            self._knobs.delays.extend([seconds] * count)

    @property
    def requests(self) -> List[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, operation: str) -> List[RecordedRequest]:
        return [request for request in self.requests if request.operation == operation]

    @property
    def bookings(self) -> List[FakeBooking]:
        with self._lock:
            return [FakeBooking(**vars(booking)) for booking in self._bookings.values()]

    # Handling one request.

    def handle(
        self, operation: str, headers: Dict[str, str], body: bytes
    ) -> Tuple[int, bytes]:
        """Records one request and returns the status and body to answer."""
        record = RecordedRequest(operation, headers, body)
        with self._lock:
            self._requests.append(record)
            delay = self._knobs.delays.popleft() if self._knobs.delays else 0.0
        if delay:
            time.sleep(delay)  # outside the lock: other requests go on meanwhile
        status, answer = self._answer(operation, headers, body)
        record.status = status
        return status, answer

    def _answer(
        self, operation: str, headers: Dict[str, str], body: bytes
    ) -> Tuple[int, bytes]:
        try:
            self._authenticate(headers, body)
        except HttpError as error:
            return error.status, json.dumps(error.body()).encode()
        with self._lock:
            if self._knobs.canned:
                return self._knobs.canned.popleft()
            return self._process(operation, headers, body)

    def _authenticate(self, headers: Dict[str, str], body: bytes) -> None:
        """The contract's receiver check, as a clinic's developer would write it."""
        timestamp = headers.get("x-clinicbot-timestamp", "")
        signature = headers.get("x-clinicbot-signature", "")
        if not timestamp.isdigit():
            raise HttpError(401, "bad_signature", "missing or malformed timestamp")
        if abs(self.clock() - int(timestamp)) > self.window_seconds:
            raise HttpError(401, "bad_signature", "timestamp outside the window")
        signed = timestamp.encode() + b"." + body
        expected = "v1=" + hmac.new(self.secret, signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise HttpError(401, "bad_signature", "signature does not match")

    def _process(
        self, operation: str, headers: Dict[str, str], body: bytes
    ) -> Tuple[int, bytes]:
        """Runs under the lock, so check-then-book is atomic and keys serialise."""
        key = headers.get("idempotency-key")
        if operation in KEYED and not key:
            error = HttpError(400, "bad_request", "Idempotency-Key is required")
            return error.status, json.dumps(error.body()).encode()
        try:
            if headers.get("content-type", "").split(";")[0] != "application/json":
                raise HttpError(400, "bad_request", "Content-Type must be JSON")
            request = _json_object(body)
            if key and (operation, key) in self._replies:
                return self._replay(operation, key, request)
            status, answer = self._dispatch(operation, request)
            reply = status, json.dumps(answer).encode()
        except HttpError as error:
            reply = error.status, json.dumps(error.body()).encode()
        if key and operation in KEYED and reply[0] in STORED_STATUSES:
            self._replies[(operation, key)] = (request, *reply)
        return reply

    def _replay(self, operation: str, key: str, request: Any) -> Tuple[int, bytes]:
        first, status, answer = self._replies[(operation, key)]
        if request != first:
            error = HttpError(422, "idempotency_key_reused", "key used for another")
            return error.status, json.dumps(error.body()).encode()
        return status, answer

    def _dispatch(self, operation: str, request: Dict[str, Any]) -> Tuple[int, Any]:
        handlers = {
            "slots/search": self._search,
            "holds": self._hold,
            "holds/release": self._release,
            "bookings": self._book,
            "bookings/cancel": self._cancel,
            "bookings/get": self._get,
            "bookings/confirm": self._confirm,
            "bookings/reschedule-request": self._reschedule_request,
        }
        if self.lists_bookings:
            handlers["bookings/list"] = self._list
        if operation not in handlers:
            raise HttpError(404, "not_found", "no such operation")
        return handlers[operation](request)

    # Operations (under the lock).

    def _search(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        visit_type = _string(request, "visit_type")
        earliest = _datetime(request, "earliest")
        latest = _datetime(request, "latest")
        limit = request.get("limit")
        if not isinstance(limit, int) or not 1 <= limit <= 50:
            raise HttpError(400, "bad_request", "limit must be 1 to 50")
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        found = sorted(
            (
                slot
                for slot in self._slots.values()
                if slot.visit_type == visit_type
                and max(earliest, now) <= slot.start < latest
                and not self._taken(slot.slot_id)
                and self._holder(slot.slot_id) is None
            ),
            key=lambda slot: slot.start,
        )
        return 200, {"slots": [slot.as_json() for slot in found[:limit]]}

    def _hold(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        slot = self._open_slot(_string(request, "slot_id"), own_hold=None)
        ttl = request.get("ttl_seconds")
        if not isinstance(ttl, int) or ttl < 1:
            raise HttpError(400, "bad_request", "ttl_seconds must be a positive int")
        hold_id = "hold-" + secrets.token_hex(8)
        expires = self.clock() + ttl
        self._holds[hold_id] = (slot.slot_id, expires)
        return 201, {
            "hold_id": hold_id,
            "slot": slot.as_json(),
            "expires_at": datetime.fromtimestamp(expires, timezone.utc).isoformat(),
        }

    def _release(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        released = self._holds.pop(_string(request, "hold_id"), None) is not None
        return 200, {"released": released}

    def _book(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        hold_id = request.get("hold_id")
        if hold_id is not None and not isinstance(hold_id, str):
            raise HttpError(400, "bad_request", "hold_id must be a string or null")
        patient = request.get("patient")
        name, phone = _string(patient, "name"), _string(patient, "phone")
        slot = self._open_slot(_string(request, "slot_id"), own_hold=hold_id)
        if hold_id is not None:
            self._holds.pop(hold_id, None)
        reference = "VLM" + secrets.token_hex(3).upper()
        consent = request.get("reminder_consent", False)
        if not isinstance(consent, bool):
            raise HttpError(400, "bad_request", "reminder_consent must be a boolean")
        booking = FakeBooking(reference, slot.slot_id, name, phone)
        booking.reminder_consent = consent
        self._bookings[reference] = booking
        return 201, self._booking_json(booking)

    def _cancel(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        booking = self._find_booking(request)
        booking.status = "cancelled"
        return 200, self._booking_json(booking)

    def _get(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        return 200, self._booking_json(self._find_booking(request))

    def _confirm(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        booking = self._find_booking(request)
        booking.confirmed = booking.confirmed or booking.status == "booked"
        return 200, self._booking_json(booking)

    def _reschedule_request(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        booking = self._find_booking(request)
        booking.reschedule_requested = (
            booking.reschedule_requested or booking.status == "booked"
        )
        return 200, self._booking_json(booking)

    def _list(self, request: Dict[str, Any]) -> Tuple[int, Any]:
        """Bookings starting in [from, to), soonest first, a page at a time.

        The cursor is where the next page starts: opaque to the client.
        """
        start, end = _datetime(request, "from"), _datetime(request, "to")
        include_cancelled = request.get("include_cancelled", False)
        cursor = request.get("cursor")
        if not isinstance(include_cancelled, bool):
            raise HttpError(400, "bad_request", "include_cancelled must be a boolean")
        if cursor is not None and not (isinstance(cursor, str) and cursor.isdigit()):
            raise HttpError(400, "bad_request", "cursor is not one this server gave")
        found = sorted(
            (
                booking
                for booking in self._bookings.values()
                if start <= self._slots[booking.slot_id].start < end
                and (include_cancelled or booking.status == "booked")
            ),
            key=lambda booking: self._slots[booking.slot_id].start,
        )
        first = int(cursor or 0)
        last = first + self.page_size
        return 200, {
            "bookings": [self._booking_json(b) for b in found[first:last]],
            "next_cursor": str(last) if last < len(found) else None,
        }

    # Helpers (under the lock).

    def _open_slot(self, slot_id: str, own_hold: Optional[str]) -> FakeSlot:
        slot = self._slots.get(slot_id)
        holder = self._holder(slot_id)
        if slot is None or self._taken(slot_id) or holder not in (None, own_hold):
            raise HttpError(409, "slot_unavailable", "the slot is not available")
        return slot

    def _taken(self, slot_id: str) -> bool:
        return any(
            booking.slot_id == slot_id and booking.status == "booked"
            for booking in self._bookings.values()
        )

    def _holder(self, slot_id: str) -> Optional[str]:
        now = self.clock()
        for hold_id, (held_slot, expires) in self._holds.items():
            if held_slot == slot_id and expires > now:
                return hold_id
        return None

    def _find_booking(self, request: Dict[str, Any]) -> FakeBooking:
        booking = self._bookings.get(_reference_key(_string(request, "reference")))
        phone = _string(request, "phone")
        if booking is None or not hmac.compare_digest(booking.phone, phone):
            raise HttpError(404, "booking_not_found", "no such booking")
        return booking

    def _booking_json(self, booking: FakeBooking) -> Dict[str, Any]:
        return {
            "reference": booking.reference,
            "slot": self._slots[booking.slot_id].as_json(),
            "patient": {"name": booking.name, "phone": booking.phone},
            "status": booking.status,
            "reminder_consent": booking.reminder_consent,
            "confirmed": booking.confirmed,
            "reschedule_requested": booking.reschedule_requested,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body in one write: no Nagle/delayed-ACK stall
    fake: FakeWebhookServer  # set on the subclass made in start()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        if not self.path.startswith(BASE_PATH + "/"):
            status, answer = 404, b'{"error":{"code":"not_found","message":""}}'
        else:
            operation = self.path[len(BASE_PATH) + 1 :]
            status, answer = self.fake.handle(operation, headers, body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            pass  # the client gave up (timeout): a real server would log and go on

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


def _reference_key(reference: str) -> str:
    """References match ignoring case, spaces and hyphens: patients type them."""
    return re.sub(r"[\s-]", "", reference).upper()


def _json_object(body: bytes) -> Dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError as error:
        raise HttpError(400, "bad_request", "body is not JSON") from error
    if not isinstance(decoded, dict):
        raise HttpError(400, "bad_request", "body must be a JSON object")
    return decoded


def _string(obj: Any, name: str) -> str:
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, str) or not value:
        raise HttpError(400, "bad_request", f"'{name}' must be a non-empty string")
    return value


def _datetime(obj: Dict[str, Any], name: str) -> datetime:
    text = _string(obj, name)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise HttpError(400, "bad_request", f"'{name}' is not RFC 3339") from error
    if value.tzinfo is None:
        raise HttpError(400, "bad_request", f"'{name}' has no offset")
    return value
