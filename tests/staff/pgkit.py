"""A throwaway PostgreSQL cluster for the tests (scripts.services.Postgres).

The cluster lives in a temporary folder and listens on a free loopback port with a
password, as in the scaled profile; the test skips when PostgreSQL is not installed.
The store tests' fixtures (``store_location``: a SQLite file, then PostgreSQL) are
here too; a test module imports them.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import psycopg2
import pytest

from clinic_common import postgres
from clinic_common.sqlite import StrPath
from scripts.launcher import free_port
from scripts.services import PG_SUPERUSER, MissingPackage, Postgres, postgres_bin

# An endpoints file naming database DATABASE of the cluster, as Rasa reads it (the
# section's ``url`` is the host); the variables come from ``environment``.
ENDPOINTS = """tracker_store:
  type: TYPE
  dialect: "postgresql"
  url: 127.0.0.1
  port: ${PG_PORT}
  db: DATABASE
  username: SUPERUSER
  password: ${PG_PASSWORD}
""".replace("SUPERUSER", PG_SUPERUSER)


def started_postgres() -> Iterator[Postgres]:
    """A started cluster (for a module-scoped fixture); stopped and deleted after."""
    try:
        bin_dir = postgres_bin()
    except MissingPackage as missing:
        pytest.skip(str(missing))
    root = Path(tempfile.mkdtemp(prefix="pg-staff-"))
    cluster = Postgres(root / "pg", free_port(), bin_dir=bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def endpoints(cluster: Postgres, database: str, store_type: str) -> str:
    """endpoints.yml naming ``database`` with ``store_type``."""
    return ENDPOINTS.replace("DATABASE", database).replace("TYPE", store_type)


def environment(cluster: Postgres) -> Dict[str, str]:
    """The variables ``endpoints`` uses."""
    return {"PG_PORT": str(cluster.port), "PG_PASSWORD": cluster.superuser_password}


def store_url(cluster: Postgres) -> str:
    """A ``STORE_DATABASE_URL`` of the cluster's ``postgres`` database, emptied first.

    The public schema is dropped and made again, so each test's stores start with
    no tables, as a new SQLite file would.
    """
    url = cluster.url("postgres").render_as_string(hide_password=False)
    connection = psycopg2.connect(url)
    try:
        connection.autocommit = True
        connection.cursor().execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        connection.close()
    return url


Location = Callable[[str], StrPath]


@pytest.fixture(scope="session")
def store_cluster() -> Iterator[Postgres]:
    """One PostgreSQL cluster for every store test that needs it."""
    yield from started_postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """Where a test's store lives: a new SQLite file, or an empty PostgreSQL database.

    Call it with the file's name (the PostgreSQL URL is the same for every store,
    as ``STORE_DATABASE_URL`` is). The cluster starts only for the PostgreSQL runs.
    """
    if request.param == "sqlite":
        return lambda name: tmp_path / "state" / name
    url = store_url(request.getfixturevalue("store_cluster"))
    return lambda name: url


def count_rows(location: StrPath, sql: str) -> int:
    """The count ``sql`` (``SELECT count(*) ...``) finds in a store's database."""
    return int(execute_raw(location, sql).fetchone()[0])


def execute_raw(location: StrPath, sql: str, parameters: Any = ()) -> Any:
    """Runs one statement on its own connection, committed; returns its rows.

    Rows are fetched before the connection closes (a list, with ``fetchone``).
    """
    if is_url(location):
        connection = psycopg2.connect(str(location))
        try:
            cursor = connection.cursor()
            cursor.execute(postgres.statement(sql), parameters or None)
            rows = cursor.fetchall() if cursor.description else []
            connection.commit()
        finally:
            connection.close()
    else:
        with sqlite3.connect(location) as file:
            rows = file.execute(sql, parameters).fetchall()
    return _Rows(rows)


class _Rows(List[Any]):
    def fetchone(self) -> Any:
        return self[0] if self else None


def is_url(location: StrPath) -> bool:
    """Whether ``location`` is a PostgreSQL URL rather than a file."""
    return isinstance(location, str) and "://" in location


# Both drivers' "a constraint refused this".
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg2.IntegrityError)
