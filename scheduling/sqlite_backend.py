"""The embedded scheduler: bookable times from ``clinic.yml``, bookings in SQLite.

Times are generated, not stored: every visit type can start on the ``slot_minutes``
grid inside the opening hours, with every provider, in the clinic's time zone. A
time is open unless an active booking, an unexpired hold or a staff block of the
provider overlaps it. Bookings, holds and blocks are stored as UTC time ranges
(whole seconds since the epoch) per provider.

Why a double booking cannot happen: every write runs in a ``BEGIN IMMEDIATE``
transaction, which SQLite grants to one writer at a time (across threads and
processes), and ``book`` checks for overlapping bookings and holds and inserts in
that one transaction. Inside the database itself, triggers refuse any overlapping
active booking of a provider (whoever writes it), backed by a partial unique index
(one active booking per provider and start) and CHECK constraints.

The same code keeps the bookings in PostgreSQL when given a ``postgresql://`` URL
(``STORE_DATABASE_URL``, the scaled profile's several action servers): there the
one writer at a time is a transaction-scoped advisory lock, and an exclusion
constraint takes the triggers' place (see :mod:`clinic_common.sqlite`).

Daylight-saving time: slots are wall-clock times. A 9:00 slot is 9:00 local time on
both sides of a change; a local time that does not exist (clocks jump forward) is
never offered; a local time that happens twice (clocks fall back) is offered once,
at its first occurrence. A visit fits if its local start and end both lie inside
one opening interval of that day.

Every datetime this module returns is aware and in UTC; convert it with
``config.tz`` for display. Not local time, because Python compares and subtracts
two datetimes that share one ZoneInfo by their wall clocks, which is wrong across
a fall-back change (01:45 CDT would come after 01:15 CST).

Patient names and phone numbers are PHI: they are never logged. Logs name
reference codes and slot ids only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from bisect import bisect_left
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from clinic_common.sqlite import Connection, Database, StrPath
from scheduling import database_unavailable
from scheduling.base import (
    BOOKED,
    CANCELLED,
    BackendUnavailable,
    Booking,
    BookingNotFound,
    Hold,
    InvalidRequest,
    Patient,
    Slot,
    SlotUnavailable,
    checked_idempotency_key,
    checked_patient,
    local_day,
    new_reference,
    normalize_reference,
    positive_ttl,
    require_aware,
    search_window,
)
from scheduling.base import Clock as Clock  # re-exported for staff.scheduling_cli
from scheduling.base import utc_now as utc_now
from scheduling.config import SchedulingConfig, VisitType

logger = logging.getLogger(__name__)

_REFERENCE_ATTEMPTS = 20
_UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    reference TEXT PRIMARY KEY,
    slot_id TEXT NOT NULL,
    visit_type TEXT NOT NULL,
    provider TEXT NOT NULL,
    start_utc INTEGER NOT NULL,
    end_utc INTEGER NOT NULL CHECK (end_utc > start_utc),
    patient_name TEXT NOT NULL,
    patient_phone TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('booked', 'cancelled')),
    created_utc INTEGER NOT NULL,
    cancelled_utc INTEGER
);
-- One active booking per provider and start time. Overlaps of visits of different
-- lengths are ruled out by book(), which checks and inserts as the one writer,
-- and again by _SQLITE_ONLY's triggers or _POSTGRES_ONLY's exclusion constraint,
-- which refuse any write that would overlap.
CREATE UNIQUE INDEX IF NOT EXISTS bookings_active_start
    ON bookings (provider, start_utc) WHERE status = 'booked';
CREATE INDEX IF NOT EXISTS bookings_by_start ON bookings (start_utc);
CREATE TABLE IF NOT EXISTS holds (
    hold_id TEXT PRIMARY KEY,
    slot_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    start_utc INTEGER NOT NULL,
    end_utc INTEGER NOT NULL CHECK (end_utc > start_utc),
    expires_utc INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_by_start ON holds (start_utc);

-- AUTOINCREMENT: an id is never reused, so unblocking a stale id cannot remove
-- a newer block.
CREATE TABLE IF NOT EXISTS blocks (
    block_id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT,  -- NULL: every provider
    start_utc INTEGER NOT NULL,
    end_utc INTEGER NOT NULL CHECK (end_utc > start_utc),
    reason TEXT NOT NULL DEFAULT ''
);

-- What the patient said about reminders (issue 14), beside the booking: a table of
-- its own, so that a database made before reminders existed gains it when opened
-- (CREATE TABLE IF NOT EXISTS is the migration) and its bookings read as made
-- without consent. Times are UTC seconds; NULL: not (yet).
CREATE TABLE IF NOT EXISTS booking_reminders (
    reference TEXT PRIMARY KEY REFERENCES bookings (reference),
    consent INTEGER NOT NULL DEFAULT 0 CHECK (consent IN (0, 1)),
    confirmed_utc INTEGER,
    reschedule_requested_utc INTEGER
);

-- Idempotency keys of book and cancel, with a hash of the request they were
-- first used for (a hash, so that no second copy of patient data is kept).
CREATE TABLE IF NOT EXISTS requests (
    idempotency_key TEXT PRIMARY KEY,
    operation TEXT NOT NULL CHECK (operation IN ('book', 'cancel')),
    fingerprint TEXT NOT NULL,
    reference TEXT NOT NULL REFERENCES bookings (reference)
);
"""

_SQLITE_ONLY = """
CREATE TRIGGER IF NOT EXISTS bookings_no_overlap_insert
BEFORE INSERT ON bookings
WHEN NEW.status = 'booked' AND EXISTS (
    SELECT 1 FROM bookings
     WHERE provider = NEW.provider AND status = 'booked'
       AND start_utc < NEW.end_utc AND end_utc > NEW.start_utc)
BEGIN
    SELECT RAISE(ABORT, 'overlapping booking');
END;
CREATE TRIGGER IF NOT EXISTS bookings_no_overlap_update
BEFORE UPDATE OF provider, start_utc, end_utc, status ON bookings
WHEN NEW.status = 'booked' AND EXISTS (
    SELECT 1 FROM bookings
     WHERE provider = NEW.provider AND status = 'booked'
       AND reference != NEW.reference
       AND start_utc < NEW.end_utc AND end_utc > NEW.start_utc)
BEGIN
    SELECT RAISE(ABORT, 'overlapping booking');
END;
"""

# PostgreSQL's own rule against overlaps: no two active bookings of one provider
# whose [start, end) ranges meet (btree_gist lets "=" on text join the GiST index).
_POSTGRES_ONLY = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
DO $$ BEGIN
    ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap EXCLUDE USING gist
        (provider WITH =, int8range(start_utc, end_utc) WITH &&)
        WHERE (status = 'booked');
EXCEPTION WHEN duplicate_object OR duplicate_table THEN NULL;
END $$;
"""

# Everything that makes a provider busy in [lo, hi): one definition for both
# find_slots and the check before hold and book. provider NULL = every provider.
_BUSY_SQL = """
SELECT provider, start_utc, end_utc FROM bookings
 WHERE status = 'booked' AND start_utc < :hi AND end_utc > :lo
UNION ALL
SELECT provider, start_utc, end_utc FROM holds
 WHERE expires_utc > :now AND hold_id != :own_hold
   AND start_utc < :hi AND end_utc > :lo
UNION ALL
SELECT provider, start_utc, end_utc FROM blocks
 WHERE start_utc < :hi AND end_utc > :lo
"""


# --- times and slots ---------------------------------------------------------------


def _epoch(moment: datetime) -> int:
    """Whole seconds since the epoch, the unit times are stored in."""
    return int(require_aware(moment).timestamp())


def _from_epoch(seconds: int) -> datetime:
    """The stored time ``seconds`` as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def _grid_times(interval_start: time, interval_end: time, step: int) -> Iterator[time]:
    """Wall-clock times on the ``step``-minute grid, from start up to (not) end."""
    first = interval_start.hour * 60 + interval_start.minute
    last = interval_end.hour * 60 + interval_end.minute
    minute = -(-first // step) * step  # first grid point at or after the start
    while minute < last:
        yield time(minute // 60, minute % 60)
        minute += step


def slot_times(
    config: SchedulingConfig, day: date, visit: VisitType
) -> List[Tuple[datetime, datetime]]:
    """UTC (start, end) of every visit of ``visit`` that fits ``day``'s hours.

    Earliest first; the same for every provider. See the module docstring for
    what happens on daylight-saving days.
    """
    tz = config.tz
    length = timedelta(minutes=visit.minutes)
    times: List[Tuple[datetime, datetime]] = []
    for interval in config.intervals_on(day):
        closing = datetime.combine(day, interval.end)
        for wall_time in _grid_times(interval.start, interval.end, config.slot_minutes):
            wall = datetime.combine(day, wall_time)
            start = wall.replace(tzinfo=tz).astimezone(timezone.utc)
            if start.astimezone(tz).replace(tzinfo=None) != wall:
                continue  # this local time does not exist: clocks jump forward
            end_wall = (start + length).astimezone(tz).replace(tzinfo=None)
            if end_wall <= closing:
                times.append((start, start + length))
    return times


# (consent, confirmed_utc, reschedule_requested_utc) of a booking_reminders row;
# a booking without one: no consent, no reply.
_Reply = Tuple[int, Optional[int], Optional[int]]
_NO_REPLY: _Reply = (0, None, None)


def _booking(row: Any, reply: _Reply) -> Booking:
    """The booking of a ``bookings`` row and its ``booking_reminders`` values."""
    consent, confirmed_utc, reschedule_utc = reply
    return Booking(
        reference=row["reference"],
        slot=Slot(
            slot_id=row["slot_id"],
            start=_from_epoch(row["start_utc"]),
            end=_from_epoch(row["end_utc"]),
            visit_type=row["visit_type"],
            provider=row["provider"],
        ),
        patient=Patient(row["patient_name"], row["patient_phone"]),
        status=row["status"],
        reminder_consent=bool(consent),
        confirmed=confirmed_utc is not None,
        reschedule_requested=reschedule_utc is not None,
    )


def _fingerprint(*parts: str) -> str:
    """A hash identifying a request, to tell a replay from a reused key."""
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


class BusyTimes:
    """One provider's busy ranges, for quick "does [start, end) overlap?" tests.

    Ranges sorted by start, with the latest end seen so far: the ranges that
    start before ``end`` are a prefix (found by bisection), and one of them
    overlaps exactly when the latest end within that prefix is after ``start``.
    """

    def __init__(self, ranges: Iterable[Tuple[int, int]]) -> None:
        ordered = sorted(ranges)
        self._starts = [start for start, _ in ordered]
        self._latest_ends = list(accumulate((end for _, end in ordered), max))

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any busy range overlaps [start, end)."""
        count = bisect_left(self._starts, end)  # ranges starting before `end`
        return count > 0 and self._latest_ends[count - 1] > start


# --- the scheduler -----------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Time staff took off the schedule (UTC); ``provider`` None: every provider."""

    block_id: int
    start: datetime
    end: datetime
    provider: Optional[str]
    reason: str


class SqliteScheduler:
    """The embedded :class:`~scheduling.base.Scheduler`.

    Args:
        path: the SQLite file, created (mode 0600) on first use, or a PostgreSQL
            URL (tables created on first use).
        config: opening hours, visit types and providers.
        clock: returns the current aware time; injectable for tests.
    """

    def __init__(
        self, path: StrPath, config: SchedulingConfig, clock: Optional[Clock] = None
    ) -> None:
        self._db = Database(
            path,
            _SCHEMA,
            database_unavailable,
            sqlite_only=_SQLITE_ONLY,
            postgres_only=_POSTGRES_ONLY,
        )
        self._config = config
        self._clock: Clock = clock or utc_now

    @property
    def path(self) -> Path:
        """The SQLite file (ValueError when the bookings are in PostgreSQL)."""
        return self._db.path

    @property
    def location(self) -> StrPath:
        """The SQLite file or the PostgreSQL URL."""
        return self._db.location

    @property
    def config(self) -> SchedulingConfig:
        """The scheduling settings this scheduler generates slots from."""
        return self._config

    # --- retention (staff: clinicbot retention, clinicbot forget) -----------------

    def anonymise_visits_before(self, before: datetime, dry_run: bool = False) -> int:
        """Removes name and phone from bookings whose visit ended before ``before``.

        The booking's row stays, status and all, so the clinic's counts of visits
        stay right; its idempotency records (a hash of the request, phone included)
        go. Returns how many bookings were (or, ``dry_run``, would be) anonymised.
        """
        return self._anonymise("end_utc < ?", (_epoch(require_aware(before)),), dry_run)

    def forget_phone(self, phone: str, dry_run: bool = False) -> int:
        """Anonymises every booking of ``phone`` (E.164, as bookings store it).

        An upcoming active booking is also cancelled: nobody could look it up, change
        it or be reached about it any more, and its time is freed. Past ones keep
        their status. Returns how many bookings were (would be) anonymised.
        """
        return self._anonymise("patient_phone = ?", (phone,), dry_run, cancel=True)

    def _anonymise(
        self,
        where: str,
        parameters: Tuple[object, ...],
        dry_run: bool,
        cancel: bool = False,
    ) -> int:
        chosen = f"({where}) AND (patient_name != '' OR patient_phone != '')"
        with self._db.write() as connection:
            references = [
                row["reference"]
                for row in connection.execute(
                    f"SELECT reference FROM bookings WHERE {chosen}", parameters
                )
            ]
            if dry_run or not references:
                return len(references)
            connection.execute("PRAGMA secure_delete = ON")  # old bytes overwritten
            marks = ", ".join("?" * len(references))
            if cancel:
                now = _epoch(self._now())
                connection.execute(
                    "UPDATE bookings SET status = ?, cancelled_utc = ?"
                    f" WHERE reference IN ({marks}) AND status = ? AND start_utc > ?",
                    (CANCELLED, now, *references, BOOKED, now),
                )
            connection.execute(
                f"DELETE FROM requests WHERE reference IN ({marks})", references
            )
            connection.execute(
                "UPDATE bookings SET patient_name = '', patient_phone = ''"
                f" WHERE reference IN ({marks})",
                references,
            )
        logger.info("Anonymised %d booking(s).", len(references))
        return len(references)

    # --- the Scheduler protocol ---------------------------------------------------

    def find_slots(
        self,
        visit_type: str,
        earliest: datetime,
        latest: datetime,
        limit: int = 5,
    ) -> List[Slot]:
        """Open slots of ``visit_type`` starting in [earliest, latest), soonest first.

        One slot per start time: the patient picks a time, not a provider, so the
        first free provider (in config order) gets it.

        Raises:
            ValueError: naive datetimes or an unknown visit type.
        """
        now = self._now()
        window = search_window(earliest, latest, limit, now)
        visit = self._visit(visit_type)
        horizon = self._horizon(now)
        found: List[Slot] = []
        if window is None or window[0] >= horizon:
            return found
        lower, upper = window[0], min(window[1], horizon)
        day = lower.astimezone(self._config.tz).date()
        last_day = upper.astimezone(self._config.tz).date()
        with self._db.connection() as connection:
            while day <= last_day and len(found) < limit:
                times = [
                    (start, end)
                    for start, end in slot_times(self._config, day, visit)
                    if earliest <= start < latest and self._bookable(start, now)
                ]
                found += self._open_slots(connection, visit, times, now)
                day += timedelta(days=1)
        return found[:limit]

    def hold(self, slot: Slot, ttl: Optional[timedelta] = None) -> Hold:
        """Reserves ``slot`` for ``ttl`` (default: ``hold_minutes`` of the config).

        Raises:
            SlotUnavailable: the slot is taken, held, blocked, past or not real.
        """
        default = timedelta(minutes=self._config.hold_minutes)
        ttl = positive_ttl(default if ttl is None else ttl)
        slot = self._checked_slot(slot)
        now = self._now()
        hold_id = secrets.token_urlsafe(16)
        expires = _epoch(now + ttl)
        with self._db.write() as connection:
            connection.execute(
                "DELETE FROM holds WHERE expires_utc <= ?", (_epoch(now),)
            )
            self._require_free(connection, slot, now, own_hold="")
            connection.execute(
                "INSERT INTO holds (hold_id, slot_id, provider, start_utc, end_utc,"
                " expires_utc) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    hold_id,
                    slot.slot_id,
                    slot.provider,
                    _epoch(slot.start),
                    _epoch(slot.end),
                    expires,
                ),
            )
        logger.info("Held slot %s", slot.slot_id)
        return Hold(hold_id, slot, _from_epoch(expires))

    def release(self, hold_id: str) -> None:
        """Gives a held slot back; an unknown or expired hold is a no-op."""
        with self._db.write() as connection:
            connection.execute("DELETE FROM holds WHERE hold_id = ?", (hold_id,))

    def book(
        self,
        slot: Slot,
        patient: Patient,
        idempotency_key: str,
        hold_id: Optional[str] = None,
        reminder_consent: bool = False,
    ) -> Booking:
        """Books ``slot`` for ``patient``: check and insert in one transaction.

        The same ``idempotency_key`` again returns that booking as it is now
        (same reference) and changes nothing. ``reminder_consent`` is stored with
        the booking (see :mod:`scheduling.reminders`).

        Raises:
            SlotUnavailable: someone else booked, holds or blocked an overlapping
                time of this provider, or the slot is past or not on the schedule.
            ValueError: the key was used for a different slot or patient, or the
                patient's name or phone is unusable.
        """
        key = checked_idempotency_key(idempotency_key)
        patient = checked_patient(patient)
        fingerprint = _fingerprint("book", slot.slot_id, patient.name, patient.phone)
        now = self._now()
        with self._db.write() as connection:
            replay = self._replay(connection, key, "book", fingerprint)
            if replay is not None:
                return replay
            slot = self._checked_slot(slot)
            self._require_free(connection, slot, now, own_hold=hold_id or "")
            reference = self._unused_reference(connection)
            self._insert_booking(connection, reference, slot, patient, now)
            connection.execute(
                "INSERT INTO requests (idempotency_key, operation, fingerprint,"
                " reference) VALUES (?, 'book', ?, ?)",
                (key, fingerprint, reference),
            )
            if reminder_consent:
                connection.execute(
                    "INSERT INTO booking_reminders (reference, consent) VALUES (?, 1)",
                    (reference,),
                )
            if hold_id:
                connection.execute("DELETE FROM holds WHERE hold_id = ?", (hold_id,))
        logger.info("Booked %s in slot %s", reference, slot.slot_id)
        return Booking(reference, slot, patient, BOOKED, reminder_consent)

    def cancel(self, reference: str, phone: str, idempotency_key: str) -> Booking:
        """Cancels the booking with this reference and phone.

        Cancelling a cancelled booking returns it unchanged; the same
        ``idempotency_key`` again returns the booking and changes nothing.

        Raises:
            BookingNotFound: reference and phone do not match one booking.
            ValueError: the key was used for a different request.
        """
        key = checked_idempotency_key(idempotency_key)
        code, phone = normalize_reference(reference), phone.strip()
        fingerprint = _fingerprint("cancel", code, phone)
        now = self._now()
        with self._db.write() as connection:
            replay = self._replay(connection, key, "cancel", fingerprint)
            if replay is not None:
                return replay
            booking = self._find(connection, code, phone)
            if booking.status == BOOKED:
                connection.execute(
                    "UPDATE bookings SET status = 'cancelled', cancelled_utc = ?"
                    " WHERE reference = ?",
                    (_epoch(now), code),
                )
                booking = replace(booking, status=CANCELLED)
            connection.execute(
                "INSERT INTO requests (idempotency_key, operation, fingerprint,"
                " reference) VALUES (?, 'cancel', ?, ?)",
                (key, fingerprint, code),
            )
        logger.info("Cancelled %s", code)
        return booking

    def get_booking(self, reference: str, phone: str) -> Booking:
        """The booking with this reference and phone, else ``BookingNotFound``."""
        with self._db.connection() as connection:
            return self._find(connection, normalize_reference(reference), phone.strip())

    def confirm(self, reference: str, phone: str) -> Booking:
        """Marks the booking confirmed; a cancelled one is returned unchanged.

        Raises:
            BookingNotFound: reference and phone do not match one booking.
        """
        return self._note_reply(reference, phone, "confirmed_utc")

    def note_reschedule_request(self, reference: str, phone: str) -> Booking:
        """Notes the patient asked to move the booking; cancelled: unchanged.

        Raises:
            BookingNotFound: reference and phone do not match one booking.
        """
        return self._note_reply(reference, phone, "reschedule_requested_utc")

    def _note_reply(self, reference: str, phone: str, column: str) -> Booking:
        """Stamps ``column`` of an active booking's reminder row (first time only)."""
        code = normalize_reference(reference)
        with self._db.write() as connection:
            booking = self._find(connection, code, phone.strip())
            if booking.status != BOOKED:
                return booking
            connection.execute(
                f"INSERT INTO booking_reminders (reference, {column}) VALUES (?, ?)"
                f" ON CONFLICT (reference) DO UPDATE SET {column} ="
                f" COALESCE(booking_reminders.{column}, excluded.{column})",
                (code, _epoch(self._now())),
            )
            booking = self._find(connection, code, phone.strip())
        logger.info("Noted the reminder reply of %s", code)
        return booking

    # --- for the action layer and staff -------------------------------------------

    def slot_from_id(self, slot_id: str) -> Slot:
        """The slot a slot id names, if it is on the schedule (taken or not).

        Raises:
            SlotUnavailable: malformed id, unknown visit type or provider, or a
                start time the opening hours do not offer.
        """
        parts = slot_id.split("|") if isinstance(slot_id, str) else []
        if len(parts) != 3:
            raise SlotUnavailable("That time is not on the schedule.")
        key, provider, stamp = parts
        try:
            start = datetime.strptime(stamp, _UTC_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError as error:
            raise SlotUnavailable("That time is not on the schedule.") from error
        visit = self._config.visit_type(key)
        if visit is None or provider not in self._config.providers:
            raise SlotUnavailable("That time is not on the schedule.")
        day = start.astimezone(self._config.tz).date()
        if all(start != begin for begin, _ in slot_times(self._config, day, visit)):
            raise SlotUnavailable("That time is not on the schedule.")
        return self._slot(visit, provider, start)

    def block(
        self,
        start: datetime,
        end: datetime,
        provider: Optional[str] = None,
        reason: str = "",
    ) -> Block:
        """Takes [start, end) off the schedule for ``provider`` (None: everyone).

        Existing bookings in that time stay booked: see
        :meth:`active_bookings_between` to find the patients to call.
        """
        require_aware(start, "start")
        require_aware(end, "end")
        if end <= start:
            raise ValueError("a block must end after it starts")
        if provider is not None and provider not in self._config.providers:
            raise ValueError(f"unknown provider '{provider}'")
        with self._db.write() as connection:
            block_id = int(
                connection.execute(
                    "INSERT INTO blocks (provider, start_utc, end_utc, reason)"
                    " VALUES (?, ?, ?, ?) RETURNING block_id",
                    (provider, _epoch(start), _epoch(end), reason),
                ).fetchone()[0]
            )
        logger.info("Added block %d", block_id)
        return Block(
            block_id,
            start.astimezone(timezone.utc),
            end.astimezone(timezone.utc),
            provider,
            reason,
        )

    def unblock(self, block_id: int) -> bool:
        """Removes a block; False if there was none with this id."""
        with self._db.write() as connection:
            cursor = connection.execute(
                "DELETE FROM blocks WHERE block_id = ?", (block_id,)
            )
        return int(cursor.rowcount) > 0

    def list_blocks(self, include_past: bool = False) -> List[Block]:
        """The blocks, earliest first; by default only those not yet over."""
        since = 0 if include_past else _epoch(self._now())  # 0: the epoch
        with self._db.connection() as connection:
            rows = connection.execute(
                "SELECT * FROM blocks WHERE end_utc > ? ORDER BY start_utc, block_id",
                (since,),
            ).fetchall()
        return [
            Block(
                row["block_id"],
                _from_epoch(row["start_utc"]),
                _from_epoch(row["end_utc"]),
                row["provider"],
                row["reason"],
            )
            for row in rows
        ]

    def bookings_on(self, day: date) -> List[Booking]:
        """Every booking (active or cancelled) starting on local ``day``, by time."""
        return self.bookings_between(*local_day(day, self._config.tz))

    def bookings_between(self, start: datetime, end: datetime) -> List[Booking]:
        """Every booking (active or cancelled) starting in [start, end), by time."""
        return self._bookings(
            "SELECT * FROM bookings WHERE start_utc >= ? AND start_utc < ?"
            " ORDER BY start_utc, provider",
            (_epoch(start), _epoch(end)),
        )

    def active_bookings_between(
        self, start: datetime, end: datetime, provider: Optional[str] = None
    ) -> List[Booking]:
        """Active bookings overlapping [start, end), of ``provider`` or of anyone."""
        return [
            booking
            for booking in self._bookings(
                "SELECT * FROM bookings WHERE status = 'booked'"
                " AND start_utc < ? AND end_utc > ? ORDER BY start_utc, provider",
                (_epoch(end), _epoch(start)),
            )
            if provider is None or booking.slot.provider == provider
        ]

    # --- helpers ------------------------------------------------------------------

    def _now(self) -> datetime:
        """The clock's time, which must be aware, in UTC (see the module docstring)."""
        return require_aware(self._clock(), "clock()").astimezone(timezone.utc)

    def _horizon(self, now: datetime) -> datetime:
        """No slot starting at or after this is offered or booked."""
        return now + timedelta(days=self._config.booking_horizon_days)

    def _bookable(self, start: datetime, now: datetime) -> bool:
        """Whether a slot starting at ``start`` is neither past nor too far ahead."""
        return now < start < self._horizon(now)

    def _visit(self, key: str) -> VisitType:
        """The visit type ``key``; ValueError if the config has none."""
        visit = self._config.visit_type(key)
        if visit is None:
            raise ValueError(f"unknown visit type '{key}'")
        return visit

    def _slot(self, visit: VisitType, provider: str, start: datetime) -> Slot:
        """The slot of ``visit`` with ``provider`` at ``start``, in UTC."""
        start = start.astimezone(timezone.utc)
        return Slot(
            slot_id=f"{visit.key}|{provider}|{start.strftime(_UTC_FORMAT)}",
            start=start,
            end=start + timedelta(minutes=visit.minutes),
            visit_type=visit.key,
            provider=provider,
        )

    def _checked_slot(self, slot: Slot) -> Slot:
        """The schedule's own slot for ``slot.slot_id``, if ``slot`` matches it."""
        canonical = self.slot_from_id(slot.slot_id)
        if (slot.start, slot.end, slot.visit_type, slot.provider) != (
            canonical.start,
            canonical.end,
            canonical.visit_type,
            canonical.provider,
        ):
            raise SlotUnavailable("That time is not on the schedule.")
        return canonical

    def _busy(
        self,
        connection: Connection,
        lo: datetime,
        hi: datetime,
        now: datetime,
        own_hold: str = "",
    ) -> List[Tuple[Optional[str], int, int]]:
        """(provider, start, end) of everything busy in [lo, hi)."""
        rows = connection.execute(
            _BUSY_SQL,
            {
                "lo": _epoch(lo),
                "hi": _epoch(hi),
                "now": _epoch(now),
                "own_hold": own_hold,
            },
        ).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    def _open_slots(
        self,
        connection: Connection,
        visit: VisitType,
        times: Sequence[Tuple[datetime, datetime]],
        now: datetime,
    ) -> List[Slot]:
        """One slot per free start time in ``times``, first free provider."""
        if not times:
            return []
        busy = self._busy(connection, times[0][0], times[-1][1], now)
        schedules = {
            provider: BusyTimes(
                (lo, hi) for owner, lo, hi in busy if owner in (None, provider)
            )
            for provider in self._config.providers
        }
        slots: List[Slot] = []
        for start, end in times:
            first, last = _epoch(start), _epoch(end)
            for provider in self._config.providers:
                if not schedules[provider].overlaps(first, last):
                    slots.append(self._slot(visit, provider, start))
                    break
        return slots

    def _require_free(
        self,
        connection: Connection,
        slot: Slot,
        now: datetime,
        own_hold: str,
    ) -> None:
        """Raises SlotUnavailable unless ``slot`` can be held or booked right now."""
        if not self._bookable(slot.start, now):
            raise SlotUnavailable("That time is in the past or too far ahead.")
        for owner, _, _ in self._busy(connection, slot.start, slot.end, now, own_hold):
            if owner is None or owner == slot.provider:
                raise SlotUnavailable("That time is no longer available.")

    def _unused_reference(self, connection: Connection) -> str:
        """A reference code no booking has yet (we hold the write lock)."""
        for _ in range(_REFERENCE_ATTEMPTS):
            reference = new_reference()
            taken = connection.execute(
                "SELECT 1 FROM bookings WHERE reference = ?", (reference,)
            ).fetchone()
            if taken is None:
                return reference
        raise BackendUnavailable("Could not find an unused reference code.")

    def _insert_booking(
        self,
        connection: Connection,
        reference: str,
        slot: Slot,
        patient: Patient,
        now: datetime,
    ) -> None:
        """Inserts the booking; a constraint violation means the slot is taken."""
        try:
            connection.execute(
                "INSERT INTO bookings (reference, slot_id, visit_type, provider,"
                " start_utc, end_utc, patient_name, patient_phone, status,"
                " created_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'booked', ?)",
                (
                    reference,
                    slot.slot_id,
                    slot.visit_type,
                    slot.provider,
                    _epoch(slot.start),
                    _epoch(slot.end),
                    patient.name,
                    patient.phone,
                    _epoch(now),
                ),
            )
        except connection.IntegrityError as error:
            raise SlotUnavailable("That time is no longer available.") from error

    def _replay(
        self,
        connection: Connection,
        key: str,
        operation: str,
        fingerprint: str,
    ) -> Optional[Booking]:
        """The booking of an earlier request with this key, or None if it is new."""
        row = connection.execute(
            "SELECT operation, fingerprint, reference FROM requests"
            " WHERE idempotency_key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        if (row["operation"], row["fingerprint"]) != (operation, fingerprint):
            raise InvalidRequest(
                "this idempotency key was used for a different request"
            )
        return self._bookings(
            "SELECT * FROM bookings WHERE reference = ?",
            (row["reference"],),
            connection,
        )[0]

    def _find(self, connection: Connection, code: str, phone: str) -> Booking:
        """The booking with reference ``code`` and this phone; no hint which failed."""
        found = self._bookings(
            "SELECT * FROM bookings WHERE reference = ?", (code,), connection
        )
        if not found or found[0].patient.phone != phone:
            raise BookingNotFound("No booking matches that reference and phone number.")
        return found[0]

    def _bookings(
        self,
        sql: str,
        parameters: Tuple[object, ...],
        connection: Optional[Connection] = None,
    ) -> List[Booking]:
        """Runs a ``SELECT * FROM bookings`` query, on ``connection`` or a new one."""
        if connection is None:
            with self._db.connection() as own:
                rows = own.execute(sql, parameters).fetchall()
        else:
            rows = connection.execute(sql, parameters).fetchall()
        replies = self._replies([row["reference"] for row in rows], connection)
        return [_booking(row, replies.get(row["reference"], _NO_REPLY)) for row in rows]

    def _replies(
        self, references: List[str], connection: Optional[Connection]
    ) -> Dict[str, _Reply]:
        """(consent, confirmed_utc, reschedule_requested_utc) of these bookings."""
        if not references:
            return {}
        marks = ", ".join("?" * len(references))
        sql = (
            "SELECT reference, consent, confirmed_utc, reschedule_requested_utc"
            f" FROM booking_reminders WHERE reference IN ({marks})"
        )
        if connection is None:
            with self._db.connection() as own:
                rows = own.execute(sql, references).fetchall()
        else:
            rows = connection.execute(sql, references).fetchall()
        return {row[0]: (row[1], row[2], row[3]) for row in rows}
