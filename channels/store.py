"""What the channels must remember between messages, in SQLite.

- The buttons offered to each conversation: a click may send only a payload that
  was offered to that conversation, and an SMS reply "2" means the second choice of
  the latest list.
- SMS opt-outs (STOP ... START), which must survive a restart.
- The SMS outbox: each reply is written here before it is sent, and kept until it is
  sent or has finally failed; then its body and number are deleted and only what
  staff need to see a failure is kept (a keyed hash of the number, the conversation
  key of the logs, times, attempts, Twilio's status and error code). A sent text
  that Twilio later reports undelivered (its status callback) is marked failed.
  Texts the assistant starts itself (appointment reminders) are marked as such, so
  that the reminder job can tell its own texts from replies to the same number.
- The ``MessageSid`` of each text received, so that Twilio's retry of a webhook is
  not answered twice (kept for ``SEEN_SMS_DAYS``).
- The SMS inbox: each text received, written in the same step as its SID before
  Twilio's webhook is answered, and deleted when its turn is done (with the turn's
  replies written to the outbox). A row is held by one Rasa server at a time, for a
  lease it renews while the text waits and its turn runs; a row whose lease ran
  out (its server died) is claimed by another (``channels.sms_inbox``).

The file (``$STATE_DIR/channels.db`` by default, ``CHANNEL_DB`` to change it) holds
phone numbers and the text of replies not sent yet: it is created readable by its
owner only. In the scaled profile the same tables are in PostgreSQL
(``STORE_DATABASE_URL``), shared by every Rasa server (see
:class:`clinic_common.sqlite.Database`); writes are one at a time either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from clinic_common import settings, sqlite
from clinic_common.sqlite import StrPath

# A conversation keeps at most this many offered payloads (the newest).
MAX_REMEMBERED_OFFERS = 100
# Twilio retries a webhook within minutes; a week covers it with room to spare.
SEEN_SMS_DAYS = 7.0
# Rows of sent texts (no body, no number) are kept this long, failed ones longer:
# staff list the failures (``clinicbot sms-failures``).
SENT_SMS_DAYS = 7.0
FAILED_SMS_DAYS = 90.0
# Offered buttons (and the numbered list they belong to) are kept this long after
# they were offered: a click on an older button is refused like any typed payload.
OFFER_DAYS = 7.0
# A received text is handled within seconds; one still in the inbox after a day
# (say, every server down overnight) is removed by retention, unanswered.
INBOX_DAYS = 1.0
DAY = 86_400.0

PENDING, SENT, FAILED = "pending", "sent", "failed"

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
CREATE TABLE IF NOT EXISTS sms_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order of sending, per number
    phone TEXT,  -- NULL once sent or failed
    body TEXT,  -- NULL once sent or failed
    phone_key TEXT NOT NULL,  -- the keyed hash of the number that logs show
    conversation TEXT NOT NULL,  -- the conversation key that logs show
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_attempt_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    http_status INTEGER,  -- Twilio's answer to the last attempt; NULL: none
    error_code INTEGER,  -- Twilio's error code, if it gave one
    reason TEXT,  -- why it failed, in a few words (never patient data)
    message_sid TEXT  -- Twilio's Message SID, once sent
);
CREATE INDEX IF NOT EXISTS sms_outbox_by_state ON sms_outbox (state, phone, id);
-- Twilio's delivery reports name the message by its SID.
CREATE INDEX IF NOT EXISTS sms_outbox_by_sid ON sms_outbox (message_sid);
-- The outbox rows of texts the assistant started (Rasa's trigger_intent), not
-- replies to a text. A table of its own: existing stores gain it as they open.
CREATE TABLE IF NOT EXISTS sms_pushed (
    outbox_id INTEGER PRIMARY KEY REFERENCES sms_outbox (id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS sms_seen (
    message_sid TEXT PRIMARY KEY,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sms_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order of arrival, per number
    message_sid TEXT UNIQUE,  -- NULL if Twilio's form had none
    phone TEXT NOT NULL,
    body TEXT NOT NULL,
    media_count INTEGER NOT NULL,
    opt_out_type TEXT NOT NULL,
    received_at REAL NOT NULL,
    owner TEXT NOT NULL,  -- the Rasa server (process) holding it
    lease_until REAL NOT NULL,  -- after this, another server may claim it
    attempts INTEGER NOT NULL DEFAULT 1  -- servers that took it so far
);
CREATE INDEX IF NOT EXISTS sms_inbox_by_lease ON sms_inbox (lease_until);
"""


@dataclass(frozen=True)
class OutgoingSms:
    """A reply waiting in the outbox."""

    id: int
    phone: str
    body: str
    created_at: float
    attempts: int


@dataclass(frozen=True)
class FailedSms:
    """A reply that was finally not sent, as staff see it: no number, no text."""

    id: int
    created_at: float
    last_attempt_at: Optional[float]
    phone_key: str
    conversation: str
    attempts: int
    http_status: Optional[int]
    error_code: Optional[int]
    reason: str


@dataclass(frozen=True)
class ReceivedSms:
    """A received text in the inbox, as Twilio's form gave it."""

    id: int
    message_sid: Optional[str]
    phone: str
    body: str
    media_count: int
    opt_out_type: str


def default_path() -> Path:
    """``$CHANNEL_DB``, else ``$STATE_DIR/channels.db`` (``clinic_common.settings``)."""
    return settings.load().channel_db


def default_location() -> StrPath:
    """``$STORE_DATABASE_URL`` if set (scaled profile), else :func:`default_path`."""
    return settings.load().store_database_url or default_path()


class ChannelStore:
    """Offered buttons, SMS opt-outs, outbox, received SIDs and the SMS inbox.

    Safe across threads and processes.
    """

    def __init__(self, path: Optional[StrPath] = None) -> None:
        """Prepares the store (a file is created, owner-only, on first use).

        ``path``: the SQLite file or a PostgreSQL URL (default:
        :func:`default_location`).
        """
        self._db = sqlite.Database(path or default_location(), _SCHEMA, None)

    @property
    def path(self) -> Path:
        """The SQLite file (ValueError when the store is in PostgreSQL)."""
        return self._db.path

    # --- offered buttons ---------------------------------------------------------

    def remember_offers(
        self, channel: str, sender: str, choices: Sequence[Tuple[str, str]]
    ) -> None:
        """Records the (title, payload) buttons just offered, as the latest list."""
        if not choices:
            return
        now = time.time()
        with self._db.write() as db:
            db.executemany(
                "INSERT INTO offers VALUES (?, ?, ?, ?)"
                " ON CONFLICT (channel, sender, payload)"
                " DO UPDATE SET offered_at = excluded.offered_at",
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
        with self._db.connection() as db:
            row = db.execute(
                "SELECT 1 FROM offers WHERE channel = ? AND sender = ? AND payload = ?",
                (channel, sender, payload),
            ).fetchone()
        return row is not None

    def latest_choices(self, channel: str, sender: str) -> List[Tuple[str, str]]:
        """The (title, payload) list offered last, in order."""
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT title, payload FROM latest_choices"
                " WHERE channel = ? AND sender = ? ORDER BY position",
                (channel, sender),
            ).fetchall()
        return [(str(title), str(payload)) for title, payload in rows]

    def forget_choices(self, channel: str, sender: str) -> None:
        """Drops the latest numbered list (after it was answered)."""
        with self._db.write() as db:
            db.execute(
                "DELETE FROM latest_choices WHERE channel = ? AND sender = ?",
                (channel, sender),
            )

    # --- SMS opt-outs --------------------------------------------------------------

    def set_opted_out(self, phone: str, opted_out: bool) -> None:
        """Records STOP (True) or START (False) for a phone number."""
        with self._db.write() as db:
            if opted_out:
                db.execute(
                    "INSERT INTO opt_outs VALUES (?, ?) ON CONFLICT (phone)"
                    " DO UPDATE SET opted_out_at = excluded.opted_out_at",
                    (phone, time.time()),
                )
            else:
                db.execute("DELETE FROM opt_outs WHERE phone = ?", (phone,))

    def is_opted_out(self, phone: str) -> bool:
        """Whether this number said STOP and not START since."""
        with self._db.connection() as db:
            row = db.execute(
                "SELECT 1 FROM opt_outs WHERE phone = ?", (phone,)
            ).fetchone()
        return row is not None

    # --- the SMS outbox --------------------------------------------------------------

    def queue_sms(
        self,
        phone: str,
        bodies: Sequence[str],
        phone_key: str,
        conversation: str,
        now: Optional[float] = None,
        handled: Optional[int] = None,
        pushed: bool = False,
    ) -> List[int]:
        """Writes replies to one number to the outbox, to be sent in this order.

        ``handled``: the inbox row of the text they answer, deleted in the same
        transaction, so that a text is either answered or still in the inbox.
        ``pushed``: the assistant started them (:meth:`pushed_sms`). Returns the
        new rows' ids.
        """
        if not bodies and handled is None:
            return []
        now = time.time() if now is None else now
        with self._db.write() as db:
            if handled is not None:
                db.execute("DELETE FROM sms_inbox WHERE id = ?", (handled,))
            ids = [
                int(
                    db.execute(
                        "INSERT INTO sms_outbox (phone, body, phone_key, conversation,"
                        " created_at, next_attempt_at, state)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        (phone, body, phone_key, conversation, now, now, PENDING),
                    ).fetchone()[0]
                )
                for body in bodies
            ]
            if pushed:
                db.executemany(
                    "INSERT INTO sms_pushed VALUES (?)", [(id_,) for id_ in ids]
                )
            # Rows of finished texts hold no number or text; old ones go.
            db.execute(
                "DELETE FROM sms_outbox WHERE (state = ? AND created_at < ?)"
                " OR (state = ? AND created_at < ?)",
                (SENT, now - SENT_SMS_DAYS * DAY, FAILED, now - FAILED_SMS_DAYS * DAY),
            )
        return ids

    def last_sms_id(self) -> int:
        """The newest outbox row's id (0 if none): a mark for :meth:`pushed_sms`.

        Rows are written one transaction at a time (:meth:`queue_sms` writes
        under the store's write lock), so a row written after this call has a
        larger id.
        """
        with self._db.connection() as db:
            (last,) = db.execute("SELECT MAX(id) FROM sms_outbox").fetchone()
        return int(last or 0)

    def pushed_sms(self, phone_key: str, after: int) -> List[int]:
        """Ids of the texts the assistant started to this number after row ``after``.

        ``phone_key``: the number's keyed hash (kept when the number is deleted).
        Replies to the number's own texts are not among them.
        """
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT o.id FROM sms_outbox o JOIN sms_pushed p ON p.outbox_id = o.id"
                " WHERE o.phone_key = ? AND o.id > ? ORDER BY o.id",
                (phone_key, after),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def failed_among(self, ids: Sequence[int]) -> Set[int]:
        """Those of these outbox rows that finally failed (and are still kept)."""
        if not ids:
            return set()
        marks = ", ".join("?" * len(ids))
        with self._db.connection() as db:
            rows = db.execute(
                f"SELECT id FROM sms_outbox WHERE state = ? AND id IN ({marks})",
                (FAILED, *ids),
            ).fetchall()
        return {int(row[0]) for row in rows}

    def due_sms(self, now: float) -> List[OutgoingSms]:
        """The oldest pending reply of each number, if it is due by ``now``.

        A number's next reply waits until the one before it is sent or has failed,
        so the replies to one number go out in order.
        """
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT id, phone, body, created_at, attempts FROM sms_outbox"
                " WHERE id IN (SELECT MIN(id) FROM sms_outbox WHERE state = ?"
                "              GROUP BY phone)"
                " AND next_attempt_at <= ? ORDER BY id",
                (PENDING, now),
            ).fetchall()
        return [
            OutgoingSms(int(id_), str(phone), str(body), float(created), int(tries))
            for id_, phone, body, created, tries in rows
        ]

    def next_sms_due(self) -> Optional[float]:
        """When the earliest pending reply is due; None if nothing is pending."""
        with self._db.connection() as db:
            (due,) = db.execute(
                "SELECT MIN(next_attempt_at) FROM sms_outbox WHERE state = ?",
                (PENDING,),
            ).fetchone()
        return None if due is None else float(due)

    def pending_sms(self) -> int:
        """How many replies are waiting to be sent."""
        with self._db.connection() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM sms_outbox WHERE state = ?", (PENDING,)
            ).fetchone()
        return int(count)

    def claim_sms(self, sms_id: int, now: float, until: float) -> bool:
        """Takes a due reply for one attempt; False if another sender took it.

        The reply is not due again until ``until`` (when an attempt that never
        finished, say in a crash, may be tried again), so two senders on one file
        never send it at the same time.
        """
        with self._db.write() as db:
            cursor = db.execute(
                "UPDATE sms_outbox SET next_attempt_at = ?"
                " WHERE id = ? AND state = ? AND next_attempt_at <= ?",
                (until, sms_id, PENDING, now),
            )
        return int(cursor.rowcount) == 1

    def sms_retry_later(
        self,
        sms_id: int,
        now: float,
        next_attempt_at: float,
        http_status: Optional[int],
        error_code: Optional[int],
    ) -> None:
        """Records a failed attempt that is worth another one at ``next_attempt_at``."""
        with self._db.write() as db:
            db.execute(
                "UPDATE sms_outbox SET attempts = attempts + 1, last_attempt_at = ?,"
                " next_attempt_at = ?, http_status = ?, error_code = ?"
                " WHERE id = ? AND state = ?",
                (now, next_attempt_at, http_status, error_code, sms_id, PENDING),
            )

    def sms_sent(
        self, sms_id: int, now: float, http_status: int, message_sid: Optional[str]
    ) -> None:
        """Records that Twilio took the reply; its number and text are deleted."""
        with self._db.write() as db:
            db.execute(
                "UPDATE sms_outbox SET state = ?, phone = NULL, body = NULL,"
                " attempts = attempts + 1, last_attempt_at = ?, http_status = ?,"
                " error_code = NULL, message_sid = ? WHERE id = ?",
                (SENT, now, http_status, message_sid, sms_id),
            )

    def sms_failed(
        self,
        sms_id: int,
        now: float,
        reason: str,
        http_status: Optional[int] = None,
        error_code: Optional[int] = None,
    ) -> None:
        """Records a last, failed attempt; the reply's number and text are deleted."""
        with self._db.write() as db:
            db.execute(
                "UPDATE sms_outbox SET state = ?, phone = NULL, body = NULL,"
                " attempts = attempts + 1, last_attempt_at = ?, http_status = ?,"
                " error_code = ?, reason = ? WHERE id = ?",
                (FAILED, now, http_status, error_code, reason, sms_id),
            )

    def drop_pending_sms(self, phone: str, reason: str) -> int:
        """Fails, without another attempt, every reply still waiting for ``phone``."""
        with self._db.write() as db:
            cursor = db.execute(
                "UPDATE sms_outbox SET state = ?, phone = NULL, body = NULL,"
                " reason = ? WHERE phone = ? AND state = ?",
                (FAILED, reason, phone, PENDING),
            )
        return int(cursor.rowcount)

    def sms_undelivered(
        self, message_sid: str, reason: str, error_code: Optional[int]
    ) -> Optional[int]:
        """Marks a sent text failed after all (Twilio's delivery report); its row id.

        None if no sent text has this SID (an old one, one deleted, or a repeat of
        the report).
        """
        with self._db.write() as db:
            row = db.execute(
                "UPDATE sms_outbox SET state = ?, reason = ?, error_code = ?"
                " WHERE message_sid = ? AND state = ? RETURNING id",
                (FAILED, reason, error_code, message_sid, SENT),
            ).fetchone()
        return None if row is None else int(row[0])

    def failed_sms(self, since: float) -> List[FailedSms]:
        """The replies that finally failed, created since ``since``, newest first."""
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT id, created_at, last_attempt_at, phone_key, conversation,"
                " attempts, http_status, error_code, reason FROM sms_outbox"
                " WHERE state = ? AND created_at >= ? ORDER BY id DESC",
                (FAILED, since),
            ).fetchall()
        return [
            FailedSms(
                id=int(row[0]),
                created_at=float(row[1]),
                last_attempt_at=None if row[2] is None else float(row[2]),
                phone_key=str(row[3]),
                conversation=str(row[4]),
                attempts=int(row[5]),
                http_status=None if row[6] is None else int(row[6]),
                error_code=None if row[7] is None else int(row[7]),
                reason=str(row[8] or ""),
            )
            for row in rows
        ]

    # --- the SMS inbox ---------------------------------------------------------------

    def receive_sms(
        self,
        sms: ReceivedSms,
        owner: str,
        lease_until: float,
        now: Optional[float] = None,
    ) -> Optional[int]:
        """Stores a received text held by ``owner``; its row id, None if seen before.

        Its ``MessageSid`` is recorded in the same transaction, so a text Twilio
        posts again is stored once (SIDs are forgotten after ``SEEN_SMS_DAYS``). A
        text without a SID (``sms.message_sid`` None) is always stored. ``sms.id``
        is ignored.
        """
        now = time.time() if now is None else now
        with self._db.write() as db:
            if sms.message_sid is not None:
                db.execute(
                    "DELETE FROM sms_seen WHERE received_at < ?",
                    (now - SEEN_SMS_DAYS * DAY,),
                )
                seen = db.execute(
                    "INSERT INTO sms_seen VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (sms.message_sid, now),
                )
                if int(seen.rowcount) != 1:
                    return None
            row = db.execute(
                "INSERT INTO sms_inbox (message_sid, phone, body, media_count,"
                " opt_out_type, received_at, owner, lease_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (
                    sms.message_sid,
                    sms.phone,
                    sms.body,
                    sms.media_count,
                    sms.opt_out_type,
                    now,
                    owner,
                    lease_until,
                ),
            ).fetchone()
        # No row: the text is still in the inbox, after its SID was forgotten.
        return None if row is None else int(row[0])

    def hold_sms(self, ids: Sequence[int], owner: str, until: float) -> int:
        """Renews ``owner``'s lease on these inbox rows; how many it still holds."""
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        with self._db.write() as db:
            cursor = db.execute(
                "UPDATE sms_inbox SET lease_until = ?"
                f" WHERE owner = ? AND id IN ({marks})",
                (until, owner, *ids),
            )
        return int(cursor.rowcount)

    def orphaned_sms(self, now: float) -> bool:
        """Whether an inbox row's lease ran out by ``now`` (a read: cheap to poll)."""
        with self._db.connection() as db:
            row = db.execute(
                "SELECT 1 FROM sms_inbox WHERE lease_until < ? LIMIT 1", (now,)
            ).fetchone()
        return row is not None

    def claim_orphaned_sms(
        self, owner: str, now: float, until: float, max_attempts: int
    ) -> Tuple[List[ReceivedSms], int]:
        """Takes the inbox rows whose lease ran out by ``now``, oldest first.

        They are held by ``owner`` until ``until``; in one transaction, so no two
        servers take the same row. A row already taken ``max_attempts`` times is
        deleted instead (a text that fails every server must not loop for ever).
        Returns the rows taken and how many were given up.
        """
        with self._db.write() as db:
            given_up = db.execute(
                "DELETE FROM sms_inbox WHERE lease_until < ? AND attempts >= ?",
                (now, max_attempts),
            )
            rows = db.execute(
                "SELECT id, message_sid, phone, body, media_count, opt_out_type"
                " FROM sms_inbox WHERE lease_until < ? ORDER BY id",
                (now,),
            ).fetchall()
            db.executemany(
                "UPDATE sms_inbox SET owner = ?, lease_until = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                [(owner, until, row[0]) for row in rows],
            )
        taken = [
            ReceivedSms(
                id=int(row[0]),
                message_sid=None if row[1] is None else str(row[1]),
                phone=str(row[2]),
                body=str(row[3]),
                media_count=int(row[4]),
                opt_out_type=str(row[5]),
            )
            for row in rows
        ]
        return taken, int(given_up.rowcount)

    def unhandled_sms(self) -> int:
        """How many received texts are in the inbox."""
        with self._db.connection() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM sms_inbox").fetchone()
        return int(count)

    # --- retention (staff: clinicbot retention, clinicbot forget) -----------------

    def remove_old(self, now: float, dry_run: bool = False) -> Dict[str, int]:
        """Deletes what is kept longer than needed; opt-outs always stay.

        Offered buttons after ``OFFER_DAYS`` (a numbered list goes with its last
        button), received SIDs after ``SEEN_SMS_DAYS``, finished outbox rows after
        ``SENT_SMS_DAYS`` (sent) or ``FAILED_SMS_DAYS`` (failed); a reply not sent
        yet stays; received texts still unhandled after ``INBOX_DAYS``. Returns
        the counts deleted (or, ``dry_run``, to delete) per kind.
        """
        offers = now - OFFER_DAYS * DAY
        return self._delete(
            {
                "offered buttons": ("offers WHERE offered_at < ?", (offers,)),
                "numbered lists": (
                    "latest_choices WHERE NOT EXISTS (SELECT 1 FROM offers o"
                    " WHERE o.channel = latest_choices.channel"
                    " AND o.sender = latest_choices.sender AND o.offered_at >= ?)",
                    (offers,),
                ),
                "received message ids": (
                    "sms_seen WHERE received_at < ?",
                    (now - SEEN_SMS_DAYS * DAY,),
                ),
                "outbox rows": (
                    "sms_outbox WHERE (state = ? AND created_at < ?)"
                    " OR (state = ? AND created_at < ?)",
                    (
                        SENT,
                        now - SENT_SMS_DAYS * DAY,
                        FAILED,
                        now - FAILED_SMS_DAYS * DAY,
                    ),
                ),
                "unhandled texts": (
                    "sms_inbox WHERE received_at < ?",
                    (now - INBOX_DAYS * DAY,),
                ),
            },
            dry_run,
        )

    def forget(
        self,
        phone: str,
        senders: Sequence[str],
        conversations: Sequence[str],
        dry_run: bool = False,
    ) -> Dict[str, int]:
        """Deletes one patient's records; their opt-out (if any) stays.

        The buttons offered to the conversations ``senders`` (on any channel), and
        the outbox rows to ``phone`` or of the conversation keys ``conversations``
        (sent and failed rows keep only the key), pending replies included, and the
        texts from ``phone`` still in the inbox. Returns
        the counts deleted (or, ``dry_run``, to delete) per kind.
        """
        who = ", ".join("?" * len(senders)) or "NULL"
        keys = ", ".join("?" * len(conversations)) or "NULL"
        return self._delete(
            {
                "offered buttons": (f"offers WHERE sender IN ({who})", (*senders,)),
                "numbered lists": (
                    f"latest_choices WHERE sender IN ({who})",
                    (*senders,),
                ),
                "outbox rows": (
                    f"sms_outbox WHERE phone = ? OR conversation IN ({keys})",
                    (phone, *conversations),
                ),
                "unhandled texts": ("sms_inbox WHERE phone = ?", (phone,)),
            },
            dry_run,
        )

    def _delete(
        self, rows: Dict[str, Tuple[str, Tuple[object, ...]]], dry_run: bool
    ) -> Dict[str, int]:
        """Counts, and unless ``dry_run`` deletes, ``FROM`` each kind's rows."""
        counts: Dict[str, int] = {}
        with self._db.write() as db:
            db.secure_delete()
            for kind, (where, parameters) in rows.items():
                counts[kind] = int(
                    db.execute(f"SELECT count(*) FROM {where}", parameters).fetchone()[
                        0
                    ]
                )
                if counts[kind] and not dry_run:
                    db.execute(f"DELETE FROM {where}", parameters)
        return counts


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
