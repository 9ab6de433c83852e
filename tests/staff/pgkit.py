"""A throwaway PostgreSQL cluster for the staff tests (scripts.services.Postgres).

The cluster lives in a temporary folder and listens on a free loopback port with a
password, as in the scaled profile; the test skips when PostgreSQL is not installed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator

import psycopg2
import pytest

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
