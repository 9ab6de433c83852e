"""The scaled profile's tracker store rides out a PostgreSQL restart.

A real cluster (tests/staff/pgkit.py, Debian's package) is stopped and started
again while conversations are saved and read; the store is loaded as Rasa loads it
from deploy/scaled/endpoints.yml's type.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Iterator

import pytest
import sqlalchemy as sa
import yaml
from rasa.core.tracker_store import SQLTrackerStore, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from clinic_core import shared_tracker_store
from clinic_core.shared_tracker_store import SharedSQLTrackerStore
from scripts.launcher import ROOT
from scripts.services import PG_SUPERUSER, Postgres
from tests.staff.pgkit import started_postgres

SENDER = "+18175550100"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Postgres]:
    yield from started_postgres()


@pytest.fixture
def store(cluster: Postgres) -> SharedSQLTrackerStore:
    config = EndpointConfig(
        type="clinic_core.shared_tracker_store.SharedSQLTrackerStore",
        url="127.0.0.1",
        port=cluster.port,
        dialect="postgresql",
        db="postgres",
        username=PG_SUPERUSER,
        password=cluster.superuser_password,
    )
    created = TrackerStore.create(config, Domain.empty())
    assert isinstance(created, SharedSQLTrackerStore)
    return created


def turn(text: str) -> list:  # type: ignore[type-arg]
    return [
        UserUttered(text),
        BotUttered(f"answer to {text}"),
        ActionExecuted("action_listen"),
    ]


def texts(tracker: DialogueStateTracker) -> list:  # type: ignore[type-arg]
    return [event.text for event in tracker.events if isinstance(event, UserUttered)]


def test_the_scaled_profile_names_this_store() -> None:
    endpoints = yaml.safe_load(
        (ROOT / "deploy" / "scaled" / "endpoints.yml").read_text()
    )
    assert endpoints["tracker_store"]["type"] == (
        "clinic_core.shared_tracker_store.SharedSQLTrackerStore"
    )


def test_rasas_internals_it_replaces_are_still_there(
    store: SharedSQLTrackerStore,
) -> None:
    # SQLTrackerStore.__init__ sets engine and sessionmaker, which this store
    # replaces; save and retrieve are the coroutines it wraps.
    assert isinstance(store.engine, sa.engine.Engine)
    assert store.engine.pool._pre_ping  # type: ignore[attr-defined]
    assert store.sessionmaker.kw["bind"] is store.engine
    assert asyncio.iscoroutinefunction(SQLTrackerStore.save)
    assert asyncio.iscoroutinefunction(SQLTrackerStore.retrieve)


def test_a_turn_saved_while_postgresql_restarts_is_kept_once(
    store: SharedSQLTrackerStore, cluster: Postgres
) -> None:
    tracker = DialogueStateTracker.from_events(SENDER, turn("first"))
    asyncio.run(store.save(tracker))  # the pool now holds a connection
    for event in turn("second"):
        tracker.update(event)

    cluster.stop()
    restart = threading.Timer(1.0, cluster.start)
    restart.start()
    try:
        asyncio.run(store.save(tracker))
    finally:
        restart.join()

    stored = asyncio.run(store.retrieve(SENDER))
    assert stored is not None
    assert texts(stored) == ["first", "second"]


def test_a_database_that_stays_down_fails_the_save_after_the_retries(
    store: SharedSQLTrackerStore,
    cluster: Postgres,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared_tracker_store, "RETRY_SECONDS", 1.0)
    tracker = DialogueStateTracker.from_events(SENDER + "1", turn("hello"))
    cluster.stop()
    try:
        with pytest.raises(sa.exc.OperationalError):
            asyncio.run(store.save(tracker))
    finally:
        cluster.start()
