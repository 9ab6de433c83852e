"""The conversation store: Rasa's SQL tracker store, without re-reading every turn.

Rasa's ``SQLTrackerStore`` rebuilds the whole conversation from the database at the
start of every message (one query, JSON decoding and a replay of every event) and,
to save it, counts the stored events with a second query before inserting the new
ones through the ORM. That was a fifth of the server's time per message (see
docs/pipeline.md, "Serving cost").

``CachedSQLTrackerStore`` writes exactly the same rows to the same ``events`` table
(so ``rasa export``, the staff tools and Rasa's own store can read it), but:

* it keeps the tracker it last saved for each conversation in memory (a bounded
  LRU), and hands it back as long as the database agrees that nothing was written
  since: one indexed ``max(id)`` query instead of a rebuild. Another process
  writing to the conversation, a failed turn that changed the tracker without saving
  it, or a new session all make it fall back to Rasa's own reading. A conversation
  removed from the database (``clinicbot retention``/``forget``) is never served
  from memory, and a turn that was running meanwhile saves only its own events;
* it inserts the new events with one Core ``INSERT`` in one transaction;
* on SQLite it keeps connections open (SQLAlchemy 1.4 reopens the file for every
  statement) and turns on write-ahead logging (readers never block the writer; a
  commit is one append to the log instead of a rewrite of the journal) and a busy
  timeout. ``synchronous`` stays ``FULL``, so a commit that returned survives a
  power cut.

Nothing else changes: the events, their order and the session handling are Rasa's.

**When the database fails** (locked past the busy timeout, unreadable, gone), the
patient is still answered and nothing is lost: a conversation that cannot be read is
served from memory (or started afresh, if this process never saw it), and a turn that
cannot be saved stays in memory, marked pending, and is written with the
conversation's next successful save. Every such failure is logged as one line with a
conversation key and the database's own short reason, never a statement or its
values (SQLAlchemy's error text repeats the events, messages included).
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set

import sqlalchemy as sa
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event, SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

from clinic_common.privacy import conversation_key

logger = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 500  # conversations kept in memory (a few tens of kB each)
SQLITE_BUSY_TIMEOUT_MS = 5000


@dataclass
class _Cached:
    """A tracker as it was saved, and where the database stood at that moment."""

    tracker: DialogueStateTracker
    saved_events: int  # how many of tracker.events the database holds
    last_id: int  # the conversation's highest event id in the database then
    pending: bool = False  # events after saved_events wait for the database


def database_reason(error: sa.exc.SQLAlchemyError) -> str:
    """The database's short reason, without the statement or its values."""
    original = getattr(error, "orig", None)
    if isinstance(original, sqlite3.Error):
        return f"{type(original).__name__}: {original}"  # fixed texts, no data
    return type(original or error).__name__


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


class CachedSQLTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` with a verified in-memory cache of recent trackers."""

    def __init__(
        self,
        domain: Optional[Domain] = None,
        dialect: str = "sqlite",
        host: Optional[str] = None,
        port: Optional[int] = None,
        db: str = "rasa.db",
        username: Optional[str] = None,
        password: Optional[str] = None,
        event_broker: Optional[EventBroker] = None,
        login_db: Optional[str] = None,
        query: Optional[Dict[str, Any]] = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        **kwargs: Any,
    ) -> None:
        """Connects like ``SQLTrackerStore``; ``cache_size`` bounds the cache."""
        if int(cache_size) < 0:
            raise ValueError(f"cache_size must be 0 or more, not {cache_size!r}")
        super().__init__(
            domain,
            dialect,
            host,
            port,
            db,
            username,  # type: ignore[arg-type]
            password,  # type: ignore[arg-type]
            event_broker,
            login_db,
            query,
            **kwargs,
        )
        self.engine: sa.engine.Engine = self.engine
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        # Conversations of which this process knows the database holds no event
        # (new, or started afresh while the database failed), until saved.
        self._nothing_stored: Set[str] = set()
        self._events = self.SQLEvent.__table__
        self._last_id_query = sa.select(sa.func.max(self._events.c.id)).where(
            self._events.c.sender_id == sa.bindparam("sender_id")
        )
        if self.engine.dialect.name == "sqlite" and self.engine.url.database:
            self._use_pooled_sqlite_connections()

    def _use_pooled_sqlite_connections(self) -> None:
        """Keeps SQLite connections open between statements, in WAL mode.

        SQLAlchemy 1.4 opens and closes a file database for every statement
        (``NullPool``); reopening cost more than the queries. A connection is used
        by one caller at a time, so it may move between threads.
        """
        url = self.engine.url
        self.engine.dispose()
        self.engine = sa.create_engine(
            url,
            poolclass=sa.pool.QueuePool,
            pool_size=4,
            max_overflow=8,
            connect_args={"check_same_thread": False},
        )
        sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)

    # ----------------------------------------------------------------- reading

    async def retrieve(self, sender_id: str) -> Optional[DialogueStateTracker]:
        """The latest session of the conversation; from memory when still current.

        If the database cannot be read, the conversation comes from memory, or
        (never seen by this process) starts afresh: the patient is answered.
        """
        cached = self._cache.get(sender_id)
        if cached is not None and cached.pending:
            return cached.tracker  # the database lacks its latest turns
        try:
            return await self._retrieve_cached_or_stored(sender_id, cached)
        except sa.exc.SQLAlchemyError as error:
            key = conversation_key(sender_id)
            if cached is not None:
                logger.error(
                    "Conversation %s read from memory: the tracker database "
                    "failed (%s).",
                    key,
                    database_reason(error),
                )
                return cached.tracker
            logger.error(
                "Conversation %s started afresh: the tracker database failed (%s).",
                key,
                database_reason(error),
            )
            self._nothing_stored.add(sender_id)  # of the tracker Rasa now creates
            return None

    async def _retrieve_cached_or_stored(
        self, sender_id: str, cached: Optional[_Cached]
    ) -> Optional[DialogueStateTracker]:
        if cached is not None:
            with self.engine.connect() as connection:
                last_id = self._last_id(connection, sender_id)
            if self._is_current(cached, last_id):
                self._cache.move_to_end(sender_id)
                return cached.tracker
            self._forget(sender_id)
        # Read the high-water mark first: a write that lands in between makes the
        # cache entry look stale next time (safe), never current when it is not.
        with self.engine.connect() as connection:
            last_id = self._last_id(connection, sender_id)
        tracker = await super().retrieve(sender_id)
        if tracker is not None:
            self._remember(tracker, last_id)
        elif not last_id:
            self._nothing_stored.add(sender_id)
        return tracker

    def _last_id(self, connection: sa.engine.Connection, sender_id: str) -> int:
        value = connection.execute(
            self._last_id_query, {"sender_id": sender_id}
        ).scalar()
        return int(value or 0)

    @staticmethod
    def _is_current(cached: _Cached, last_id: int) -> bool:
        """Nothing was written since the save, and the tracker was not changed."""
        return (
            cached.last_id == last_id
            and len(cached.tracker.events) == cached.saved_events
        )

    # ----------------------------------------------------------------- writing

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Appends the events the database does not have yet, in one transaction.

        If the database fails, the turn is kept in memory (pending) and written
        with the conversation's next save: never lost, never written twice.
        """
        sender_id = tracker.sender_id
        cached = self._cache.get(sender_id)
        if cached is not None and cached.tracker is not tracker:
            cached = None
        stored: Optional[int] = None
        removed = False
        try:
            with self.engine.begin() as connection:
                last_id = self._last_id(connection, sender_id)
                # Fewer rows than when it was read: the conversation was removed
                # (clinicbot retention or forget) during this turn. Only the turn's
                # own events are written; the removed ones must not come back.
                removed = cached is not None and 0 <= last_id < cached.last_id
                if cached is not None and (
                    cached.pending or cached.last_id == last_id or removed
                ):
                    stored = cached.saved_events
                else:
                    stored = self._stored_in_latest_session(sender_id)
                new_events = list(itertools.islice(tracker.events, stored, None))
                if new_events:
                    connection.execute(
                        self._events.insert(),
                        [self._row(sender_id, event) for event in new_events],
                    )
                    last_id = self._last_id(connection, sender_id)
        except sa.exc.SQLAlchemyError as error:
            self._keep_pending(tracker, stored, error)
            return
        self._nothing_stored.discard(sender_id)
        if self.event_broker is not None and new_events:
            await self._stream_new_events(self.event_broker, new_events, sender_id)
        if removed:
            self._forget(sender_id)  # its earlier events are in memory only
        else:
            self._remember(tracker, last_id)
        logger.debug("Tracker stored (%d new events).", len(new_events))

    def _stored_in_latest_session(self, sender_id: str) -> int:
        """How many of the latest session's events are stored (Rasa's own count)."""
        with self.session_scope() as session:
            return int(
                self._event_query(
                    session, sender_id, fetch_events_from_all_sessions=False
                ).count()
            )

    @staticmethod
    def _row(sender_id: str, event: Event) -> Dict[str, Any]:
        """The ``events`` row of one event, exactly as ``SQLTrackerStore`` writes it."""
        data = event.as_dict()
        return {
            "sender_id": sender_id,
            "type_name": event.type_name,
            "timestamp": data.get("timestamp"),
            "intent_name": data.get("parse_data", {})
            .get("intent", {})
            .get(INTENT_NAME_KEY),
            "action_name": data.get("name"),
            "data": json.dumps(data),
        }

    def _keep_pending(
        self,
        tracker: DialogueStateTracker,
        stored: Optional[int],
        error: sa.exc.SQLAlchemyError,
    ) -> None:
        """Keeps a turn the database did not take, to be written at the next save."""
        key = conversation_key(tracker.sender_id)
        if stored is None and tracker.sender_id in self._cache:
            stored = self._cache[tracker.sender_id].saved_events
        if stored is None and tracker.sender_id in self._nothing_stored:
            stored = 0
        if stored is None:
            # Read from the database but its stored count is unknown: writing it
            # later could double events, so this turn is only in Rasa's memory.
            logger.error(
                "Conversation %s not saved: the tracker database failed (%s).",
                key,
                database_reason(error),
            )
            return
        self._cache[tracker.sender_id] = _Cached(tracker, stored or 0, -1, True)
        self._cache.move_to_end(tracker.sender_id)
        logger.error(
            "Conversation %s kept in memory, to be saved with its next turn: the "
            "tracker database failed (%s).",
            key,
            database_reason(error),
        )

    # ------------------------------------------------------------------- cache

    def _remember(self, tracker: DialogueStateTracker, last_id: int) -> None:
        """Caches the saved tracker, unless reading it back would differ.

        Rasa reads back only the latest session: the events stamped at or after its
        ``SessionStarted``. A tracker that holds anything else (the turn that opened
        a session also holds the ``action_session_start`` before it, or an older
        session) is dropped, and the next turn reads it from the database.
        """
        sender_id = tracker.sender_id
        if self.cache_size == 0 or not self._reads_back_as_is(tracker):
            self._forget(sender_id)
            return
        self._cache[sender_id] = _Cached(tracker, len(tracker.events), last_id)
        self._cache.move_to_end(sender_id)
        settled = [key for key, entry in self._cache.items() if not entry.pending]
        for key in settled[: max(0, len(self._cache) - self.cache_size)]:
            del self._cache[key]  # pending turns are never dropped

    def _forget(self, sender_id: str) -> None:
        self._cache.pop(sender_id, None)

    @staticmethod
    def _reads_back_as_is(tracker: DialogueStateTracker) -> bool:
        """Would ``SQLTrackerStore.retrieve`` return exactly these events?"""
        starts = [e.timestamp for e in tracker.events if isinstance(e, SessionStarted)]
        return not starts or all(e.timestamp >= starts[-1] for e in tracker.events)

    def cached_senders(self) -> List[str]:
        """Conversation ids held in memory, least recently used first (for tests)."""
        return list(self._cache)
