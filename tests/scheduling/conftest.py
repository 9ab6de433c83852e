"""Fixtures shared by the FHIR backend's tests and the FHIR facade's own tests, and
the stores' tests on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator, List

import psycopg2
import pytest

from clinic_common import postgres
from clinic_common.sqlite import StrPath
from scripts.services import Postgres
from tests.fakes.fhir_facade import FhirFacade
from tests.staff.pgkit import started_postgres, store_url


@pytest.fixture
def facade() -> Iterator[FhirFacade]:
    """A fake FHIR R4 server, running for one test."""
    with FhirFacade() as running:
        yield running


@pytest.fixture
def schedule(facade: FhirFacade) -> str:
    """The id of one practitioner's Schedule on ``facade``."""
    return facade.seed_schedule("Practitioner/dr-valliant")


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
