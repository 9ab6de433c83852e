"""Patients' data kept only as long as needed: retention, and forgetting one patient.

``clinicbot retention`` (and the daily job of ``make run``, scripts/daily.py) removes
what is older than its keeping time, in every store:

- **conversations** whose last event is older than ``RETENTION_DAYS`` (default 90):
  all their events, from the tracker store the endpoints file names (``ENDPOINTS``:
  SQLite or PostgreSQL, through SQLAlchemy, Rasa's ``events`` table). The
  missed-messages inbox is read from those conversations, so it follows; staff's
  decisions on it (``staff.db``: a hash of the masked text, the FAQ topic) hold no
  patient data and are kept, so a dismissed phrasing stays dismissed;
- **bookings** of the embedded scheduler whose visit ended more than
  ``BOOKING_RETENTION_DAYS`` ago (default 90) lose the patient's name and phone;
  the row, its reference, time and status stay, for the clinic's counts (a FHIR or
  webhook scheduler keeps its bookings in the clinic's own system);
- **call-backs** marked done more than ``BOOKING_RETENTION_DAYS`` ago are deleted;
  open ones stay until staff mark them done;
- the **channel store**'s offered buttons after a week, received ``MessageSid`` s
  after a week, finished outbox rows after a week (sent) or 90 days (failed),
  received texts the SMS inbox still holds after a day (a text is handled within
  seconds and deleted then; one left a day is not answered any more);
- **opt-outs** are always kept: a number that said STOP must never be texted again.

``clinicbot forget --phone NUMBER`` removes one patient: the SMS conversation (its
sender id is the number, E.164), every conversation where the number was given (a
booking or call-back form's slot, or a message), the bookings of the number
(anonymised like old ones: reference and time kept; an upcoming one is also
cancelled, freeing its time), the call-backs, the offered buttons, outbox rows and
texts from the number still in the SMS inbox.
The opt-out stays.

Both report counts per store, nothing else: no name, number or message. A dry run
counts without changing anything. On SQLite, what they delete is overwritten in the
file (``secure_delete``), not left in its free pages; PostgreSQL's autovacuum
reclaims deleted rows.

A conversation removed while the Rasa server holds it in memory does not come back:
``CachedSQLTrackerStore`` checks the database before using its cache, and a turn
saved after the removal writes only its own events.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set

import phonenumbers
import sqlalchemy as sa

from channels.store import ChannelStore
from clinic_common.privacy import conversation_key
from clinic_common.settings import load as load_settings
from clinic_common.sqlite import StrPath
from scheduling.callbacks import CallbackStore
from scheduling.config import scheduling_config
from scheduling.sqlite_backend import SqliteScheduler
from staff import missed
from staff.faq_data import Refused
from staff.project import Settings

DAY = 86_400.0
REGION = "US"  # numbers typed without a country code, as the booking form reads them
BATCH = 500  # conversations deleted per statement
EVENTS = missed.EVENTS

_Chooser = Callable[[sa.engine.Connection], List[str]]
_SchedulerChange = Callable[[SqliteScheduler], int]
_ChannelChange = Callable[[ChannelStore], Dict[str, int]]


@dataclass(frozen=True)
class Stores:
    """Where patients' data is kept, and for how long (from the settings)."""

    staff: Settings
    # Each a SQLite file, or STORE_DATABASE_URL's PostgreSQL database.
    scheduler_db: Optional[StrPath]  # None: bookings are in a remote system
    callback_db: StrPath
    channel_db: StrPath
    retention_days: float
    booking_retention_days: float

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Stores:
        """The stores of the settings (``clinic_common.settings``)."""
        config = load_settings(environ)
        database = config.store_database_url
        return cls(
            staff=Settings.from_env(environ),
            scheduler_db=(
                database or config.scheduler_db
                if config.scheduler_backend == "sqlite"
                else None
            ),
            callback_db=database or config.callback_db,
            channel_db=database or config.channel_db,
            retention_days=config.retention_days,
            booking_retention_days=config.booking_retention_days,
        )


@dataclass
class Report:
    """What was (or, in a dry run, would be) removed: counts per store and kind."""

    dry_run: bool
    counts: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def add(self, kind: str, count: int) -> None:
        """Records one count."""
        self.counts[kind] = self.counts.get(kind, 0) + count

    def lines(self) -> List[str]:
        """The report as staff read it."""
        verb = "would be removed" if self.dry_run else "removed"
        lines = [f"  {kind}: {count}" for kind, count in self.counts.items()]
        lines += [f"  {note}" for note in self.notes]
        if self.dry_run:
            lines.append("Dry run: nothing was changed.")
        return [f"Counts ({verb} or anonymised):", *lines]


# --- phone numbers -----------------------------------------------------------------


def normalised_phone(text: str) -> str:
    """The number staff typed, in E.164 (``+18175550188``), as stores keep it.

    Raises:
        Refused: it is no valid phone number.
    """
    try:
        number = phonenumbers.parse(text, REGION)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise Refused([f"'{text}' is not a valid phone number."])
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def numbers_in(text: str) -> Set[str]:
    """The valid phone numbers written anywhere in ``text``, in E.164."""
    return {
        str(phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164))
        for m in phonenumbers.PhoneNumberMatcher(text, REGION)
        if phonenumbers.is_valid_number(m.number)
    }


# --- the tracker store -------------------------------------------------------------


def tracker_engine(settings: Settings) -> Optional[sa.engine.Engine]:
    """A writable engine on the tracker store; None if it has no file yet.

    The missed-messages inbox opens SQLite read only; this is its one writer
    besides the Rasa server (a SQLite path is the project's, like the inbox's).
    """
    config = missed.store_config(settings)
    if str(config.get("dialect") or "sqlite") != "sqlite":
        return missed.tracker_store_engine(config, settings.project.root)
    path = settings.project.root / str(config.get("db") or "rasa.db")
    if not path.is_file():
        return None
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
    sa.event.listen(engine, "connect", _overwrite_deleted)
    return engine


def _overwrite_deleted(dbapi_connection: Any, _record: Any) -> None:
    """Deleted events are overwritten in the file, not left in its free pages."""
    dbapi_connection.execute("PRAGMA secure_delete = ON")


def _old_conversations(connection: sa.engine.Connection, before: float) -> List[str]:
    query = (
        sa.select(EVENTS.c.sender_id)
        .group_by(EVENTS.c.sender_id)
        .having(sa.func.max(EVENTS.c.timestamp) < before)
    )
    return [str(sender) for (sender,) in connection.execute(query)]


def _conversations_with(connection: sa.engine.Connection, phone: str) -> List[str]:
    """The SMS conversation of ``phone`` and every one where it was written.

    Only messages and slots are read, and only those holding the number's last
    four digits (as typed, in any format, they stay together).
    """
    query = sa.select(EVENTS.c.sender_id, EVENTS.c.type_name, EVENTS.c.data).where(
        EVENTS.c.type_name.in_(("user", "slot")),
        EVENTS.c.data.like(f"%{phone[-4:]}%"),
    )
    found = {
        str(sender)
        for (sender,) in connection.execute(
            sa.select(EVENTS.c.sender_id).where(EVENTS.c.sender_id == phone).limit(1)
        )
    }
    for sender, kind, data in connection.execute(query):
        event = json.loads(data)
        written = event.get("text") if kind == "user" else event.get("value")
        if isinstance(written, str) and phone in numbers_in(written):
            found.add(str(sender))
    return sorted(found)


def _remove_conversations(
    connection: sa.engine.Connection, senders: Iterable[str]
) -> None:
    chosen = sorted(senders)
    for start in range(0, len(chosen), BATCH):
        batch = chosen[start : start + BATCH]
        connection.execute(sa.delete(EVENTS).where(EVENTS.c.sender_id.in_(batch)))


def _in_tracker_store(settings: Settings, choose: _Chooser, dry_run: bool) -> List[str]:
    """The conversations ``choose`` picks, removed unless ``dry_run``.

    Raises:
        missed.TrackerStoreUnreadable: the store cannot be read or written.
    """
    engine = tracker_engine(settings)
    if engine is None:
        return []
    try:
        with engine.begin() as connection:
            if not sa.inspect(connection).has_table("events"):
                return []
            senders = choose(connection)
            if not dry_run:
                _remove_conversations(connection, senders)
            return senders
    except sa.exc.SQLAlchemyError as error:
        original = getattr(error, "orig", None) or error
        raise missed.TrackerStoreUnreadable(
            f"Cannot change the tracker store ({type(original).__name__})."
        ) from error
    finally:
        engine.dispose()


# --- the commands ------------------------------------------------------------------


def retention(
    stores: Stores,
    dry_run: bool = False,
    days: Optional[float] = None,
    now: Optional[float] = None,
) -> Report:
    """Removes what is older than its keeping time (the module docstring says what).

    ``days`` overrides ``RETENTION_DAYS`` for the conversations.

    Raises:
        missed.TrackerStoreUnreadable: the tracker store cannot be read or written.
        scheduling.base.BackendUnavailable: a scheduling store failed.
    """
    now = time.time() if now is None else now
    report = Report(dry_run)
    keep = stores.retention_days if days is None else days
    before = now - keep * DAY
    old = _in_tracker_store(
        stores.staff, lambda db: _old_conversations(db, before), dry_run
    )
    report.add("conversations (tracker store)", len(old))
    visits = datetime.fromtimestamp(
        now - stores.booking_retention_days * DAY, timezone.utc
    )
    _bookings(stores, report, lambda s: s.anonymise_visits_before(visits, dry_run))
    if _exists(stores.callback_db):
        done = CallbackStore(stores.callback_db).remove_done_before(visits, dry_run)
        report.add("call-backs marked done", done)
    _channel_counts(report, stores, lambda c: c.remove_old(now, dry_run))
    report.notes.append("opt-outs: all kept")
    return report


def forget(stores: Stores, phone_text: str, dry_run: bool = False) -> Report:
    """Removes one phone number's patient from every store but the opt-outs.

    Raises:
        Refused: ``phone_text`` is no valid number.
        missed.TrackerStoreUnreadable: the tracker store cannot be read or written.
        scheduling.base.BackendUnavailable: a scheduling store failed.
    """
    phone = normalised_phone(phone_text)
    report = Report(dry_run)
    senders = _in_tracker_store(
        stores.staff, lambda db: _conversations_with(db, phone), dry_run
    )
    report.add("conversations (tracker store)", len(senders))
    _bookings(stores, report, lambda s: s.forget_phone(phone, dry_run))
    everyone = {phone, *senders}
    if _exists(stores.callback_db):
        callbacks = CallbackStore(stores.callback_db).forget(
            lambda typed: phone in numbers_in(typed), everyone, dry_run
        )
        report.add("call-backs", callbacks)
    keys = sorted(conversation_key(sender) for sender in everyone)
    _channel_counts(
        report, stores, lambda c: c.forget(phone, sorted(everyone), keys, dry_run)
    )
    report.notes.append("opt-out: kept, if the number said STOP")
    return report


def _exists(location: StrPath) -> bool:
    """Whether a store holds anything: a database URL, or a file made already."""
    return isinstance(location, str) and "://" in location or Path(location).is_file()


def _bookings(stores: Stores, report: Report, change: _SchedulerChange) -> None:
    if stores.scheduler_db is None:
        report.notes.append("bookings: kept by the clinic's own scheduling system")
    elif _exists(stores.scheduler_db):
        scheduler = SqliteScheduler(stores.scheduler_db, scheduling_config())
        report.add("bookings (name and phone)", change(scheduler))


def _channel_counts(report: Report, stores: Stores, change: _ChannelChange) -> None:
    if _exists(stores.channel_db):
        for kind, count in change(ChannelStore(stores.channel_db)).items():
            report.add(f"{kind} (channel store)", count)
