"""Callback requests: stored as typed, listed for staff, marked done."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduling.base import BackendUnavailable
from scheduling.callbacks import DONE, OPEN, CallbackRequest, CallbackStore
from scheduling.config import parse_scheduling_config
from scheduling.sqlite_backend import SqliteScheduler
from tests.staff.pgkit import Location, execute_raw

START = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)  # each request a minute after the last
        return self.now


@pytest.fixture
def store(store_location: Location) -> CallbackStore:
    """The call-backs on SQLite, then on PostgreSQL."""
    return CallbackStore(store_location("callbacks.db"), clock=FakeClock())


def test_requests_are_stored_as_typed_and_listed_oldest_first(
    store: CallbackStore,
) -> None:
    first = store.add(
        "Ann Example", "+18175550100", "Tuesday morning", "Lower back", "web-1"
    )
    second = store.add(
        "José Núñez\nJr.",
        "817 555 0111 (cell)",
        "after 5 — not Mondays",
        "  spaces kept  ",
        "sms:+18175550111",
    )

    assert store.list_open() == [
        CallbackRequest(
            callback_id=first,
            created_at=START + timedelta(minutes=1),
            name="Ann Example",
            phone="+18175550100",
            preferred_time_text="Tuesday morning",
            note="Lower back",
            sender_id="web-1",
            status=OPEN,
        ),
        CallbackRequest(
            callback_id=second,
            created_at=START + timedelta(minutes=2),
            name="José Núñez\nJr.",
            phone="817 555 0111 (cell)",
            preferred_time_text="after 5 — not Mondays",
            note="  spaces kept  ",
            sender_id="sms:+18175550111",
            status=OPEN,
        ),
    ]
    assert second > first


def test_missing_values_never_lose_the_request(store: CallbackStore) -> None:
    callback_id = store.add("Ann", None, None, None, None)

    [request] = store.list_open()
    assert request.callback_id == callback_id
    assert (request.name, request.phone, request.note) == ("Ann", "", "")


def test_long_text_is_kept_whole(store: CallbackStore) -> None:
    note = "pain " * 5000
    store.add("Ann", "+18175550100", "any time", note, "web")

    assert store.list_open()[0].note == note


def test_mark_done(store: CallbackStore, store_location: Location) -> None:
    first = store.add("Ann", "+18175550100", "morning", "", "a")
    second = store.add("Bob", "+18175550111", "evening", "", "b")

    assert store.mark_done(first) is True
    assert store.mark_done(first) is False  # already done
    assert store.mark_done(9999) is False  # unknown

    assert [request.callback_id for request in store.list_open()] == [second]
    rows = execute_raw(
        store_location("callbacks.db"),
        "SELECT callback_id, status, done_utc IS NOT NULL FROM callback_requests"
        " ORDER BY callback_id",
    )
    assert [tuple(row) for row in rows] == [(first, DONE, 1), (second, OPEN, 0)]


def test_requests_survive_a_new_store_apart_from_the_scheduler_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "callbacks.db"
    CallbackStore(path).add("Ann", "+18175550100", "morning", "", "a")
    config = parse_scheduling_config(
        {
            "timezone": "America/Chicago",
            "opening_hours": {"mon": ["08:00-12:00"]},
            "visit_types": [{"key": "evaluation", "name": "Evaluation", "minutes": 45}],
            "providers": ["provider-1"],
        },
        "test",
    )
    scheduler_db = tmp_path / "state" / "scheduler.db"
    SqliteScheduler(scheduler_db, config, clock=lambda: START).find_slots(
        "evaluation", START, START + timedelta(days=7)
    )

    assert [request.name for request in CallbackStore(path).list_open()] == ["Ann"]
    with sqlite3.connect(scheduler_db) as connection:
        tables = {
            row[0] for row in connection.execute("SELECT name FROM sqlite_master")
        }
    assert "callback_requests" not in tables


def test_default_path_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLBACK_DB", raising=False)
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))

    CallbackStore().add("Ann", "+18175550100", "morning", "", "a")

    assert (tmp_path / "state" / "callbacks.db").exists()
    monkeypatch.setenv("CALLBACK_DB", str(tmp_path / "elsewhere.db"))
    assert CallbackStore().list_open() == []


def test_a_locked_scheduler_database_does_not_stop_a_call_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLBACK_DB", raising=False)
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    scheduler_db = tmp_path / "scheduler.db"
    locker = sqlite3.connect(scheduler_db)
    locker.execute("CREATE TABLE t (x)")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        callback_id = CallbackStore().add("Ann", "+18175550100", "soon", "", "a")
    finally:
        locker.rollback()
        locker.close()

    assert callback_id is not None
    assert [request.name for request in CallbackStore().list_open()] == ["Ann"]


def test_a_broken_database_spools_the_request_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "callbacks.db"
    path.write_bytes(b"this is not a database " * 100)
    store = CallbackStore(path, clock=FakeClock())

    assert store.add("Ann Example", "+18175550100", "Tuesday", "", "s1") is None
    assert store.add("Bo Li", "+18175550101", "", "", "s2") is None
    spool = path.with_name("callbacks.db.spool")
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600
    assert len(spool.read_text(encoding="utf-8").splitlines()) == 2
    with pytest.raises(BackendUnavailable):
        store.list_open()  # staff see the database is broken, nothing is dropped

    path.unlink()  # staff repair the database: the spooled requests move in
    requests = CallbackStore(path, clock=FakeClock()).list_open()

    assert [(r.name, r.phone, r.preferred_time_text) for r in requests] == [
        ("Ann Example", "+18175550100", "Tuesday"),
        ("Bo Li", "+18175550101", ""),
    ]
    assert spool.read_text(encoding="utf-8") == ""
    for secret in ("Ann", "5550100", "Tuesday"):
        assert secret not in caplog.text


def test_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path / "state" / "callbacks.db")
    old_umask = os.umask(0)
    try:
        store.add("Ann", "+18175550100", "morning", "", "a")
    finally:
        os.umask(old_umask)

    state = tmp_path / "state"
    assert stat.S_IMODE(os.stat(state / "callbacks.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700


def test_an_unusable_database_and_spool_are_backend_unavailable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "callbacks.db"
    path.mkdir()
    (tmp_path / "callbacks.db.spool").mkdir()

    with pytest.raises(BackendUnavailable):
        CallbackStore(path).add("Ann", "+18175550100", "morning", "", "a")


def test_patient_data_is_never_logged(
    store: CallbackStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    callback_id = store.add(
        "Ann Example", "+18175550100", "Tuesday", "sciatica", "+18175550100"
    )
    store.list_open()
    store.mark_done(callback_id)

    assert str(callback_id) in caplog.text
    for secret in ("Ann", "5550100", "Tuesday", "sciatica"):
        assert secret not in caplog.text
