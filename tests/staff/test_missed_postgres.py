"""Missed messages from a PostgreSQL tracker store: the same inbox as on SQLite.

The test starts its own PostgreSQL cluster (Debian's package, in /usr/lib/postgresql)
in a temporary folder, listening on a Unix socket only; Rasa's own SQLTrackerStore
writes the conversations into it, as the Rasa server would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from staffkit import copy_project, settings_for
from test_missed_messages import CONVERSATIONS, INBOX

from staff import missed
from staff.project import Settings

PG_VERSIONS = ("17", "16", "15", "14", "13")
USER = "clinic"
ENDPOINTS = """tracker_store:
  type: clinic_core.tracker_store.CachedSQLTrackerStore
  dialect: "postgresql"
  host: ${PG_SOCKET_DIR}
  port: ${PG_PORT}
  db: DATABASE
  username: clinic
"""


def postgres_bin() -> Optional[Path]:
    """Debian's PostgreSQL binaries (initdb, pg_ctl), or those on PATH."""
    for version in PG_VERSIONS:
        folder = Path("/usr/lib/postgresql") / version / "bin"
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster on a Unix socket in a temporary folder."""

    def __init__(self, bin_dir: Path) -> None:
        # A short path: a Unix socket's path is limited to about 100 characters.
        self.root = Path(tempfile.mkdtemp(prefix="pg-h11-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.bin_dir = bin_dir
        # PostgreSQL refuses to run as root: then it runs as the postgres account.
        self.as_user: List[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")

    def run(self, *args: str) -> None:
        command = [*self.as_user, str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr[-2000:]}")

    def start(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "-N")
        options = f"-k {self.root} -p {self.port} -c listen_addresses='' -F"
        log = str(self.root / "server.log")
        self.run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start"
        )

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> None:
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()

    def url(self, database: str) -> sa.engine.URL:
        return sa.engine.URL.create(
            "postgresql",
            username=USER,
            host=str(self.root),
            port=self.port,
            database=database,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/"
            "*/bin or on PATH: install Debian's postgresql package"
        )
    started = Cluster(bin_dir)
    started.start()
    yield started
    started.stop()


def save(store: SQLTrackerStore, domain: Domain) -> None:
    for sender, events in CONVERSATIONS.items():
        tracker = DialogueStateTracker.from_events(sender, events, domain.slots)
        asyncio.run(store.save(tracker))


def postgres_store(domain: Domain, cluster: Cluster, database: str) -> SQLTrackerStore:
    """Rasa's tracker store on the cluster's ``database``."""
    return SQLTrackerStore(
        domain,
        dialect="postgresql",
        host=str(cluster.root),
        port=cluster.port,
        db=database,
        username=USER,
    )


def project_settings(tmp_path: Path) -> Settings:
    project = copy_project(tmp_path / "project")
    configured = settings_for(project, tmp_path / "state")
    configured.state_dir.mkdir(mode=0o700)
    return configured


def on_postgres(
    tmp_path: Path, cluster: Cluster, database: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings whose endpoints.yml names the cluster's ``database``."""
    configured = project_settings(tmp_path)
    endpoints = configured.project.root / "endpoints.yml"
    endpoints.write_text(ENDPOINTS.replace("DATABASE", database), encoding="utf-8")
    monkeypatch.setenv("PG_SOCKET_DIR", str(cluster.root))
    monkeypatch.setenv("PG_PORT", str(cluster.port))
    return configured


@pytest.fixture
def domain(tmp_path: Path) -> Domain:
    project = copy_project(tmp_path / "domain")
    return Domain.load([str(project.domain), str(project.faq_responses)])


def test_the_inbox_on_postgresql_is_the_inbox_on_sqlite(
    tmp_path: Path,
    cluster: Cluster,
    domain: Domain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster.create_database("same_inbox")
    postgres = on_postgres(tmp_path / "pg", cluster, "same_inbox", monkeypatch)
    save(postgres_store(domain, cluster, "same_inbox"), domain)
    sqlite = project_settings(tmp_path / "sqlite")
    save(SQLTrackerStore(domain, dialect="sqlite", db=str(sqlite.tracker_db)), domain)

    for days in (30, 60):
        on_sqlite = missed.missed_messages(sqlite, since_days=days)
        on_pg = missed.missed_messages(postgres, since_days=days)
        assert on_pg == on_sqlite
    assert [item.text for item in missed.missed_messages(postgres, 30)] == INBOX
    everything = missed.missed_messages(postgres, since_days=60)
    assert [item.text for item in everything] == [
        *INBOX,
        "an old question nobody asks",
    ]


def test_dismissing_works_on_postgresql(
    tmp_path: Path,
    cluster: Cluster,
    domain: Domain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster.create_database("dismiss")
    settings = on_postgres(tmp_path, cluster, "dismiss", monkeypatch)
    save(postgres_store(domain, cluster, "dismiss"), domain)
    by_text: Dict[str, missed.MissedGroup] = {
        item.text: item for item in missed.missed_messages(settings, 30)
    }

    missed.dismiss_missed(settings, by_text["can my dog come in with me"].id)

    left = [item.text for item in missed.missed_messages(settings, 30)]
    assert left == [text for text in INBOX if text != "can my dog come in with me"]


def test_a_database_without_conversations_yet_has_nothing_missed(
    tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.create_database("no_conversations")
    settings = on_postgres(tmp_path, cluster, "no_conversations", monkeypatch)
    assert missed.missed_messages(settings) == []


def test_a_database_that_is_not_there_is_an_error_not_an_empty_inbox(
    tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = on_postgres(tmp_path, cluster, "never_created", monkeypatch)

    with pytest.raises(missed.TrackerStoreUnreadable) as unreadable:
        missed.missed_messages(settings)

    assert str(unreadable.value) == (
        "Cannot read the conversations from the tracker store (OperationalError: "
        'connection to server on socket "'
        f"{cluster.root}/.s.PGSQL.{cluster.port}"
        '" failed: FATAL:  database "never_created" does not exist).'
    )
