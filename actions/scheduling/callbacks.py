"""Callback requests: what a patient asked for when booking online was not possible.

When the scheduler is down the assistant still takes the patient's name, phone,
preferred time and note, stores them here, and staff call back (``python -m
actions.scheduling.staff callbacks``). Everything the patient typed is stored as
typed: nothing is validated away or shortened.

The requests live in their own table of the scheduler's SQLite file by default
(``$SCHEDULER_DB``, else ``$STATE_DIR/scheduler.db``), readable by its owner only.
They hold PHI: nothing of them but the id is ever logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import List, Optional

from actions.scheduling.config import default_db_path
from actions.scheduling.sqlite_backend import Clock, SqliteDatabase, StrPath, utc_now

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


class CallbackStore:
    """Callback requests in SQLite; a connection per call, like the scheduler.

    Args:
        path: the SQLite file (default: the scheduler's, see
            :func:`~actions.scheduling.config.default_db_path`).
        clock: returns the current aware time; injectable for tests.
    """

    def __init__(
        self,
        path: Optional[StrPath] = None,
        clock: Optional[Clock] = None,
    ) -> None:
        self._db = SqliteDatabase(
            path if path is not None else default_db_path(), _SCHEMA
        )
        self._clock: Clock = clock or utc_now

    def add(
        self,
        name: Optional[str],
        phone: Optional[str],
        preferred_time_text: Optional[str],
        note: Optional[str],
        sender_id: Optional[str],
    ) -> int:
        """Stores a request and returns its id.

        Any value may be missing (``None`` is stored as an empty text), so a
        request is never refused for what the patient left out.

        Raises:
            BackendUnavailable: the file cannot be written; the caller must then
                tell the patient to phone the clinic.
        """
        created = int(self._clock().timestamp())
        with self._db.write() as connection:
            cursor = connection.execute(
                "INSERT INTO callback_requests (name, phone, preferred_time_text, note,"
                " sender_id, created_utc) VALUES (?, ?, ?, ?, ?, ?)",
                tuple(
                    "" if value is None else str(value)
                    for value in (name, phone, preferred_time_text, note, sender_id)
                )
                + (created,),
            )
            callback_id = int(cursor.lastrowid or 0)
        logger.info("Stored callback request %d", callback_id)
        return callback_id

    def list_open(self) -> List[CallbackRequest]:
        """The requests nobody has marked done, oldest first."""
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
        return cursor.rowcount > 0
