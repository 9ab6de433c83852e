"""clinic_common/sqlite.py: the small stores all opened the same way."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from testkit import PROJECT_ROOT

from channels.store import ChannelStore
from clinic_common import sqlite
from scheduling.callbacks import CallbackStore
from staff.missed import ReviewStore


class Unavailable(Exception):
    """What the test's stores raise for a failed file."""


def unavailable(path: Path, error: BaseException) -> Unavailable:
    return Unavailable(f"{path.name}: {error}")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """The modes must not depend on the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("no_umask")
def test_a_new_file_and_folder_are_their_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "x.db"
    sqlite.prepare_file(path)

    assert (mode(path.parent), mode(path)) == (0o700, 0o600)


@pytest.mark.usefixtures("no_umask")
def test_an_existing_file_is_tightened_and_an_existing_folder_kept(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "x.db"
    path.touch(mode=0o644)

    sqlite.prepare_file(path)

    assert (mode(tmp_path), mode(path)) == (0o755, 0o600)


def test_a_connection_has_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    connection = sqlite.connect(tmp_path / "x.db", timeout=2.5)
    try:
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert connection.isolation_level == "DEFERRED"
    finally:
        connection.close()
    autocommit = sqlite.connect(tmp_path / "x.db", autocommit=True)
    assert autocommit.isolation_level is None
    autocommit.close()


@pytest.mark.usefixtures("no_umask")
def test_a_database_is_made_on_first_use_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.db"
    database = sqlite.Database(path, "CREATE TABLE IF NOT EXISTS t (x);", unavailable)
    assert not path.parent.exists()  # nothing before the first call

    with database.write() as connection:
        connection.execute("INSERT INTO t VALUES (1)")
    with database.connection() as connection:
        row = connection.execute("SELECT x FROM t").fetchone()
        assert row["x"] == 1
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        modes = {name: mode(path.parent / name) for name in os.listdir(path.parent)}
    assert modes == {"x.db": 0o600, "x.db-wal": 0o600, "x.db-shm": 0o600}


def test_a_write_that_raises_is_rolled_back(tmp_path: Path) -> None:
    database = sqlite.Database(tmp_path / "x.db", "CREATE TABLE t (x);", unavailable)
    with pytest.raises(KeyError), database.write() as connection:
        connection.execute("INSERT INTO t VALUES (1)")
        raise KeyError("stop")

    with database.connection() as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_a_locked_database_waits_the_busy_timeout_then_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = sqlite.Database(tmp_path / "x.db", "CREATE TABLE t (x);", unavailable)
    with database.connection():
        pass  # created
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_SECONDS", 0.3)
    other = sqlite3.connect(database.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with (
            pytest.raises(Unavailable, match="x.db: database is locked"),
            database.write(),
        ):
            pass
    finally:
        other.rollback()
        other.close()

    assert 0.3 <= time.monotonic() - started < 3
    with database.write() as connection:  # free again
        connection.execute("INSERT INTO t VALUES (1)")


def test_an_unusable_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.mkdir()
    database = sqlite.Database(path, "CREATE TABLE t (x);", unavailable)

    with pytest.raises(Unavailable), database.connection():
        pass


@pytest.mark.usefixtures("no_umask")
def test_the_channel_and_staff_stores_are_owner_only(tmp_path: Path) -> None:
    channels = ChannelStore(tmp_path / "channels" / "channels.db")
    channels.set_opted_out("+18175550100", True)
    reviews = ReviewStore(tmp_path / "staff")

    assert mode(channels.path.parent) == mode(reviews.path.parent) == 0o700
    assert mode(channels.path) == mode(reviews.path) == 0o600
    with sqlite3.connect(channels.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_call_backs_do_not_need_the_scheduler_backend(tmp_path: Path) -> None:
    code = (
        "import sys, scheduling.callbacks; "
        "sys.exit('scheduling.sqlite_backend' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)
    store = CallbackStore(tmp_path / "callbacks.db")
    assert store.add("Ann", "+18175550100", "morning", "", "s") == 1
