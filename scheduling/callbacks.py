"""Callback requests: what a patient asked for when booking online was not possible.

When the scheduler is down the assistant still takes the patient's name, phone,
preferred time and note, stores them here, and staff call back (``python -m
scheduling.staff callbacks``). Everything the patient typed is stored as
typed: nothing is validated away or shortened.

The requests live in a SQLite file of their own (``$CALLBACK_DB``, else
``$STATE_DIR/callbacks.db``; in the scaled profile a table of
``$STORE_DATABASE_URL``), not in the scheduler's: a call back is offered exactly
when the scheduler, and so maybe its database, is locked or broken. Should this file
fail too, the request is appended to a spool file beside it
(``callbacks.db.spool``, one JSON line a request, written with fsync) and moved
into the database the next time the store is read or written: a request the
patient was told was taken is never lost. Both are readable by their owner only.
They hold PHI: nothing of them but the id is ever logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Collection, Dict, Iterator, List, Optional

from clinic_common import settings
from clinic_common.sqlite import Database, StrPath, prepare_file
from scheduling import database_unavailable
from scheduling.base import BackendUnavailable, Clock, utc_now
from scheduling.config import default_callback_db_path

logger = logging.getLogger(__name__)

OPEN = "open"
DONE = "done"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callback_requests (
    callback_id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_utc INTEGER NOT NULL,
    name TEXT NOT NULL,
    phone TEXT NOT NULL,
    preferred_time_text TEXT NOT NULL,
    note TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    done_utc INTEGER
);
CREATE INDEX IF NOT EXISTS callback_requests_open
    ON callback_requests (created_utc) WHERE status = 'open';
"""


@dataclass(frozen=True)
class CallbackRequest:
    """A patient's request to be called back, as they typed it."""

    callback_id: int
    created_at: datetime
    name: str
    phone: str
    preferred_time_text: str
    note: str
    sender_id: str
    status: str = OPEN


_COLUMNS = ("name", "phone", "preferred_time_text", "note", "sender_id")
_INSERT = (
    "INSERT INTO callback_requests (name, phone, preferred_time_text, note,"
    " sender_id, created_utc) VALUES (?, ?, ?, ?, ?, ?)"
)


class CallbackStore:
    """Callback requests in SQLite (a connection per call), a spool as last resort.

    Args:
        path: the SQLite file or a PostgreSQL URL (default:
            :func:`~scheduling.config.default_callback_db_path`).
        clock: returns the current aware time; injectable for tests.
    """

    def __init__(
        self,
        path: Optional[StrPath] = None,
        clock: Optional[Clock] = None,
    ) -> None:
        location = path if path is not None else default_callback_db_path()
        self._db = Database(location, _SCHEMA, database_unavailable)
        file = self._db.location
        if not isinstance(file, Path):  # PostgreSQL: the spool is this machine's
            file = settings.load().state_dir / "callbacks.db"
        self.spool_path = file.with_name(file.name + ".spool")
        self._clock = clock or utc_now

    def add(
        self,
        name: Optional[str],
        phone: Optional[str],
        preferred_time_text: Optional[str],
        note: Optional[str],
        sender_id: Optional[str],
    ) -> Optional[int]:
        """Stores a request; returns its id, or None if it waits in the spool.

        Any value may be missing (``None`` is stored as an empty text), so a
        request is never refused for what the patient left out.

        Raises:
            BackendUnavailable: neither the database nor the spool can be
                written; the caller must then tell the patient to phone the clinic.
        """
        values = [
            "" if value is None else str(value)
            for value in (name, phone, preferred_time_text, note, sender_id)
        ]
        created = int(self._clock().timestamp())
        try:
            self._import_spool()
            with self._db.write() as connection:
                cursor = connection.execute(
                    _INSERT + " RETURNING callback_id", (*values, created)
                )
                callback_id = int(cursor.fetchone()[0])
        except BackendUnavailable:
            self._spool(
                {**dict(zip(_COLUMNS, values, strict=True)), "created_utc": created}
            )
            logger.warning("Callback request kept in the spool: the database failed.")
            return None
        logger.info("Stored callback request %d", callback_id)
        return callback_id

    @contextmanager
    def _locked_spool(self) -> Iterator[int]:
        """The spool file, open for appending and reading, under an exclusive lock."""
        try:
            prepare_file(self.spool_path)
            descriptor = os.open(
                self.spool_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600
            )
        except OSError as error:
            raise BackendUnavailable("The call-back spool is not available.") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield descriptor
        finally:
            os.close(descriptor)

    def _spool(self, record: Dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._locked_spool() as descriptor:
            try:
                os.write(descriptor, line)
                os.fsync(descriptor)
            except OSError as error:
                raise BackendUnavailable("The call-back spool is full.") from error

    def _import_spool(self) -> None:
        """Moves spooled requests into the database, in one transaction."""
        if not self.spool_path.exists():
            return
        with self._locked_spool() as descriptor:
            with open(self.spool_path, encoding="utf-8") as file:
                records = [json.loads(line) for line in file if line.strip()]
            if not records:
                return
            with self._db.write() as connection:
                connection.executemany(
                    _INSERT,
                    [
                        (*(str(r.get(c, "")) for c in _COLUMNS), int(r["created_utc"]))
                        for r in records
                    ],
                )
            os.ftruncate(descriptor, 0)
            os.fsync(descriptor)
        logger.info("Moved %d spooled callback request(s) in.", len(records))

    def list_open(self) -> List[CallbackRequest]:
        """The requests nobody has marked done, oldest first (spooled ones too)."""
        self._import_spool()
        with self._db.connection() as connection:
            rows = connection.execute(
                "SELECT * FROM callback_requests WHERE status = 'open'"
                " ORDER BY created_utc, callback_id"
            ).fetchall()
        return [
            CallbackRequest(
                callback_id=row["callback_id"],
                created_at=datetime.fromtimestamp(row["created_utc"], timezone.utc),
                name=row["name"],
                phone=row["phone"],
                preferred_time_text=row["preferred_time_text"],
                note=row["note"],
                sender_id=row["sender_id"],
                status=row["status"],
            )
            for row in rows
        ]

    def mark_done(self, callback_id: int) -> bool:
        """Marks an open request done; False if no open request has this id."""
        done = int(self._clock().timestamp())
        with self._db.write() as connection:
            cursor = connection.execute(
                "UPDATE callback_requests SET status = 'done', done_utc = ?"
                " WHERE callback_id = ? AND status = 'open'",
                (done, callback_id),
            )
        if cursor.rowcount:
            logger.info("Callback request %d done", callback_id)
        return int(cursor.rowcount) > 0

    # --- retention (staff: clinicbot retention, clinicbot forget) -----------------

    def remove_done_before(self, before: datetime, dry_run: bool = False) -> int:
        """Deletes requests marked done before ``before``; open ones always stay.

        Returns how many were (or, ``dry_run``, would be) deleted.
        """
        done = (int(before.timestamp()),)
        with self._db.write() as connection:
            connection.secure_delete()
            count = int(
                connection.execute(
                    "SELECT count(*) FROM callback_requests"
                    " WHERE status = 'done' AND done_utc < ?",
                    done,
                ).fetchone()[0]
            )
            if count and not dry_run:
                connection.execute(
                    "DELETE FROM callback_requests"
                    " WHERE status = 'done' AND done_utc < ?",
                    done,
                )
        return count

    def forget(
        self,
        is_number: Callable[[str], bool],
        senders: Collection[str],
        dry_run: bool = False,
    ) -> int:
        """Deletes, open or done, every request whose phone is the number.

        ``is_number`` tells whether a phone as the patient typed it is the number;
        a request made in one of the conversations ``senders`` goes too. Spooled
        requests are moved in first, so none is missed. Returns how many were (or,
        ``dry_run``, would be) deleted.
        """
        self._import_spool()
        with self._db.write() as connection:
            connection.secure_delete()
            chosen = [
                row["callback_id"]
                for row in connection.execute(
                    "SELECT callback_id, phone, sender_id FROM callback_requests"
                )
                if is_number(row["phone"]) or row["sender_id"] in senders
            ]
            if chosen and not dry_run:
                connection.executemany(
                    "DELETE FROM callback_requests WHERE callback_id = ?",
                    [(callback_id,) for callback_id in chosen],
                )
        return len(chosen)
