"""Appointment reminders by SMS (issue 14): the text, when each is due, who got one.

The wording, offsets and sending hours are the ``reminders:`` section of
``clinic.yml`` (:func:`clinic_common.clinic_config.reminder_config`); days and
times are shown in the clinic's time zone (the ``scheduling:`` section).

The reminder job (``scripts/reminders.py``, wired in ``staff/reminders.py``) calls
:meth:`ReminderSchedule.run_once` every few seconds. For each active booking with
consent it works out when each offset's reminder is due (:func:`send_time`), and
when that has come, claims it in the ``reminders`` table, whose key is (booking,
offset): the claim is an insert under the store's one-writer lock, so of two job
runners, on one machine or two sharing PostgreSQL, exactly one gets it, and a
restarted runner sees what was claimed before. Then it sends (the job triggers the
intent ``EXTERNAL_appointment_reminder`` in the patient's SMS conversation; the
action server's ``action_send_reminder`` utters :func:`reminder_text` there) and
records the outcome, with the SMS outbox rows the reminder was queued as (the
``reminder_messages`` table). At most once: a runner that dies between claim and
outcome leaves the claim ``sending``, which is never sent again and shows as failed.

Staff see a reminder "failed" when Rasa refused it, or when one of its outbox rows
failed: Twilio refused it, the retry window ran out, or Twilio's delivery report
said the carrier did not deliver it (``channels.sms_outbox``).

Daylight saving: "24 hours before" is wall-clock time in the clinic's zone, the same
time the day before, on both sides of a change (a 9:00 visit the Sunday clocks go
back is reminded at 9:00 on Saturday, 25 real hours before).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import AbstractSet, Callable, Dict, List, Optional, Sequence, Tuple, Union
from zoneinfo import ZoneInfo

from clinic_common.clinic_config import (
    ClinicConfigError,
    ReminderConfig,
    clinic,
    reminder_config,
)
from clinic_common.sqlite import Database, StrPath
from scheduling import database_unavailable
from scheduling.base import (
    BOOKED,
    BackendUnavailable,
    Booking,
    BookingNotFound,
    Clock,
    Scheduler,
    require_aware,
    utc_now,
)
from scheduling.config import SchedulingConfig, scheduling_config

logger = logging.getLogger(__name__)

# Texts longer than this go as two or more SMS segments (GSM-7).
SMS_LENGTH = 160
# The longest a day and a time are written (see _day, _time), for the length check.
_LONGEST_DAY = "Wed, Sep 30"
_LONGEST_TIME = "12:45 PM"


@dataclass(frozen=True)
class ReminderSettings:
    """The reminders' settings with what the wording needs from the rest of the file."""

    reminders: ReminderConfig
    scheduling: SchedulingConfig
    clinic_name: str

    def visit_name(self, visit_type: str) -> str:
        """The visit type's name as patients read it (in lower case, mid-sentence)."""
        visit = self.scheduling.visit_type(visit_type)
        name = visit.name if visit else visit_type.replace("_", " ")
        return name[:1].lower() + name[1:]

    def text(self, visit_type: str, start: datetime) -> str:
        """The reminder for a visit of ``visit_type`` at ``start`` (aware)."""
        local = start.astimezone(self.scheduling.tz)
        return self.reminders.template.format(
            clinic_name=self.clinic_name,
            visit=self.visit_name(visit_type),
            day=_day(local),
            time=_time(local),
        )

    def longest_text(self) -> str:
        """The wording with the longest visit name, day and time this clinic has."""
        names = [visit.key for visit in self.scheduling.visit_types] or [""]
        visit = max(names, key=lambda key: len(self.visit_name(key)))
        return self.reminders.template.format(
            clinic_name=self.clinic_name,
            visit=self.visit_name(visit),
            day=_LONGEST_DAY,
            time=_LONGEST_TIME,
        )


def _day(local: datetime) -> str:
    """``Tue, Mar 3``: short, no year, no zero padding."""
    return f"{local:%a, %b} {local.day}"


def _time(local: datetime) -> str:
    """``9:00 AM``."""
    return f"{local.hour % 12 or 12}:{local:%M %p}"


def checked_settings(settings: ReminderSettings, source: str) -> ReminderSettings:
    """``settings`` if the longest reminder fits one SMS, else ClinicConfigError."""
    longest = settings.longest_text()
    if len(longest) > SMS_LENGTH:
        raise ClinicConfigError(
            f"{source}: reminders: the template makes texts of up to {len(longest)}"
            f" characters (e.g. {longest!r}); shorten it to {SMS_LENGTH} or fewer."
        )
    return settings


@lru_cache(maxsize=1)
def reminder_settings() -> ReminderSettings:
    """The reminders' settings from ``clinic.yml``, checked once per process."""
    return checked_settings(
        ReminderSettings(reminder_config(), scheduling_config(), clinic().name),
        "clinic.yml",
    )


def reminder_text(booking: Booking) -> str:
    """The reminder SMS for ``booking``: clinic, visit, day and time, replies, STOP."""
    return reminder_settings().text(booking.slot.visit_type, booking.slot.start)


# --- when ---------------------------------------------------------------------------


def send_time(
    start: datetime, offset: timedelta, config: ReminderConfig, tz: ZoneInfo
) -> datetime:
    """When the reminder ``offset`` before a visit at ``start`` is sent (UTC).

    ``offset`` is taken off the visit's local wall-clock time (see the module
    docstring). Outside the sending hours, the last allowed time before: the end of
    that day's hours if later than them, else the end of the day before's.
    """
    wall = require_aware(start, "start").astimezone(tz).replace(tzinfo=None) - offset
    if wall.time() > config.send_until:
        wall = datetime.combine(wall.date(), config.send_until)
    elif wall.time() < config.send_from:
        wall = datetime.combine(wall.date() - timedelta(days=1), config.send_until)
    return wall.replace(tzinfo=tz).astimezone(timezone.utc)


def sending_allowed(moment: datetime, config: ReminderConfig, tz: ZoneInfo) -> bool:
    """Whether ``moment`` is inside the local sending hours."""
    local = require_aware(moment, "moment").astimezone(tz).time()
    return config.send_from <= local <= config.send_until


# --- who got one ----------------------------------------------------------------------

# States of a (booking, offset) row of the reminders table.
SENDING = "sending"  # claimed; a runner is sending (or died doing so)
SENT = "sent"  # its SMS are in the outbox, which has their outcome
FAILED = "failed"  # Rasa refused, could not be reached or queued no SMS: never
# tried again
SKIPPED = "skipped"  # cancelled or moved by the time it was due
NOT_ALLOWED = "not_allowed"  # the number opted out of texts

# What staff see per booking (clinicbot reminders, the staff page).
STATES = (
    "not due",
    "sent",
    "confirmed",
    "asked to reschedule",
    "cancelled",
    "no reply",
    "failed",
    "not allowed",
)
# A claim still "sending" after this long: its runner died; shown as failed.
STALE_CLAIM = timedelta(minutes=5)

_SCHEMA = """
-- One row per booking and offset whose reminder was due: the key is what makes
-- "never twice" hold across runners, restarts and machines.
CREATE TABLE IF NOT EXISTS reminders (
    reference TEXT NOT NULL,
    offset_minutes INTEGER NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('sending', 'sent', 'failed', 'skipped', 'not_allowed')),
    claimed_utc INTEGER NOT NULL,
    PRIMARY KEY (reference, offset_minutes)
);
-- The SMS outbox rows (channels.store, another database) each reminder was
-- queued as. A table of its own: existing stores gain it as they open.
CREATE TABLE IF NOT EXISTS reminder_messages (
    reference TEXT NOT NULL,
    offset_minutes INTEGER NOT NULL,
    outbox_id INTEGER NOT NULL,
    PRIMARY KEY (reference, offset_minutes, outbox_id),
    FOREIGN KEY (reference, offset_minutes) REFERENCES reminders ON DELETE CASCADE
);
"""


@dataclass(frozen=True)
class ReminderRow:
    """What happened to one offset's reminder of a booking."""

    offset: timedelta
    state: str
    claimed_at: datetime
    messages: Tuple[int, ...] = ()  # its SMS outbox rows


class ReminderStore:
    """The ``reminders`` table, beside the bookings (SQLite file or PostgreSQL)."""

    def __init__(self, location: StrPath) -> None:
        self._db = Database(location, _SCHEMA, database_unavailable)

    def claim(self, reference: str, offset: timedelta, now: datetime) -> bool:
        """Takes the reminder for this runner; False if anyone took it before."""
        with self._db.write() as connection:
            cursor = connection.execute(
                "INSERT INTO reminders VALUES (?, ?, 'sending', ?)"
                " ON CONFLICT (reference, offset_minutes) DO NOTHING",
                (reference, _minutes(offset), int(now.timestamp())),
            )
        return int(cursor.rowcount) == 1

    def record(
        self,
        reference: str,
        offset: timedelta,
        state: str,
        messages: Sequence[int] = (),
    ) -> None:
        """The outcome of a claimed reminder, and the outbox rows it was queued as."""
        key = (reference, _minutes(offset))
        with self._db.write() as connection:
            connection.execute(
                "UPDATE reminders SET state = ?"
                " WHERE reference = ? AND offset_minutes = ?",
                (state, *key),
            )
            connection.executemany(
                "INSERT INTO reminder_messages VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(*key, outbox_id) for outbox_id in messages],
            )

    def rows(self, references: Sequence[str]) -> Dict[str, List[ReminderRow]]:
        """Every reminder row of these bookings, by reference."""
        found: Dict[str, List[ReminderRow]] = {ref: [] for ref in references}
        if not references:
            return found
        marks = ", ".join("?" * len(references))
        messages: Dict[Tuple[str, int], List[int]] = {}
        with self._db.connection() as connection:
            rows = connection.execute(
                "SELECT reference, offset_minutes, state, claimed_utc FROM reminders"
                f" WHERE reference IN ({marks})",
                list(references),
            ).fetchall()
            for reference, offset, outbox_id in connection.execute(
                "SELECT reference, offset_minutes, outbox_id FROM reminder_messages"
                f" WHERE reference IN ({marks}) ORDER BY outbox_id",
                list(references),
            ).fetchall():
                messages.setdefault((reference, offset), []).append(int(outbox_id))
        for row in rows:
            found[row[0]].append(
                ReminderRow(
                    timedelta(minutes=row[1]),
                    row[2],
                    datetime.fromtimestamp(row[3], timezone.utc),
                    tuple(messages.get((row[0], row[1]), ())),
                )
            )
        return found


def _minutes(offset: timedelta) -> int:
    return int(offset.total_seconds() // 60)


# --- the job ------------------------------------------------------------------------

# Sends one reminder. Its answer: the ids of the SMS outbox rows the reminder was
# queued as (none: Rasa took it but queued no SMS, so it failed); or, from a sender
# that cannot see the outbox, whether Rasa took it.
Sender = Callable[[Booking], Union[bool, Sequence[int]]]
# Those of these SMS outbox rows that finally failed.
FailedAmong = Callable[[Sequence[int]], AbstractSet[int]]
# Whether texts may go to this number (False: it opted out).
Reachable = Callable[[str], bool]


# What the job reads: any backend's ``active_bookings_between`` and ``get_booking``.
Bookings = Scheduler


@dataclass(frozen=True)
class RunResult:
    """Counts of one pass (never patient data: safe to log)."""

    sent: int = 0
    failed: int = 0
    not_allowed: int = 0
    skipped: int = 0


class ReminderSchedule:
    """Sends every reminder that is due, once (see the module docstring)."""

    def __init__(
        self,
        bookings: Bookings,
        store: ReminderStore,
        send: Sender,
        reachable: Reachable,
        settings: ReminderSettings,
        clock: Optional[Clock] = None,
    ) -> None:
        self._bookings = bookings
        self._store = store
        self._send = send
        self._reachable = reachable
        self._settings = settings
        self._clock: Clock = clock or utc_now

    def due(self, now: datetime) -> List[Tuple[Booking, timedelta]]:
        """(booking, offset) pairs whose send time has come, visit not yet begun.

        Only active bookings with consent; soonest visit first. A booking made
        after its send time is reminded at once.
        """
        config, tz = self._settings.reminders, self._settings.scheduling.tz
        if not sending_allowed(now, config, tz):
            return []
        # A send time is at most the longest offset plus a day of quiet hours before
        # the visit.
        horizon = now + max(config.offsets) + timedelta(days=1, hours=1)
        return [
            (booking, offset)
            for booking in self._bookings.active_bookings_between(now, horizon)
            if booking.reminder_consent and booking.slot.start > now
            for offset in config.offsets
            if send_time(booking.slot.start, offset, config, tz) <= now
        ]

    def run_once(self) -> RunResult:
        """One pass: claims and sends what is due now; returns counts."""
        now = require_aware(self._clock(), "clock()").astimezone(timezone.utc)
        counts = {SENT: 0, FAILED: 0, NOT_ALLOWED: 0, SKIPPED: 0}
        for booking, offset in self.due(now):
            if not self._store.claim(booking.reference, offset, now):
                continue  # another runner's, or done before a restart
            state, messages = self._deliver(booking)
            self._store.record(booking.reference, offset, state, messages)
            counts[state] += 1
        if any(counts.values()):
            logger.info(
                "Reminders: %d sent, %d failed, %d not allowed (opted out),"
                " %d skipped (cancelled or moved).",
                counts[SENT],
                counts[FAILED],
                counts[NOT_ALLOWED],
                counts[SKIPPED],
            )
        return RunResult(
            counts[SENT], counts[FAILED], counts[NOT_ALLOWED], counts[SKIPPED]
        )

    def _deliver(self, booking: Booking) -> Tuple[str, Sequence[int]]:
        """Sends a claimed reminder if the booking is still on and the number open.

        Returns its state and the outbox rows it was queued as.
        """
        try:
            current = self._bookings.get_booking(
                booking.reference, booking.patient.phone
            )
        except BookingNotFound:
            return SKIPPED, ()  # forgotten (clinicbot forget) since it was listed
        except BackendUnavailable:
            return FAILED, ()
        if current.status != BOOKED or current.slot.start != booking.slot.start:
            return SKIPPED, ()
        if not self._reachable(booking.patient.phone):
            return NOT_ALLOWED, ()
        answer = self._send(current)
        if isinstance(answer, bool):
            return (SENT if answer else FAILED), ()
        return (SENT if answer else FAILED), tuple(answer)


# --- what staff see -------------------------------------------------------------------


@dataclass(frozen=True)
class DayEntry:
    """One booking of a day as the front desk sees it: no phone, no full name."""

    start: datetime  # local
    visit: str
    patient: str  # first name and initial of the last
    state: str


def short_name(name: str) -> str:
    """``Maria L.`` for ``Maria Lopez``: enough for the front desk to tell apart."""
    parts = name.split()
    if not parts:
        return "-"
    return parts[0] if len(parts) == 1 else f"{parts[0]} {parts[-1][0]}."


def reminder_state(
    booking: Booking,
    rows: Sequence[ReminderRow],
    now: datetime,
    tz: ZoneInfo,
    undelivered: AbstractSet[int] = frozenset(),
) -> str:
    """The booking's reminder state, one of :data:`STATES`.

    ``undelivered``: outbox rows that finally failed; a reminder queued as one of
    them failed. A row no longer kept (sent ones go after a week) leaves the
    reminder as recorded.
    """
    if booking.status != BOOKED:
        return "cancelled"
    if booking.confirmed:
        return "confirmed"
    if booking.reschedule_requested:
        return "asked to reschedule"
    if not booking.reminder_consent or any(r.state == NOT_ALLOWED for r in rows):
        return "not allowed"
    sent = [r for r in rows if r.state == SENT and undelivered.isdisjoint(r.messages)]
    if not sent and any(_failed(r, now, undelivered) for r in rows):
        return "failed"
    if sent or any(r.state == SENDING for r in rows):
        visit_day = booking.slot.start.astimezone(tz).date()
        return "no reply" if now.astimezone(tz).date() >= visit_day else "sent"
    return "not due"


def _failed(row: ReminderRow, now: datetime, undelivered: AbstractSet[int]) -> bool:
    """Refused, never finished, or queued as an SMS that failed."""
    if row.state == SENDING:
        return now - row.claimed_at > STALE_CLAIM
    return row.state == FAILED or not undelivered.isdisjoint(row.messages)


def day_entries(
    bookings: Sequence[Booking],
    store: ReminderStore,
    settings: ReminderSettings,
    now: datetime,
    failed_among: Optional[FailedAmong] = None,
) -> List[DayEntry]:
    """The reminder state of each of a day's bookings, by time.

    ``failed_among``: asks the SMS outbox which of the reminders' texts failed;
    None: the reminders as recorded.
    """
    tz = settings.scheduling.tz
    rows = store.rows([booking.reference for booking in bookings])
    messages = [m for found in rows.values() for row in found for m in row.messages]
    undelivered = failed_among(messages) if failed_among and messages else set()
    return [
        DayEntry(
            start=booking.slot.start.astimezone(tz),
            visit=settings.visit_name(booking.slot.visit_type),
            patient=short_name(booking.patient.name),
            state=reminder_state(
                booking, rows[booking.reference], now, tz, undelivered
            ),
        )
        for booking in sorted(bookings, key=lambda item: item.slot.start)
    ]
