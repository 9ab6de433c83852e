"""What the channels must remember between messages, in SQLite.

- The buttons offered to each conversation: a click may send only a payload that
  was offered to that conversation, and an SMS reply "2" means the second choice of
  the latest list.
- SMS opt-outs (STOP ... START), which must survive a restart.

The file (``$STATE_DIR/channels.db`` by default, ``CHANNEL_DB`` to change it) holds
phone numbers: it is created readable by its owner only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

# A conversation keeps at most this many offered payloads (the newest).
MAX_REMEMBERED_OFFERS = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offers (
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    payload TEXT NOT NULL,
    offered_at REAL NOT NULL,
    PRIMARY KEY (channel, sender, payload)
);
CREATE TABLE IF NOT EXISTS latest_choices (
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    position INTEGER NOT NULL,
    title TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (channel, sender, position)
);
CREATE TABLE IF NOT EXISTS opt_outs (
    phone TEXT PRIMARY KEY,
    opted_out_at REAL NOT NULL
);
"""


def default_path() -> Path:
    """``$CHANNEL_DB``, else ``$STATE_DIR/channels.db``, else ``var/channels.db``."""
    explicit = os.environ.get("CHANNEL_DB")
    if explicit:
        return Path(explicit)
    state = os.environ.get("STATE_DIR") or str(
        Path(__file__).resolve().parents[1] / "var"
    )
    return Path(state) / "channels.db"


class ChannelStore:
    """Offered buttons per conversation and SMS opt-outs; safe across threads."""

    def __init__(self, path: Optional[Path] = None) -> None:
        """Opens (and creates, owner-only) the database file."""
        self.path = Path(path or default_path())
        self._lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not self.path.exists():
                    self.path.touch(mode=0o600)
            connection = sqlite3.connect(self.path, timeout=5.0)
            try:
                if not self._ready:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.executescript(_SCHEMA)
                    self._ready = True
                with connection:
                    yield connection
            finally:
                connection.close()

    # --- offered buttons ---------------------------------------------------------

    def remember_offers(
        self, channel: str, sender: str, choices: Sequence[Tuple[str, str]]
    ) -> None:
        """Records the (title, payload) buttons just offered, as the latest list."""
        if not choices:
            return
        now = time.time()
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO offers VALUES (?, ?, ?, ?)",
                [(channel, sender, payload, now) for _, payload in choices],
            )
            db.execute(
                "DELETE FROM offers WHERE channel = ? AND sender = ? AND payload NOT IN"
                " (SELECT payload FROM offers WHERE channel = ? AND sender = ?"
                "  ORDER BY offered_at DESC LIMIT ?)",
                (channel, sender, channel, sender, MAX_REMEMBERED_OFFERS),
            )
            db.execute(
                "DELETE FROM latest_choices WHERE channel = ? AND sender = ?",
                (channel, sender),
            )
            db.executemany(
                "INSERT INTO latest_choices VALUES (?, ?, ?, ?, ?)",
                [
                    (channel, sender, position, title, payload)
                    for position, (title, payload) in enumerate(choices, start=1)
                ],
            )

    def was_offered(self, channel: str, sender: str, payload: str) -> bool:
        """Whether this payload was offered to this conversation."""
        with self._connect() as db:
            row = db.execute(
                "SELECT 1 FROM offers WHERE channel = ? AND sender = ? AND payload = ?",
                (channel, sender, payload),
            ).fetchone()
        return row is not None

    def latest_choices(self, channel: str, sender: str) -> List[Tuple[str, str]]:
        """The (title, payload) list offered last, in order."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT title, payload FROM latest_choices"
                " WHERE channel = ? AND sender = ? ORDER BY position",
                (channel, sender),
            ).fetchall()
        return [(str(title), str(payload)) for title, payload in rows]

    def forget_choices(self, channel: str, sender: str) -> None:
        """Drops the latest numbered list (after it was answered)."""
        with self._connect() as db:
            db.execute(
                "DELETE FROM latest_choices WHERE channel = ? AND sender = ?",
                (channel, sender),
            )

    # --- SMS opt-outs --------------------------------------------------------------

    def set_opted_out(self, phone: str, opted_out: bool) -> None:
        """Records STOP (True) or START (False) for a phone number."""
        with self._connect() as db:
            if opted_out:
                db.execute(
                    "INSERT OR REPLACE INTO opt_outs VALUES (?, ?)",
                    (phone, time.time()),
                )
            else:
                db.execute("DELETE FROM opt_outs WHERE phone = ?", (phone,))

    def is_opted_out(self, phone: str) -> bool:
        """Whether this number said STOP and not START since."""
        with self._connect() as db:
            row = db.execute(
                "SELECT 1 FROM opt_outs WHERE phone = ?", (phone,)
            ).fetchone()
        return row is not None


class OpensStoreLazily:
    """For input channels: ``self.store``, a ``ChannelStore`` opened on first use.

    Rasa builds every channel in credentials.yml at start-up; the database file is
    only created when a channel really handles a message. A store given to the
    constructor (tests) is used as it is.
    """

    _store: Optional[ChannelStore] = None

    @property
    def store(self) -> ChannelStore:
        """The channel store (``$STATE_DIR/channels.db``)."""
        if self._store is None:
            self._store = ChannelStore()
        return self._store
