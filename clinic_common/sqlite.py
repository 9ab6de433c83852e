"""The project's small SQLite stores, all opened the same way.

The scheduler, the call-back requests, the channels' store and the staff's review
list each keep a SQLite file under ``$STATE_DIR``. They hold patient data, so:

- a missing folder is made readable by its owner only (0700); an existing one is
  left as it is (it may be shared, e.g. /tmp);
- the file is made, or tightened to, mode 0600; SQLite gives its ``-wal`` and
  ``-shm`` files the same mode;
- every connection waits out another writer for a while (the busy timeout) before
  "database is locked", and enforces foreign keys.

:class:`Database` adds what the stores share: the schema made on first use in WAL
mode, a connection per call (safe from worker threads and several processes) and
one writer at a time. In the scaled profile the same class keeps a store's tables
in PostgreSQL instead (``STORE_DATABASE_URL``, :mod:`clinic_common.postgres`), with
the same SQL and the same guarantees. (The Rasa tracker store is SQLAlchemy's, and
not opened here.)
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from time import monotonic, sleep
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

logger = logging.getLogger(__name__)

StrPath = Union[str, "os.PathLike[str]"]
# Seconds a connection waits for another writer before "database is locked".
BUSY_TIMEOUT_SECONDS = 5.0


# What a store's call raises when its SQLite file fails.
SQLITE_ERRORS: Tuple[Type[BaseException], ...] = (OSError, sqlite3.Error)


def store_errors() -> Tuple[Type[BaseException], ...]:
    """What a store's call raises when its file or database fails, on either kind.

    Imports psycopg2: a store on a SQLite file needs only :data:`SQLITE_ERRORS`.
    """
    from clinic_common import postgres

    return (*SQLITE_ERRORS, *postgres.ERRORS)


def prepare_file(path: Path) -> None:
    """Creates ``path`` readable by its owner only, and its folder if missing (0700)."""
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is reduced by the umask
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if stat.S_IMODE(os.stat(path).st_mode) != 0o600:
        os.chmod(path, 0o600)


def connect(
    path: Path,
    *,
    timeout: float = BUSY_TIMEOUT_SECONDS,
    autocommit: bool = False,
) -> sqlite3.Connection:
    """A new connection with a busy timeout and foreign keys on.

    ``autocommit``: no implicit transactions; the caller begins its own (``BEGIN
    IMMEDIATE``). Otherwise Python's default: ``with connection:`` commits.
    """
    connection = sqlite3.connect(
        str(path), timeout=timeout, isolation_level=None if autocommit else "DEFERRED"
    )
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def enable_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switches the file to WAL mode (readers never wait for the writer).

    The mode is stored in the file, so this changes something only once. SQLite
    refuses the switch at once, without waiting out the busy timeout, while
    another process opens the same new file; hence the retries for ``timeout``.
    """
    deadline = monotonic() + timeout
    while True:
        try:
            mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0])
            if mode.lower() != "wal":
                mode = str(
                    connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                )
            break
        except sqlite3.OperationalError:
            if monotonic() > deadline:
                raise
            sleep(0.005 + secrets.randbelow(20) / 1000)  # jitter: not in lockstep
    if mode.lower() != "wal":
        logger.warning("SQLite WAL mode unavailable, using %s", mode)


Unavailable = Callable[[StrPath, BaseException], Exception]


class Connection:
    """One connection to a store, SQLite or PostgreSQL, taking SQLite's SQL.

    ``execute`` and ``executemany`` return the driver's cursor: rows are read by
    name or position either way. ``IntegrityError`` is the driver's (a refused
    constraint).
    """

    def __init__(self, raw: Any, postgres: bool) -> None:
        self._raw = raw
        self._postgres = postgres
        self.IntegrityError: Type[Exception] = raw.IntegrityError

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        """Runs one statement with ``?`` or ``:name`` parameters."""
        if not self._postgres:
            return self._raw.execute(sql, parameters)
        from clinic_common import postgres

        cursor = postgres.cursor(self._raw)
        cursor.execute(postgres.statement(sql), parameters or None)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Runs one statement once per row of parameters."""
        if not self._postgres:
            return self._raw.executemany(sql, rows)
        from clinic_common import postgres

        cursor = postgres.cursor(self._raw)
        cursor.executemany(postgres.statement(sql), list(rows))
        return cursor

    def secure_delete(self) -> None:
        """SQLite overwrites the bytes this connection deletes (PostgreSQL: no-op).

        PostgreSQL's deleted rows are gone once VACUUM (autovacuum) reuses them.
        """
        if not self._postgres:
            self._raw.execute("PRAGMA secure_delete = ON")


class Database:
    """One store's tables, created on first use, a connection per call.

    The store is a SQLite file, or a PostgreSQL database when ``location`` is a
    ``postgresql://`` URL (``STORE_DATABASE_URL``; see :mod:`clinic_common.postgres`).
    Nothing is opened until the first call.

    Args:
        location: the file, or the database URL.
        schema: SQLite DDL run once per instance, in one transaction (``IF NOT
            EXISTS``); on PostgreSQL with its types.
        unavailable: turns a database or file error into the exception the
            caller's users expect (say, a typed "backend unavailable" outcome);
            None: errors are raised as they are.
        sqlite_only, postgres_only: DDL run after ``schema`` on that kind only
            (SQLite's triggers, PostgreSQL's constraints).
    """

    def __init__(
        self,
        location: StrPath,
        schema: str,
        unavailable: Optional[Unavailable],
        *,
        sqlite_only: str = "",
        postgres_only: str = "",
    ) -> None:
        self._url = str(location) if _is_url(location) else ""
        self.location: StrPath = self._url or Path(location)
        self._errors: Tuple[Type[BaseException], ...] = SQLITE_ERRORS
        if self._url:
            from clinic_common import postgres

            self._errors = store_errors()
            self._shown: StrPath = postgres.shown(self._url)
            self._schema = postgres.schema(schema) + postgres_only
            # One writer at a time per store, like BEGIN IMMEDIATE on its file.
            self._lock_key = postgres.lock_key(schema)
        else:
            self._shown = self.location
            self._schema = schema + sqlite_only
        self._unavailable = unavailable
        self._ready = False
        self._lock = threading.Lock()  # guards the one-time setup
        self._write_lock = threading.Lock()  # see write()

    @property
    def path(self) -> Path:
        """The SQLite file (ValueError on PostgreSQL)."""
        if self._url:
            raise ValueError("this store is in PostgreSQL, not in a file")
        return Path(self.location)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A fresh connection (SQLite: autocommit; PostgreSQL: commits at the end)."""
        try:
            self._ensure_ready()
            connection = self._connect()
        except self._errors as error:
            raise self._failed(error) from error
        try:
            yield connection
            if self._url:
                connection._raw.commit()
        except self._errors as error:
            raise self._failed(error) from error
        finally:
            connection._raw.close()  # PostgreSQL: rolled back, back to the pool

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection inside a transaction: one writer at a time.

        Commits when the block ends normally, rolls back when it raises.
        SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock of this store
        for the transaction. Either waits ``BUSY_TIMEOUT_SECONDS`` at most.

        Threads of this process first queue on a lock. SQLite's own wait polls
        with growing sleeps, so under heavy contention one writer can lose every
        round until the busy timeout (seen with 32 threads in the benchmark); the
        lock wakes the next writer as soon as one is done. Other processes still
        wait on the database, and the database's lock alone is what keeps writers
        apart.
        """
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise self._failed(TimeoutError("waited too long to write"))
        try:
            with self.connection() as connection:
                if self._url:
                    connection.execute(
                        "SELECT pg_advisory_xact_lock(?)", (self._lock_key,)
                    )
                else:
                    connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    connection._raw.rollback()
                    raise
                connection._raw.commit()
        finally:
            self._write_lock.release()

    def _failed(self, error: BaseException) -> BaseException:
        """What to raise for ``error``: the caller's exception, else ``error``."""
        if self._unavailable is None:
            return error
        return self._unavailable(self._shown, error)

    def _connect(self) -> Connection:
        # The module's timeout is looked up on each call, so a test can shorten it.
        if self._url:
            from clinic_common import postgres

            return Connection(postgres.connect(self._url, BUSY_TIMEOUT_SECONDS), True)
        raw = connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, autocommit=True)
        raw.row_factory = sqlite3.Row
        return Connection(raw, False)

    def _ensure_ready(self) -> None:
        """Creates the file and tables once per instance; safe in parallel processes."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self._url:
                self._create_postgres_tables()
            else:
                self._create_sqlite_tables()
            self._ready = True

    def _create_sqlite_tables(self) -> None:
        prepare_file(self.path)
        raw = connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, autocommit=True)
        try:
            enable_wal(raw, BUSY_TIMEOUT_SECONDS)
            raw.executescript(f"BEGIN IMMEDIATE;{self._schema}COMMIT;")
        finally:
            raw.close()

    def _create_postgres_tables(self) -> None:
        """The schema under the store's write lock: processes start together."""
        from clinic_common import postgres

        raw = postgres.connect(self._url, BUSY_TIMEOUT_SECONDS)
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            cursor.execute(self._schema)
            raw.commit()
        finally:
            raw.close()


def _is_url(location: StrPath) -> bool:
    """Whether a store's location is a database URL rather than a SQLite file."""
    return isinstance(location, str) and "://" in location
