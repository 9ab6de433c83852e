"""The project's small SQLite stores, all opened the same way.

The scheduler, the call-back requests, the channels' store and the staff's review
list each keep a SQLite file under ``$STATE_DIR``. They hold patient data, so:

- a missing folder is made readable by its owner only (0700); an existing one is
  left as it is (it may be shared, e.g. /tmp);
- the file is made, or tightened to, mode 0600; SQLite gives its ``-wal`` and
  ``-shm`` files the same mode;
- every connection waits out another writer for a while (the busy timeout) before
  "database is locked", and enforces foreign keys.

:class:`Database` adds what the scheduling stores share: the schema made on first
use in WAL mode, a connection per call (safe from worker threads and several
processes) and one writer at a time. (The Rasa tracker store is SQLAlchemy's, and
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
from typing import Callable, Iterator, Union

logger = logging.getLogger(__name__)

StrPath = Union[str, "os.PathLike[str]"]
# Seconds a connection waits for another writer before "database is locked".
BUSY_TIMEOUT_SECONDS = 5.0


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


Unavailable = Callable[[Path, BaseException], Exception]


class Database:
    """One SQLite file, created with its schema on first use, a connection per call.

    Rows are ``sqlite3.Row``. Nothing touches the disk until the first call.

    Args:
        path: the file.
        schema: SQL run once per instance, in one transaction (``IF NOT EXISTS``).
        unavailable: turns a SQLite or file error into the exception the caller's
            users expect (say, a typed "backend unavailable" outcome).
    """

    def __init__(self, path: StrPath, schema: str, unavailable: Unavailable) -> None:
        self.path = Path(path)
        self._schema = schema
        self._unavailable = unavailable
        self._ready = False
        self._lock = threading.Lock()  # guards the one-time setup
        self._write_lock = threading.Lock()  # see write()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode; errors become ``unavailable``."""
        try:
            self._ensure_ready()
            connection = self._connect()
        except (OSError, sqlite3.Error) as error:
            raise self._unavailable(self.path, error) from error
        try:
            yield connection
        except sqlite3.Error as error:
            raise self._unavailable(self.path, error) from error
        finally:
            connection.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``: one writer at a time.

        Commits when the block ends normally, rolls back when it raises.

        Threads of this process first queue on a lock. SQLite's own wait polls
        with growing sleeps, so under heavy contention one writer can lose every
        round until the busy timeout (seen with 32 threads in the benchmark); the
        lock wakes the next writer as soon as one is done. Other processes still
        wait on SQLite's busy timeout, and BEGIN IMMEDIATE alone is what keeps
        writers apart.
        """
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            error = TimeoutError("waited too long to write")
            raise self._unavailable(self.path, error)
        try:
            with self.connection() as connection:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    connection.rollback()
                    raise
                connection.commit()
        finally:
            self._write_lock.release()

    def _connect(self) -> sqlite3.Connection:
        # The module's timeout is looked up on each call, so a test can shorten it.
        connection = connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, autocommit=True)
        connection.row_factory = sqlite3.Row
        return connection

    def _ensure_ready(self) -> None:
        """Creates the file and tables once per instance; safe in parallel processes."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            prepare_file(self.path)
            connection = self._connect()
            try:
                enable_wal(connection, BUSY_TIMEOUT_SECONDS)
                connection.executescript(f"BEGIN IMMEDIATE;{self._schema}COMMIT;")
            finally:
                connection.close()
            self._ready = True
