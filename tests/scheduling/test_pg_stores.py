"""What only the PostgreSQL stores have: their write lock, pool, and failures.

Every other guarantee is tested on both kinds by the store tests themselves
(``store_location``); these need a PostgreSQL server (tests/staff/pgkit.py).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from clinic_common import postgres, sqlite
from scheduling.base import BackendUnavailable, Patient
from scheduling.callbacks import CallbackStore
from scheduling.sqlite_backend import SqliteScheduler
from scripts.services import Postgres
from tests.scheduling.test_sqlite_backend import CONFIG, local
from tests.staff.pgkit import store_url

NOW = local(2026, 3, 1, 12)  # Sunday noon, before the test week
MONDAY, TUESDAY = local(2026, 3, 2), local(2026, 3, 3)


@pytest.fixture
def url(store_cluster: Postgres) -> str:
    return store_url(store_cluster)


def test_a_held_write_lock_makes_the_scheduler_unavailable_then_free_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server in a long booking transaction: this one waits, then gives up."""
    scheduler = SqliteScheduler(url, CONFIG, clock=lambda: NOW)
    other = SqliteScheduler(url, CONFIG, clock=lambda: NOW)
    slot = scheduler.find_slots("dry_needling", MONDAY, TUESDAY)[0]
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_SECONDS", 0.3)
    # The other server's transaction, still open:
    with other._db.write(), pytest.raises(BackendUnavailable):
        scheduler.book(slot, Patient("Ann", "+18175550100"), "k")

    assert scheduler.book(slot, Patient("Ann", "+18175550100"), "k").slot == slot


def test_an_unreachable_server_is_unavailable_and_its_password_never_logged(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    down = "postgresql://clinic:s3cret-word@127.0.0.1:1/clinic"  # nothing listens
    caplog.set_level(logging.DEBUG)

    with pytest.raises(BackendUnavailable):
        SqliteScheduler(down, CONFIG, clock=lambda: NOW).find_slots(
            "dry_needling", MONDAY, TUESDAY
        )
    callbacks = CallbackStore(down)
    assert callbacks.add("Ann", "+18175550100", "soon", "", "a") is None  # spooled
    assert callbacks.spool_path == tmp_path / "state" / "callbacks.db.spool"
    assert callbacks.spool_path.read_text(encoding="utf-8").count("Ann") == 1
    assert "127.0.0.1:1/clinic" in caplog.text
    assert "s3cret-word" not in caplog.text


def test_the_spooled_call_back_moves_into_postgresql(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    down = "postgresql://clinic:pw@127.0.0.1:1/clinic"
    CallbackStore(down).add("Ann", "+18175550100", "soon", "", "a")

    assert [request.name for request in CallbackStore(url).list_open()] == ["Ann"]


def test_each_process_keeps_store_pool_size_connections(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORE_POOL_SIZE", "2")
    own = url + "?application_name=pool-test"  # a pool of its own in this process
    connections = [postgres.connect(own, 5.0) for _ in range(2)]
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_SECONDS", 0.2)
    store = CallbackStore(own)
    try:
        with pytest.raises(BackendUnavailable):  # no third connection
            store.list_open()
    finally:
        for connection in connections:
            connection.close()
    assert store.list_open() == []


def test_a_store_call_during_a_postgresql_restart_waits_for_it(
    url: str, store_cluster: Postgres
) -> None:
    scheduler = SqliteScheduler(url, CONFIG, clock=lambda: NOW)
    assert scheduler.find_slots("dry_needling", MONDAY, TUESDAY)  # pool connected
    store_cluster.stop()
    restart = threading.Timer(1.0, store_cluster.start)
    restart.start()
    try:
        started = time.monotonic()
        assert scheduler.find_slots("dry_needling", MONDAY, TUESDAY)
        assert 0.8 < time.monotonic() - started < sqlite.BUSY_TIMEOUT_SECONDS
    finally:
        restart.join()
