"""A small FHIR R4 server on loopback, built from the specification, for tests.

It stands in for a clinic's FHIR server so that the FHIR scheduler backend can be
tested over real HTTP. It was written from the FHIR R4 (v4.0.1) specification, not
from the adapter, and is deliberately strict where the specification leaves the
server a choice, so that a sloppy client fails here rather than in a clinic:

- RESTful API (https://hl7.org/fhir/R4/http.html): ``read`` and ``vread`` with
  ``ETag: W/"<versionId>"`` and ``Last-Modified`` (#read, #vread, #versioning);
  ``create`` with server-assigned ids, ``Location`` and conditional create through
  ``If-None-Exist`` -- no match creates (201), one match returns it (200), several
  fail with 412 (#create, #ccreate); ``update`` with ``If-Match`` version-aware
  updates -- a stale version fails with 412 (#update, #concurrency); an id in the
  body that disagrees with the URL fails with 400; updating a resource that does not
  exist fails with 405 unless ``update_create`` is on (``updateCreate`` of the
  CapabilityStatement), and with 412 if ``If-Match`` was given (RFC 7232 3.1: no
  current representation, so the precondition is false).
- Transactions (#transaction, "Transaction Processing Rules"): ``POST [base]`` with
  a ``Bundle`` of type ``transaction``; entries are processed POST, then PUT, then
  GET; ``urn:uuid`` full URLs of created resources are replaced in references;
  two entries that target the same resource fail the transaction; any failing
  entry fails the whole transaction with that entry's status and an
  ``OperationOutcome``, and nothing is changed. Transactions (and every other
  interaction) are serialised by one lock, so they are atomic and isolated.
- Search (https://hl7.org/fhir/R4/search.html): ``date`` parameters with the
  ``eq ne gt lt ge le sa eb`` prefixes and implicit ranges from the value's
  precision (a time needs a time zone); ``token`` parameters as ``code``,
  ``system|code``, ``|code`` and ``system|``; ``reference`` parameters as
  ``Type/id`` or ``id``; comma for OR, repeated parameters for AND; ``\\`` escapes;
  ``_id``, ``_sort`` on date parameters (``-`` for descending) and ``_count``. The
  answer is a ``searchset`` Bundle with ``total``. Unknown parameters, modifiers and
  prefixes are refused with 400 (the specification lets the server choose; being
  lenient would let a client's typo silently return everything).
- Paging (search.html#paging, bundle.html): a page holds at most ``_count`` matches
  and at most ``page_size`` (the server's own limit, which the specification lets
  it apply whatever ``_count`` asks); when more remain, the Bundle has a ``next``
  link, an absolute URL the client follows as it is. Its ``_getpagesoffset`` (the
  name HAPI FHIR uses) is this server's business: clients do not make it up.

Left out: DELETE, PATCH, history, conditional update and delete, ``batch``,
``previous``/``last`` links, ``_include``, chained parameters, ``Prefer`` handling,
XML, and validation beyond the required elements, codes and invariants listed in
``_validate``. Resources: Schedule, Slot, Appointment and Patient.

Tests drive it with :class:`FhirFacade` (``start``/``stop`` or ``with``), seed it
with :meth:`FhirFacade.seed_schedule` and :meth:`FhirFacade.seed_slots`, look at it
with :meth:`FhirFacade.inspect`, and make it misbehave with :class:`Fault`.

Demo server: ``python -m tests.fakes.fhir_facade --port 8090 --seed``.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

Resource = Dict[str, Any]
Query = List[Tuple[str, str]]

FHIR_JSON = "application/fhir+json"
ACCEPTED_CONTENT_TYPES = (FHIR_JSON, "application/json")
RESOURCE_TYPES = ("Schedule", "Slot", "Appointment", "Patient")

# https://hl7.org/fhir/R4/valueset-slotstatus.html
SLOT_STATUSES = {
    "busy",
    "free",
    "busy-unavailable",
    "busy-tentative",
    "entered-in-error",
}
# https://hl7.org/fhir/R4/valueset-appointmentstatus.html
APPOINTMENT_STATUSES = {
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
}
# https://hl7.org/fhir/R4/valueset-participationstatus.html
PARTICIPATION_STATUSES = {"accepted", "declined", "tentative", "needs-action"}

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # datatypes.html#id
_INSTANT = re.compile(  # datatypes.html#instant: seconds and a time zone required
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)
_SEARCH_DATE = re.compile(  # search.html#date: any precision, zone needed with time
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})"
    r"(?P<fraction>\.\d+)?)?(?P<zone>Z|[+-]\d{2}:\d{2}))?)?)?$"
)
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_IGNORED_RESULT_PARAMS = {"_format", "_pretty"}
# Where a ``next`` link's page starts (see the module docstring, "Paging").
_PAGE_OFFSET = "_getpagesoffset"


class FhirError(Exception):
    """A failed interaction: the HTTP status and the OperationOutcome issue."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics

    def outcome(self) -> Resource:
        """The OperationOutcome the server answers with (operationoutcome.html)."""
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": self.code,
                    "diagnostics": self.diagnostics,
                }
            ],
        }


@dataclass
class Response:
    """What one interaction answers, before it is written to HTTP."""

    status: int
    body: Optional[Resource] = None
    headers: Dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """Misbehaviour to inject: sleep ``delay`` seconds and/or answer ``status``.

    With ``after`` false the request waits, then is answered with ``status`` without
    being processed (or processed normally if ``status`` is None). With ``after`` true
    it is processed first (its changes are kept), then it waits, then the answer is
    replaced by ``status`` if one is given: a server that committed but answered
    late or with an error. ``method`` and ``resource_type`` (``""`` for the base URL,
    where transactions go) narrow which requests it hits; ``times`` limits how often.
    """

    status: Optional[int] = None
    delay: float = 0.0
    after: bool = False
    method: Optional[str] = None
    resource_type: Optional[str] = None
    times: Optional[int] = None

    def applies(self, method: str, resource_type: str) -> bool:
        """Whether this fault hits the request (and uses one of its ``times``)."""
        if self.method is not None and self.method != method:
            return False
        if self.resource_type is not None and self.resource_type != resource_type:
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


@dataclass(frozen=True)
class _SearchParam:
    """A search parameter: its type, the element it reads and a reference target."""

    kind: str  # "token" | "date" | "reference"
    element: str
    target: str = ""


# Subsets of the search parameters of schedule.html, slot.html and appointment.html
# (section "Search Parameters" of each resource page).
_SEARCH_PARAMS: Dict[str, Dict[str, _SearchParam]] = {
    "Schedule": {
        "identifier": _SearchParam("token", "identifier"),
        "active": _SearchParam("token", "active"),
        "service-type": _SearchParam("token", "serviceType"),
    },
    "Slot": {
        "identifier": _SearchParam("token", "identifier"),
        "status": _SearchParam("token", "status"),
        "start": _SearchParam("date", "start"),
        "service-type": _SearchParam("token", "serviceType"),
        "schedule": _SearchParam("reference", "schedule", "Schedule"),
    },
    "Appointment": {
        "identifier": _SearchParam("token", "identifier"),
        "status": _SearchParam("token", "status"),
        "date": _SearchParam("date", "start"),
        "service-type": _SearchParam("token", "serviceType"),
        "slot": _SearchParam("reference", "slot", "Slot"),
    },
    "Patient": {
        "identifier": _SearchParam("token", "identifier"),
        "phone": _SearchParam("token", "telecom"),
    },
}


# --- time -------------------------------------------------------------------------


def now_instant() -> str:
    """The current time as a FHIR instant in UTC with milliseconds."""
    return (
        datetime.now(timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_instant(value: Any) -> Optional[datetime]:
    """A FHIR instant (seconds and a zone are required) as a datetime, else None."""
    if not isinstance(value, str) or not _INSTANT.match(value):
        return None
    head, _, rest = value.partition(".")
    if rest:  # Python 3.10 only reads 3 or 6 fraction digits
        digits = re.match(r"\d+", rest)
        assert digits is not None
        fraction = digits.group(0)
        value = f"{head}.{fraction[:6].ljust(6, '0')}{rest[len(fraction) :]}"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _search_date_range(raw: str) -> Tuple[datetime, datetime]:
    """The implicit [low, high) range of a date search value (search.html#date)."""
    match = _SEARCH_DATE.match(raw)
    if not match:
        raise FhirError(
            400,
            "value",
            f"'{raw}' is not a FHIR search date (a time needs a time zone; '+' "
            "must be sent as %2B)",
        )
    parts = match.groupdict()
    zone = parts["zone"]
    tz = timezone.utc
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    fraction = parts["fraction"] or ""
    try:
        low = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction[1:7].ljust(6, "0")) if fraction else 0,
            tzinfo=tz,
        )
    except ValueError as error:
        raise FhirError(400, "value", f"'{raw}' is not a real date") from error
    if parts["month"] is None:
        high = low.replace(year=low.year + 1)
    elif parts["day"] is None:
        high = (low.replace(day=28) + timedelta(days=4)).replace(day=1)
    elif parts["hour"] is None:
        high = low + timedelta(days=1)
    elif parts["second"] is None:
        high = low + timedelta(minutes=1)
    elif not fraction:
        high = low + timedelta(seconds=1)
    else:
        high = low + timedelta(seconds=10 ** -(len(fraction) - 1))
    return low, high


def _date_matches(prefix: str, low: datetime, high: datetime, value: datetime) -> bool:
    """Compares an instant with a search range as search.html#prefix defines."""
    if prefix == "eq":
        return low <= value < high
    if prefix == "ne":
        return not low <= value < high
    if prefix in ("gt", "sa"):
        return value >= high
    if prefix in ("lt", "eb"):
        return value < low
    if prefix == "ge":
        return value >= low
    return value < high  # "le"


def _http_date(instant: str) -> str:
    """An instant as an HTTP-date, for the ``Last-Modified`` header."""
    parsed = parse_instant(instant)
    assert parsed is not None
    return format_datetime(parsed.astimezone(timezone.utc), usegmt=True)


# --- search values ----------------------------------------------------------------


def _split_unescaped(value: str, separator: str) -> List[str]:
    """Splits on ``separator`` except where it is escaped with a backslash."""
    parts: List[str] = []
    current: List[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            current.append(char)
            current.append(next(chars, ""))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    """Removes the backslash escapes of search values (search.html#escaping)."""
    return re.sub(r"\\(.)", r"\1", value)


def _token_matches(raw: str, element: Any) -> bool:
    """Whether a token search value matches an element (search.html#token)."""
    pieces = _split_unescaped(raw, "|")
    if len(pieces) > 2:
        raise FhirError(400, "value", f"'{raw}' is not a token")
    system: Optional[str] = _unescape(pieces[0]) if len(pieces) == 2 else None
    code = _unescape(pieces[-1])
    values = element if isinstance(element, list) else [element]
    return any(_token_value_matches(system, code, value) for value in values)


def _token_value_matches(system: Optional[str], code: str, value: Any) -> bool:
    """Matches a code, boolean, Coding, CodeableConcept, Identifier or ContactPoint."""
    if isinstance(value, bool):
        return system is None and code == ("true" if value else "false")
    if isinstance(value, str):  # a "code": its system is implied
        return system is None and code == value
    if not isinstance(value, dict):
        return False
    if "coding" in value:
        return any(_token_value_matches(system, code, c) for c in value["coding"])
    element_code = value.get("code", value.get("value"))
    element_system = value.get("system")
    if system is None:
        return code == element_code
    if system == "":
        return element_system is None and code == element_code
    return element_system == system and code in ("", element_code)


def _reference_key(reference: str, target: str) -> str:
    """``Type/id`` for a relative, absolute or id-only reference."""
    segments = [s for s in reference.split("/") if s]
    if len(segments) == 1:
        return f"{target}/{segments[0]}"
    return "/".join(segments[-2:])


def _reference_matches(raw: str, element: Any, target: str) -> bool:
    """Whether a reference search value matches an element (search.html#reference)."""
    wanted = _reference_key(_unescape(raw), target)
    values = element if isinstance(element, list) else [element]
    return any(
        isinstance(value, dict)
        and isinstance(value.get("reference"), str)
        and _reference_key(value["reference"], target) == wanted
        for value in values
    )


# --- validation -------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    """Raises a 400 ``OperationOutcome`` unless ``condition`` holds."""
    if not condition:
        raise FhirError(400, "invalid", message)


def _validate(resource: Resource) -> None:
    """Checks required elements, required codes and a few invariants.

    Failing base rules is a 400 (http.html#create: "failed basic FHIR validation
    rules"). Only what a scheduling client could get wrong is checked.
    """
    rtype = resource["resourceType"]
    for key in ("start", "end"):
        if key in resource:
            _require(
                parse_instant(resource[key]) is not None,
                f"{rtype}.{key} must be an instant with a time zone",
            )
    if rtype == "Slot":
        _require(
            isinstance(resource.get("schedule"), dict), "Slot.schedule is required"
        )
        _require(
            resource.get("status") in SLOT_STATUSES, "Slot.status is a required code"
        )
        _require(
            "start" in resource and "end" in resource,
            "Slot.start and Slot.end are required",
        )
    elif rtype == "Appointment":
        _validate_appointment(resource)
    elif rtype == "Schedule":
        _require(bool(resource.get("actor")), "Schedule.actor is required (1..*)")


def _validate_appointment(resource: Resource) -> None:
    """Appointment's required elements and invariants app-1, app-2 and app-3."""
    status = resource.get("status")
    _require(status in APPOINTMENT_STATUSES, "Appointment.status is a required code")
    participants = resource.get("participant") or []
    _require(
        isinstance(participants, list) and bool(participants),
        "Appointment.participant is required (1..*)",
    )
    for participant in participants:
        _require(isinstance(participant, dict), "a participant must be an object")
        _require(
            participant.get("status") in PARTICIPATION_STATUSES,
            "Appointment.participant.status is a required code",
        )
        _require(
            "type" in participant or "actor" in participant,
            "app-1: either the type or actor on the participant SHALL be specified",
        )
    _require(
        ("start" in resource) == ("end" in resource),
        "app-2: either start and end are specified, or neither",
    )
    _require(
        "start" in resource or status in ("proposed", "cancelled", "waitlist"),
        "app-3: only proposed or cancelled appointments can be missing start/end",
    )


def _check_body(resource: Any, rtype: str) -> Resource:
    """The body must be a JSON object of the URL's resource type."""
    if not isinstance(resource, dict):
        raise FhirError(400, "structure", "the body must be a JSON resource")
    if resource.get("resourceType") != rtype:
        raise FhirError(
            400, "invalid", f"resourceType must be {rtype} to match the URL"
        )
    return resource


def _version_of(if_match: str) -> str:
    """The version in ``If-Match: W/"3"`` (http.html#concurrency)."""
    match = re.fullmatch(r'\s*(?:W/)?"([^"]+)"\s*', if_match)
    if not match:
        raise FhirError(400, "value", f"malformed If-Match header {if_match!r}")
    return match.group(1)


def etag(resource: Resource) -> str:
    """The weak ETag of a resource version, ``W/"<versionId>"``."""
    return f'W/"{resource["meta"]["versionId"]}"'


def _write_headers(resource: Resource) -> Dict[str, str]:
    """``ETag``, ``Last-Modified`` and ``Location`` of a stored version."""
    return {
        "ETag": etag(resource),
        "Last-Modified": _http_date(resource["meta"]["lastUpdated"]),
        "Location": (
            f"{resource['resourceType']}/{resource['id']}"
            f"/_history/{resource['meta']['versionId']}"
        ),
    }


# --- storage ----------------------------------------------------------------------


class _Store:
    """Every version of every resource. Stored versions are never mutated."""

    def __init__(
        self, versions: Optional[Dict[Tuple[str, str], List[Resource]]] = None
    ) -> None:
        self._versions: Dict[Tuple[str, str], List[Resource]] = versions or {}

    def copy(self) -> _Store:
        """A copy to stage a transaction on; the original stays as it was."""
        return _Store({key: list(history) for key, history in self._versions.items()})

    def current(self, rtype: str, rid: str) -> Optional[Resource]:
        """The latest version, or None if there is none."""
        history = self._versions.get((rtype, rid))
        return history[-1] if history else None

    def version(self, rtype: str, rid: str, vid: str) -> Optional[Resource]:
        """One version of a resource, or None."""
        for resource in self._versions.get((rtype, rid), []):
            if resource["meta"]["versionId"] == vid:
                return resource
        return None

    def all(self, rtype: str) -> List[Resource]:
        """The latest version of every resource of a type, in creation order."""
        return [
            history[-1]
            for (kind, _), history in self._versions.items()
            if kind == rtype
        ]

    def write(self, resource: Resource) -> Resource:
        """Stores a new version, setting ``meta.versionId`` and ``meta.lastUpdated``."""
        key = (resource["resourceType"], resource["id"])
        history = self._versions.setdefault(key, [])
        stored = copy.deepcopy(resource)
        stored["meta"] = {
            **(stored.get("meta") or {}),
            "versionId": str(len(history) + 1),
            "lastUpdated": now_instant(),
        }
        history.append(stored)
        return stored


# --- the server -------------------------------------------------------------------


@dataclass
class _Entry:
    """One parsed transaction entry and what processing it decided."""

    index: int
    method: str
    rtype: str
    rid: Optional[str]
    query: Query
    resource: Optional[Resource]
    full_url: Optional[str]
    if_match: Optional[str]
    if_none_exist: Optional[str]
    existing: Optional[Resource] = None


class FhirFacade:
    """An in-memory FHIR R4 server answering on ``http://<host>:<port>/fhir``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        base_path: str = "/fhir",
        required_token: Optional[str] = None,
        update_create: bool = False,
        page_size: Optional[int] = None,
    ) -> None:
        """``page_size``: the most matches one search page holds (None: no limit)."""
        self.host = host
        self.page_size = page_size
        self.port = port
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.required_token = required_token
        self.update_create = update_create
        self.faults: List[Fault] = []
        self.before_transaction: Optional[Callable[[], None]] = None
        self.request_log: List[Tuple[str, str]] = []
        self._store = _Store()
        self._lock = threading.RLock()
        self._fault_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # lifecycle

    @property
    def base_url(self) -> str:
        """The service base URL, e.g. ``http://127.0.0.1:54321/fhir``."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    def start(self) -> FhirFacade:
        """Starts serving in a daemon thread; ``port=0`` picks a free port."""
        server = _HttpServer((self.host, self.port), _Handler)
        server.facade = self
        self.port = server.server_address[1]
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so that stop() returns quickly
            name="fhir-facade",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving, cutting short any injected delay."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FhirFacade:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # test helpers

    def seed_schedule(
        self,
        actor: str = "Practitioner/example",
        schedule_id: Optional[str] = None,
    ) -> str:
        """Stores an active Schedule for ``actor``; returns its id."""
        schedule = {
            "resourceType": "Schedule",
            "id": schedule_id or str(uuid.uuid4()),
            "active": True,
            "actor": [{"reference": actor}],
        }
        return str(self.put_resource(schedule)["id"])

    def seed_slots(
        self,
        schedule_id: str,
        starts: Iterable[datetime],
        service_type: Tuple[str, str],
        minutes: int = 30,
        status: str = "free",
    ) -> List[str]:
        """Stores one Slot per start time; returns their ids in order.

        ``service_type`` is ``(system, code)``; start times must be time-zone aware.
        """
        system, code = service_type
        ids = []
        for start in starts:
            if start.tzinfo is None:
                raise ValueError("slot start times must be time-zone aware")
            slot = {
                "resourceType": "Slot",
                "id": str(uuid.uuid4()),
                "schedule": {"reference": f"Schedule/{schedule_id}"},
                "serviceType": [{"coding": [{"system": system, "code": code}]}],
                "status": status,
                "start": start.isoformat(timespec="seconds"),
                "end": (start + timedelta(minutes=minutes)).isoformat(
                    timespec="seconds"
                ),
            }
            ids.append(str(self.put_resource(slot)["id"]))
        return ids

    def put_resource(self, resource: Resource) -> Resource:
        """Stores a resource as a new version, as another system would; no checks
        beyond the resource's own validation. Returns the stored version."""
        _validate(resource)
        with self._lock:
            return copy.deepcopy(self._store.write(resource))

    def read_resource(self, rtype: str, rid: str) -> Optional[Resource]:
        """The current version of one resource, or None."""
        with self._lock:
            found = self._store.current(rtype, rid)
            return copy.deepcopy(found) if found else None

    def inspect(self, rtype: str) -> List[Resource]:
        """The current version of every stored resource of a type (copies)."""
        with self._lock:
            return copy.deepcopy(self._store.all(rtype))

    def inject(self, fault: Fault) -> Fault:
        """Adds a fault (see :class:`Fault`); returns it."""
        self.faults.append(fault)
        return fault

    # HTTP entry point

    def handle_http(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        """Answers one HTTP request; ``headers`` has lower-case names."""
        parts = urlsplit(raw_path)
        if not (
            parts.path == self.base_path or parts.path.startswith(self.base_path + "/")
        ):
            return _error_response(FhirError(404, "not-found", "not a FHIR endpoint"))
        relative = parts.path[len(self.base_path) :].strip("/")
        segments = [unquote(s) for s in relative.split("/")] if relative else []
        self.request_log.append((method, relative))
        with self._fault_lock:
            fault = next(
                (
                    f
                    for f in self.faults
                    if f.applies(method, segments[0] if segments else "")
                ),
                None,
            )
        if fault is not None and not fault.after:
            self._stopping.wait(fault.delay)
            if fault.status is not None:
                return _fault_response(fault.status)
        try:
            self._authorize(headers)
            query = parse_qsl(parts.query, keep_blank_values=True)
            response = self._route(method, segments, query, headers, body)
        except FhirError as error:
            response = _error_response(error)
        except Exception as error:  # a bug here must look like a server error
            response = _error_response(
                FhirError(500, "exception", f"{type(error).__name__}: {error}")
            )
        if fault is not None and fault.after:
            self._stopping.wait(fault.delay)
            if fault.status is not None:
                return _fault_response(fault.status)
        return response

    def _authorize(self, headers: Mapping[str, str]) -> None:
        """Bearer token check when ``required_token`` is set (security.html)."""
        if self.required_token is None:
            return
        if headers.get("authorization") != f"Bearer {self.required_token}":
            raise FhirError(401, "login", "a valid bearer token is required")

    def _route(
        self,
        method: str,
        segments: List[str],
        query: Query,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        """Maps a URL and method to an interaction (http.html#summary)."""
        if not segments:
            if method != "POST":
                raise FhirError(405, "not-supported", f"{method} [base] not supported")
            bundle = _parse_body(body, headers)
            if self.before_transaction is not None:
                self.before_transaction()
            return self.transaction(_check_body(bundle, "Bundle"))
        if segments == ["metadata"] and method == "GET":
            return Response(200, self.capability_statement())
        rtype = segments[0]
        if rtype not in RESOURCE_TYPES:
            raise FhirError(404, "not-supported", f"resource type {rtype} unsupported")
        with self._lock:
            return self._interaction(
                self._store, method, segments, query, headers, body
            )

    def _interaction(
        self,
        store: _Store,
        method: str,
        segments: List[str],
        query: Query,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        """Type- and instance-level interactions against ``store``."""
        rtype = segments[0]
        if len(segments) == 1 and method == "GET":
            return self._search(store, rtype, query, headers)
        if len(segments) == 1 and method == "POST":
            resource = _check_body(_parse_body(body, headers), rtype)
            return self._create(store, resource, headers.get("if-none-exist"))
        if len(segments) == 2 and method == "GET":
            return self._read(store, rtype, segments[1])
        if len(segments) == 2 and method == "PUT":
            resource = _check_body(_parse_body(body, headers), rtype)
            return self._update(store, segments[1], resource, headers.get("if-match"))
        if len(segments) == 4 and segments[2] == "_history" and method == "GET":
            return self._vread(store, rtype, segments[1], segments[3])
        raise FhirError(405, "not-supported", f"{method} {'/'.join(segments)}")

    # interactions

    def _read(self, store: _Store, rtype: str, rid: str) -> Response:
        """``GET [type]/[id]`` (http.html#read)."""
        resource = store.current(rtype, rid)
        if resource is None:
            raise FhirError(404, "not-found", f"{rtype}/{rid} is not known")
        headers = _write_headers(resource)
        del headers["Location"]
        return Response(200, resource, headers)

    def _vread(self, store: _Store, rtype: str, rid: str, vid: str) -> Response:
        """``GET [type]/[id]/_history/[vid]`` (http.html#vread)."""
        resource = store.version(rtype, rid, vid)
        if resource is None:
            raise FhirError(404, "not-found", f"{rtype}/{rid} has no version {vid}")
        headers = _write_headers(resource)
        del headers["Location"]
        return Response(200, resource, headers)

    def _create(
        self,
        store: _Store,
        resource: Resource,
        if_none_exist: Optional[str],
        rid: Optional[str] = None,
    ) -> Response:
        """``POST [type]``, conditional if ``If-None-Exist`` is given.

        http.html#create: any id in the body is ignored, the server assigns one.
        http.html#ccreate: no match creates, one match is returned with 200 and
        nothing is created, several matches fail with 412.
        """
        rtype = resource["resourceType"]
        if if_none_exist is not None:
            existing = self._conditional_match(store, rtype, if_none_exist)
            if existing is not None:
                return Response(200, existing, _write_headers(existing))
        resource = {**resource, "id": rid or str(uuid.uuid4())}
        _validate(resource)
        stored = store.write(resource)
        return Response(201, stored, _write_headers(stored))

    def _conditional_match(
        self, store: _Store, rtype: str, criteria: str
    ) -> Optional[Resource]:
        """The one resource matching ``If-None-Exist`` criteria, None, or 412."""
        if "?" in criteria:
            raise FhirError(
                400, "invalid", "If-None-Exist takes only the query part of a URL"
            )
        query = parse_qsl(criteria, keep_blank_values=True)
        if not query:
            raise FhirError(400, "invalid", "If-None-Exist has no search criteria")
        matches = self._matches(store, rtype, query, strict=True)
        if len(matches) > 1:
            raise FhirError(
                412,
                "multiple-matches",
                f"If-None-Exist matched {len(matches)} resources",
            )
        return matches[0] if matches else None

    def _update(
        self,
        store: _Store,
        rid: str,
        resource: Resource,
        if_match: Optional[str],
    ) -> Response:
        """``PUT [type]/[id]``, version-aware with ``If-Match`` (http.html#update).

        The body's id must equal the URL's (else 400). A stale ``If-Match`` fails
        with 412 (http.html#concurrency).
        """
        rtype = resource["resourceType"]
        if resource.get("id") != rid:
            raise FhirError(400, "invalid", "the body's id must match the URL's id")
        if not _ID.match(rid):
            raise FhirError(400, "invalid", f"'{rid}' is not a valid id")
        current = store.current(rtype, rid)
        if current is None:
            if if_match is not None:
                raise FhirError(
                    412, "conflict", f"{rtype}/{rid} does not exist (If-Match)"
                )
            if not self.update_create:
                raise FhirError(
                    405, "not-supported", "client-defined ids are not allowed"
                )
        elif (
            if_match is not None
            and _version_of(if_match) != (current["meta"]["versionId"])
        ):
            raise FhirError(
                412,
                "conflict",
                f"{rtype}/{rid} is at version {current['meta']['versionId']}, "
                f"not {_version_of(if_match)}",
            )
        _validate(resource)
        stored = store.write(resource)
        return Response(200 if current else 201, stored, _write_headers(stored))

    def _search(
        self,
        store: _Store,
        rtype: str,
        query: Query,
        headers: Mapping[str, str],
    ) -> Response:
        """``GET [type]?...`` answered with a searchset Bundle (search.html)."""
        lenient = "handling=lenient" in headers.get("prefer", "")
        matches = self._matches(store, rtype, query, strict=not lenient)
        matches = _sort(matches, rtype, query)
        offset = _page_offset(query)
        sizes = [size for size in (_count(query), self.page_size) if size is not None]
        end = offset + min(sizes) if sizes else len(matches)
        page = matches[offset:end]
        asked = [(name, raw) for name, raw in query if name != _PAGE_OFFSET]
        links = [
            {"relation": "self", "url": f"{self.base_url}/{rtype}?{urlencode(query)}"}
        ]
        if end < len(matches) and end > offset:
            following = urlencode([*asked, (_PAGE_OFFSET, str(end))])
            links.append(
                {"relation": "next", "url": f"{self.base_url}/{rtype}?{following}"}
            )
        return Response(
            200,
            {
                "resourceType": "Bundle",
                "id": str(uuid.uuid4()),
                "meta": {"lastUpdated": now_instant()},
                "type": "searchset",
                "total": len(matches),
                "link": links,
                "entry": [
                    {
                        "fullUrl": f"{self.base_url}/{rtype}/{r['id']}",
                        "resource": r,
                        "search": {"mode": "match"},
                    }
                    for r in page
                ],
            },
        )

    def _matches(
        self, store: _Store, rtype: str, query: Query, strict: bool
    ) -> List[Resource]:
        """Resources matching every filter parameter of ``query`` (AND of ORs)."""
        filters: List[Callable[[Resource], bool]] = []
        for name, raw in query:
            if (
                name in ("_sort", "_count", _PAGE_OFFSET)
                or name in _IGNORED_RESULT_PARAMS
            ):
                continue
            check = _filter(rtype, name, raw)
            if check is None:
                if strict:
                    raise FhirError(400, "not-supported", f"unknown parameter {name}")
                continue
            filters.append(check)
        return [r for r in store.all(rtype) if all(f(r) for f in filters)]

    # transactions

    def transaction(self, bundle: Resource) -> Response:
        """``POST [base]`` with a transaction Bundle (http.html#transaction).

        Everything happens on a staged copy of the store under the lock; the copy
        replaces the store only if every entry succeeded.
        """
        if bundle.get("type") != "transaction":
            raise FhirError(
                400, "not-supported", "only Bundle.type 'transaction' is supported"
            )
        entries = [
            _parse_entry(i, e, self.base_url)
            for i, e in enumerate(bundle.get("entry") or [])
        ]
        _refuse_overlaps(entries)
        with self._lock:
            staged = self._store.copy()
            responses = self._process(staged, entries)
            self._store = staged
        return Response(
            200,
            {
                "resourceType": "Bundle",
                "id": str(uuid.uuid4()),
                "type": "transaction-response",
                "entry": responses,
            },
        )

    def _process(self, store: _Store, entries: List[_Entry]) -> List[Resource]:
        """Processes entries in the order the specification gives; one response each.

        "Transaction Processing Rules": DELETE (not supported here), then POST, then
        PUT, then GET. ``urn:uuid`` ids of POST entries are resolved before any
        resource is stored, so references between entries work in any order.
        """
        responses: Dict[int, Resource] = {}
        ids = self._assign_ids(store, entries)
        for entry in entries:
            if entry.resource is not None:
                entry.resource = _replace_references(entry.resource, ids)
        for method in ("POST", "PUT", "GET"):
            for entry in (e for e in entries if e.method == method):
                try:
                    response = self._process_entry(store, entry, ids)
                except FhirError as error:
                    raise FhirError(
                        error.status,
                        error.code,
                        f"entry {entry.index} ({entry.method} {entry.rtype}): "
                        f"{error.diagnostics}",
                    ) from error
                responses[entry.index] = _response_entry(response, self.base_url)
        return [responses[i] for i in range(len(entries))]

    def _assign_ids(self, store: _Store, entries: List[_Entry]) -> Dict[str, str]:
        """``fullUrl`` -> ``Type/id`` for POST entries, resolving ``ifNoneExist``."""
        ids: Dict[str, str] = {}
        for entry in entries:
            if entry.method != "POST":
                continue
            if entry.if_none_exist is not None:
                entry.existing = self._conditional_match(
                    store, entry.rtype, entry.if_none_exist
                )
            entry.rid = entry.existing["id"] if entry.existing else str(uuid.uuid4())
            if entry.full_url:
                ids[entry.full_url] = f"{entry.rtype}/{entry.rid}"
        return ids

    def _process_entry(
        self, store: _Store, entry: _Entry, ids: Dict[str, str]
    ) -> Response:
        """One entry, as the matching RESTful interaction on the staged store."""
        if entry.method == "POST":
            assert entry.resource is not None
            if entry.existing is not None:
                return Response(200, entry.existing, _write_headers(entry.existing))
            resource = _check_body(entry.resource, entry.rtype)
            return self._create(store, resource, None, rid=entry.rid)
        if entry.method == "PUT":
            resource = _check_body(entry.resource, entry.rtype)
            assert entry.rid is not None
            return self._update(store, entry.rid, resource, entry.if_match)
        if entry.rid is None:
            return self._search(store, entry.rtype, entry.query, {})
        return self._read(store, entry.rtype, entry.rid)

    def capability_statement(self) -> Resource:
        """What this server supports (capabilitystatement.html), in brief."""
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": now_instant(),
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": rtype,
                            "interaction": [
                                {"code": code}
                                for code in ("read", "vread", "update", "create")
                                + ("search-type",)
                            ],
                            "versioning": "versioned-update",
                            "updateCreate": self.update_create,
                            "conditionalCreate": True,
                            "searchParam": [
                                {"name": name, "type": param.kind}
                                for name, param in _SEARCH_PARAMS[rtype].items()
                            ],
                        }
                        for rtype in RESOURCE_TYPES
                    ],
                    "interaction": [{"code": "transaction"}],
                }
            ],
        }


# --- search helpers ---------------------------------------------------------------


def _filter(rtype: str, name: str, raw: str) -> Optional[Callable[[Resource], bool]]:
    """A predicate for one search parameter occurrence; None if it is unknown."""
    if ":" in name:
        raise FhirError(400, "not-supported", f"modifier of {name} is not supported")
    alternatives = _split_unescaped(raw, ",")
    if name == "_id":
        return lambda r: r.get("id") in {_unescape(a) for a in alternatives}
    if name.startswith("_"):
        raise FhirError(400, "not-supported", f"parameter {name} is not supported")
    param = _SEARCH_PARAMS[rtype].get(name)
    if param is None:
        return None
    if param.kind == "token":
        return lambda r: any(
            r.get(param.element) is not None and _token_matches(a, r[param.element])
            for a in alternatives
        )
    if param.kind == "reference":
        return lambda r: any(
            _reference_matches(a, r.get(param.element), param.target)
            for a in alternatives
        )
    ranges = [_date_alternative(a) for a in alternatives]

    def date_filter(resource: Resource) -> bool:
        value = parse_instant(resource.get(param.element))
        return value is not None and any(
            _date_matches(prefix, low, high, value) for prefix, low, high in ranges
        )

    return date_filter


def _date_alternative(raw: str) -> Tuple[str, datetime, datetime]:
    """A prefix and the range of one date value; ``eq`` when there is no prefix."""
    prefix = raw[:2] if raw[:2].isalpha() else "eq"
    if raw[:2].isalpha() and prefix not in _DATE_PREFIXES:
        raise FhirError(400, "not-supported", f"date prefix '{prefix}' unsupported")
    low, high = _search_date_range(raw[2:] if raw[:2].isalpha() else raw)
    return prefix, low, high


def _sort(resources: List[Resource], rtype: str, query: Query) -> List[Resource]:
    """Applies ``_sort`` (search.html#_sort) on date parameters; missing last."""
    specs = [s for name, raw in query if name == "_sort" for s in raw.split(",") if s]
    ordered = list(resources)
    for spec in reversed(specs):  # stable sorts, least significant key first
        descending = spec.startswith("-")
        param = _SEARCH_PARAMS[rtype].get(spec.lstrip("-"))
        if param is None or param.kind != "date":
            raise FhirError(400, "not-supported", f"cannot sort by {spec}")
        keyed = [(parse_instant(r.get(param.element)), r) for r in ordered]
        present = [(key, r) for key, r in keyed if key is not None]
        missing = [r for key, r in keyed if key is None]
        present.sort(key=lambda pair: pair[0], reverse=descending)
        ordered = [r for _, r in present] + missing
    return ordered


def _count(query: Query) -> Optional[int]:
    """The ``_count`` page size (search.html#count), or None for all."""
    values = [raw for name, raw in query if name == "_count"]
    if not values:
        return None
    if not values[-1].isdigit():
        raise FhirError(400, "value", "_count must be a non-negative integer")
    return int(values[-1])


def _page_offset(query: Query) -> int:
    """Where the page of a ``next`` link starts (0: the first page)."""
    values = [raw for name, raw in query if name == _PAGE_OFFSET]
    if not values:
        return 0
    if not values[-1].isdigit():
        raise FhirError(400, "value", f"{_PAGE_OFFSET} must be a page this server gave")
    return int(values[-1])


# --- transaction helpers ----------------------------------------------------------


def _parse_entry(index: int, entry: Any, base_url: str) -> _Entry:
    """Reads ``Bundle.entry.request`` (bundle.html) into an :class:`_Entry`."""
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict) or not request.get("url"):
        raise FhirError(400, "required", f"entry {index} has no request.url")
    method = request.get("method")
    if method not in ("POST", "PUT", "GET"):
        raise FhirError(
            400, "not-supported", f"entry {index}: method {method} is not supported"
        )
    url = request["url"]
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    path, _, query = url.partition("?")
    segments = [unquote(s) for s in path.strip("/").split("/")]
    if segments[0] not in RESOURCE_TYPES or len(segments) > 2:
        raise FhirError(400, "not-supported", f"entry {index}: url {url} unsupported")
    if method == "PUT" and (len(segments) != 2 or query):
        raise FhirError(
            400, "not-supported", f"entry {index}: PUT needs [type]/[id] (no query)"
        )
    if method == "POST" and len(segments) != 1:
        raise FhirError(400, "invalid", f"entry {index}: POST goes to [type]")
    resource = entry.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise FhirError(400, "required", f"entry {index} has no resource")
    return _Entry(
        index=index,
        method=method,
        rtype=segments[0],
        rid=segments[1] if len(segments) == 2 else None,
        query=parse_qsl(query, keep_blank_values=True),
        resource=copy.deepcopy(resource) if resource is not None else None,
        full_url=entry.get("fullUrl"),
        if_match=request.get("ifMatch"),
        if_none_exist=request.get("ifNoneExist"),
    )


def _refuse_overlaps(entries: Sequence[_Entry]) -> None:
    """Two PUTs of the same resource fail the transaction (processing rules)."""
    seen = set()
    for entry in entries:
        if entry.method != "PUT":
            continue
        key = (entry.rtype, entry.rid)
        if key in seen:
            raise FhirError(
                400,
                "invalid",
                f"entry {entry.index}: {entry.rtype}/{entry.rid} appears twice",
            )
        seen.add(key)


def _replace_references(value: Any, ids: Mapping[str, str]) -> Any:
    """Replaces ``urn:uuid`` references to entries by the ids they were given."""
    if isinstance(value, dict):
        return {
            key: (
                ids.get(item, item)
                if key == "reference" and isinstance(item, str)
                else _replace_references(item, ids)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_replace_references(item, ids) for item in value]
    return value


def _response_entry(response: Response, base_url: str) -> Resource:
    """``Bundle.entry.response`` for one processed entry (bundle.html)."""
    status = f"{response.status} {HTTPStatus(response.status).phrase}"
    entry: Resource = {"response": {"status": status}}
    body = response.body
    if body is not None and body.get("resourceType") != "Bundle":
        entry["fullUrl"] = f"{base_url}/{body['resourceType']}/{body['id']}"
        entry["response"]["etag"] = etag(body)
        entry["response"]["lastModified"] = body["meta"]["lastUpdated"]
        if "Location" in response.headers:
            entry["response"]["location"] = response.headers["Location"]
    if body is not None:
        entry["resource"] = body
    return entry


# --- HTTP plumbing ----------------------------------------------------------------


def _parse_body(body: bytes, headers: Mapping[str, str]) -> Any:
    """The JSON body; 415 for another media type, 400 if it is not JSON."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_CONTENT_TYPES:
        raise FhirError(
            415, "not-supported", f"Content-Type must be {FHIR_JSON}, not {media_type}"
        )
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FhirError(400, "structure", f"the body is not JSON: {error}") from error


def _error_response(error: FhirError) -> Response:
    """An error status with its OperationOutcome."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    return Response(error.status, error.outcome(), headers)


def _fault_response(status: int) -> Response:
    """What an injected fault answers."""
    return _error_response(FhirError(status, "transient", "injected fault"))


class _HttpServer(ThreadingHTTPServer):
    """Threaded server with a backlog large enough for bursts of clients."""

    daemon_threads = True
    request_queue_size = 128
    facade: FhirFacade


class _Handler(BaseHTTPRequestHandler):
    """Writes :meth:`FhirFacade.handle_http` answers to the socket."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm
        # and the client's delayed ACK add 40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._answer("PATCH")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        response = self.server.facade.handle_http(method, self.path, headers, body)
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", f"{FHIR_JSON}; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the tests read ``FhirFacade.request_log`` instead."""


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Serves the facade until interrupted, optionally with a week of free slots."""
    parser = argparse.ArgumentParser(description="A FHIR R4 facade on loopback.")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--seed", action="store_true", help="add demo slots")
    args = parser.parse_args(argv)
    facade = FhirFacade(port=args.port).start()
    if args.seed:
        schedule = facade.seed_schedule("Practitioner/demo", "demo")
        tomorrow = datetime.now(timezone.utc).replace(
            hour=14, minute=0, second=0, microsecond=0
        ) + timedelta(days=1)
        starts = [
            tomorrow + timedelta(days=d, minutes=30 * i)
            for d in range(7)
            for i in range(8)
        ]
        system = "urn:valliant-life-medical:visit-type"
        facade.seed_slots(schedule, starts, (system, "new_patient"))
        print(f"seeded {len(starts)} free slots on Schedule/{schedule}", flush=True)
    print(f"FHIR R4 facade on {facade.base_url} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        facade.stop()


if __name__ == "__main__":
    main()
