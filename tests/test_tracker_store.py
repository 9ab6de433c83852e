"""CachedSQLTrackerStore: the same rows as Rasa's SQLTrackerStore, fewer rebuilds."""

from __future__ import annotations

import inspect
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import sqlalchemy as sa
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from clinic_core import tracker_store
from clinic_core.tracker_store import CachedSQLTrackerStore

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet, faq]
slots:
  patient_name:
    type: text
    mappings:
    - type: custom
responses:
  utter_greet:
  - text: hi
"""
)


def turn(text: str, answer: str, at: float) -> List[Event]:
    return [
        UserUttered(text, {"name": "greet", "confidence": 0.9}, timestamp=at),
        ActionExecuted("utter_greet", timestamp=at + 0.1),
        BotUttered(answer, timestamp=at + 0.2),
        ActionExecuted("action_listen", timestamp=at + 0.3),
    ]


def opening(at: float) -> List[Event]:
    return [
        ActionExecuted("action_session_start", timestamp=at),
        SessionStarted(timestamp=at + 0.01),
        ActionExecuted("action_listen", timestamp=at + 0.02),
    ]


def as_dicts(tracker: DialogueStateTracker | None) -> List[Dict[str, Any]]:
    assert tracker is not None
    return [event.as_dict() for event in tracker.events]


def cached_store(path: Path, **kwargs: Any) -> CachedSQLTrackerStore:
    return CachedSQLTrackerStore(DOMAIN, dialect="sqlite", db=str(path), **kwargs)


def rasa_store(path: Path) -> SQLTrackerStore:
    return SQLTrackerStore(DOMAIN, dialect="sqlite", db=str(path))


def rows(path: Path) -> List[Tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT sender_id, type_name, timestamp, intent_name, action_name, data "
            "FROM events ORDER BY id"
        ).fetchall()


class QueryCounter:
    """Counts the SQL statements an engine runs."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.statements: List[str] = []
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)


async def start_conversation(
    store: SQLTrackerStore, sender: str, now: float
) -> DialogueStateTracker:
    """What Rasa does on a patient's first message: create, open a session, answer.

    Returns the tracker as the next turn reads it.
    """
    tracker = DialogueStateTracker.from_events(
        sender, [ActionExecuted("action_listen", timestamp=now - 1)], DOMAIN.slots
    )
    await store.save(tracker)  # create_tracker saves the empty conversation
    tracker.update_with_events(
        opening(now) + turn("hello", "hi", now + 1), DOMAIN, override_timestamp=False
    )
    await store.save(tracker)
    read = await store.retrieve(sender)
    assert read is not None
    return read


async def next_turn(
    store: SQLTrackerStore, sender: str, text: str, at: float
) -> DialogueStateTracker:
    tracker = await store.retrieve(sender)
    assert tracker is not None
    tracker.update_with_events(
        turn(text, "answer", at), DOMAIN, override_timestamp=False
    )
    await store.save(tracker)
    return tracker


def test_the_rasa_internals_the_store_relies_on_are_there() -> None:
    # CachedSQLTrackerStore passes these to Rasa's constructor by position.
    assert list(inspect.signature(SQLTrackerStore.__init__).parameters)[:11] == [
        "self",
        "domain",
        "dialect",
        "host",
        "port",
        "db",
        "username",
        "password",
        "event_broker",
        "login_db",
        "query",
    ]
    # It writes rows of this table itself, and counts them with Rasa's query.
    columns = set(SQLTrackerStore.SQLEvent.__table__.columns.keys())
    assert columns == {
        "id",
        "sender_id",
        "type_name",
        "timestamp",
        "intent_name",
        "action_name",
        "data",
    }
    assert list(inspect.signature(SQLTrackerStore._event_query).parameters) == [
        "self",
        "session",
        "sender_id",
        "fetch_events_from_all_sessions",
    ]
    assert inspect.iscoroutinefunction(SQLTrackerStore._stream_new_events)
    assert callable(SQLTrackerStore.session_scope)


async def test_writes_the_same_rows_as_rasas_store(tmp_path: Path) -> None:
    now = time.time()
    for store in (rasa_store(tmp_path / "rasa.db"), cached_store(tmp_path / "ours.db")):
        await start_conversation(store, "p1", now)
        for index in range(3):
            await next_turn(store, "p1", f"question {index}", now + 10 + index)
        tracker = await store.retrieve("p1")
        assert tracker is not None
        tracker.update_with_events(
            [SlotSet("patient_name", "Al", timestamp=now + 20)],
            DOMAIN,
            override_timestamp=False,
        )
        await store.save(tracker)
    assert rows(tmp_path / "ours.db") == rows(tmp_path / "rasa.db")
    assert len(rows(tmp_path / "ours.db")) == 1 + 3 + 4 + 3 * 4 + 1


async def test_reads_back_what_rasas_store_reads(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = cached_store(path)
    now = time.time()
    first = await start_conversation(store, "p1", now)
    assert as_dicts(first) == as_dicts(await rasa_store(path).retrieve("p1"))
    for index in range(3):
        ours = await next_turn(store, "p1", f"q{index}", now + 10 + index)
        assert as_dicts(ours) == as_dicts(await rasa_store(path).retrieve("p1"))
        assert as_dicts(await store.retrieve("p1")) == as_dicts(ours)


async def test_a_saved_conversation_comes_back_from_memory_with_one_query(
    tmp_path: Path,
) -> None:
    store = cached_store(tmp_path / "t.db")
    now = time.time()
    await start_conversation(store, "p1", now)
    tracker = await next_turn(store, "p1", "question", now + 10)
    counter = QueryCounter(store.engine)
    assert await store.retrieve("p1") is tracker
    assert len(counter.statements) == 1
    assert "max(events.id)" in counter.statements[0]


async def test_after_one_database_read_the_conversation_is_served_from_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    await start_conversation(rasa_store(path), "p1", time.time())
    store = cached_store(path)
    read = await store.retrieve("p1")  # e.g. after a restart
    assert read is not None and store.cached_senders() == ["p1"]
    assert await store.retrieve("p1") is read
    read.update_with_events(
        turn("q", "a", time.time() + 10), DOMAIN, override_timestamp=False
    )
    await store.save(read)
    assert as_dicts(await rasa_store(path).retrieve("p1")) == as_dicts(read)


def test_sqlite_connections_are_kept_open_between_statements(tmp_path: Path) -> None:
    store = cached_store(tmp_path / "t.db")
    assert isinstance(store.engine.pool, sa.pool.QueuePool)
    opened: List[Any] = []
    sa.event.listen(store.engine, "connect", lambda *_: opened.append(1))
    for _ in range(5):
        with store.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    assert len(opened) <= 1


async def test_the_turn_that_opens_a_session_is_read_from_the_database(
    tmp_path: Path,
) -> None:
    store = cached_store(tmp_path / "t.db")
    now = time.time()
    tracker = DialogueStateTracker.from_events(
        "p1", opening(now) + turn("hello", "hi", now + 1), DOMAIN.slots
    )
    await store.save(tracker)
    assert store.cached_senders() == []  # it holds action_session_start
    read = await store.retrieve("p1")
    assert read is not tracker
    assert as_dicts(read)[0]["event"] == "session_started"


async def test_a_write_by_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store, other = cached_store(path), rasa_store(path)
    now = time.time()
    await start_conversation(store, "p1", now)
    mine = await next_turn(store, "p1", "mine", now + 10)
    theirs = await next_turn(other, "p1", "from elsewhere", now + 11)

    fresh = await store.retrieve("p1")
    assert fresh is not mine
    assert as_dicts(fresh) == as_dicts(theirs)
    await next_turn(store, "p1", "mine again", now + 12)
    assert len(rows(path)) == 1 + 3 + 4 + 3 * 4


async def test_a_turn_that_failed_before_saving_is_not_served_from_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    store = cached_store(path)
    now = time.time()
    await start_conversation(store, "p1", now)
    saved = as_dicts(await next_turn(store, "p1", "kept", now + 10))
    got = await store.retrieve("p1")
    assert got is not None
    got.update_with_events(turn("lost", "never saved", now + 11), DOMAIN)  # no save

    again = await store.retrieve("p1")
    assert again is not got
    assert as_dicts(again) == saved


async def test_a_new_session_is_read_back_like_rasa_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = cached_store(path)
    now = time.time()
    await start_conversation(store, "p1", now)
    tracker = await next_turn(store, "p1", "old", now + 10)
    tracker = await store.retrieve("p1")
    assert tracker is not None
    tracker.update_with_events(opening(now + 5000), DOMAIN, override_timestamp=False)
    await store.save(tracker)
    assert "p1" not in store.cached_senders()
    ours, rasas = await store.retrieve("p1"), await rasa_store(path).retrieve("p1")
    assert as_dicts(ours) == as_dicts(rasas)
    assert as_dicts(ours) == [event.as_dict() for event in opening(now + 5000)[1:]]


async def test_the_cache_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    store = cached_store(tmp_path / "t.db", cache_size=2)
    now = time.time()
    expected = {}
    for sender in ("a", "b", "c"):
        await start_conversation(store, sender, now)
        expected[sender] = as_dicts(await next_turn(store, sender, "q", now + 10))
    assert store.cached_senders() == ["b", "c"]
    await store.retrieve("b")
    assert store.cached_senders() == ["c", "b"]
    assert as_dicts(await store.retrieve("a")) == expected["a"]  # from the database


async def test_cache_size_zero_always_reads_the_database(tmp_path: Path) -> None:
    store = cached_store(tmp_path / "t.db", cache_size=0)
    now = time.time()
    await start_conversation(store, "p1", now)
    tracker = await next_turn(store, "p1", "q", now + 10)
    assert store.cached_senders() == []
    got = await store.retrieve("p1")
    assert got is not tracker and as_dicts(got) == as_dicts(tracker)


def test_a_negative_cache_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        cached_store(tmp_path / "t.db", cache_size=-1)


async def test_unknown_conversation_is_none(tmp_path: Path) -> None:
    assert await cached_store(tmp_path / "t.db").retrieve("nobody") is None


async def test_sqlite_runs_in_write_ahead_log_mode(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = cached_store(path)
    await store.save(DialogueStateTracker.from_events("p", opening(1.0), DOMAIN.slots))
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


class CollectingBroker(EventBroker):
    def __init__(self) -> None:
        self.published: List[Dict[str, Any]] = []

    def publish(self, event: Dict[str, Any]) -> None:
        self.published.append(event)


async def test_an_event_broker_gets_each_new_event_once(tmp_path: Path) -> None:
    broker = CollectingBroker()
    store = CachedSQLTrackerStore(
        DOMAIN, dialect="sqlite", db=str(tmp_path / "t.db"), event_broker=broker
    )
    now = time.time()
    await start_conversation(store, "p1", now)
    await next_turn(store, "p1", "q", now + 10)
    await next_turn(store, "p1", "q", now + 11)
    kinds = ["action"] + ["action", "session_started", "action"] + 3 * [
        "user", "action", "bot", "action"
    ]  # fmt: skip
    assert [event["event"] for event in broker.published] == kinds
    assert {event["sender_id"] for event in broker.published} == {"p1"}


# --- when the database fails: answered, kept in memory, written once later ---------


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_store, "SQLITE_BUSY_TIMEOUT_MS", 200)


async def test_turns_saved_while_the_database_is_locked_are_written_later_once(
    tmp_path: Path, short_busy_timeout: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tracker.db"
    store = cached_store(path)
    now = time.time()
    await start_conversation(store, "+18175550188", now)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        await next_turn(store, "+18175550188", "I have chest pain", now + 10)
        await next_turn(store, "+18175550188", "my name is Ana Lopez", now + 20)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    # Only the first turn is in the database so far.
    assert [row[1] for row in rows(path)].count("user") == 1

    tracker = await next_turn(store, "+18175550188", "thanks", now + 30)

    stored = await rasa_store(path).retrieve("+18175550188")
    assert as_dicts(stored) == as_dicts(tracker)  # every turn, once, in order
    assert "kept in memory, to be saved with its next turn" in caplog.text
    for secret in ("chest pain", "Ana Lopez", "+18175550188", "8175550188"):
        assert secret not in caplog.text


async def test_a_conversation_is_answered_when_the_database_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tracker.db"
    store = cached_store(path)
    now = time.time()
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE events")

    assert await store.retrieve("new-patient") is None  # Rasa starts it afresh
    tracker = DialogueStateTracker.from_events(
        "new-patient",
        [ActionExecuted("action_listen", timestamp=now - 1)],
        DOMAIN.slots,
    )
    await store.save(tracker)  # no error: the turn waits in memory
    tracker.update_with_events(
        opening(now) + turn("I have chest pain", "Call 911", now + 1),
        DOMAIN,
        override_timestamp=False,
    )
    await store.save(tracker)
    assert await store.retrieve("new-patient") is tracker  # served from memory

    CachedSQLTrackerStore.SQLEvent.__table__.create(store.engine)
    await next_turn(store, "new-patient", "thanks", now + 10)

    assert [row[5] for row in rows(path)] == [
        json.dumps(event.as_dict()) for event in tracker.events
    ]
    assert "started afresh: the tracker database failed" in caplog.text
    assert "chest pain" not in caplog.text
