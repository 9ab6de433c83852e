"""Missed messages from a PostgreSQL tracker store: the same inbox as on SQLite.

The test starts its own PostgreSQL cluster (scripts.services.Postgres, Debian's
package) in a temporary folder, on a loopback port with a password, as the scaled
profile runs it; Rasa's own SQLTrackerStore writes the conversations into it, as the
Rasa server would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Dict, Iterator

import pytest
from pgkit import endpoints, environment, started_postgres
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from staffkit import copy_project, settings_for
from test_missed_messages import CONVERSATIONS, INBOX

from scripts.services import PG_SUPERUSER, Postgres
from staff import missed
from staff.project import Settings

STORE_TYPE = "clinic_core.tracker_store.CachedSQLTrackerStore"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Postgres]:
    yield from started_postgres()


def save(store: SQLTrackerStore, domain: Domain) -> None:
    for sender, events in CONVERSATIONS.items():
        tracker = DialogueStateTracker.from_events(sender, events, domain.slots)
        asyncio.run(store.save(tracker))


def postgres_store(domain: Domain, cluster: Postgres, database: str) -> SQLTrackerStore:
    """Rasa's tracker store on the cluster's ``database``."""
    return SQLTrackerStore(
        domain,
        dialect="postgresql",
        host="127.0.0.1",
        port=cluster.port,
        db=database,
        username=PG_SUPERUSER,
        password=cluster.superuser_password,
    )


def project_settings(tmp_path: Path) -> Settings:
    project = copy_project(tmp_path / "project")
    configured = settings_for(project, tmp_path / "state")
    configured.state_dir.mkdir(mode=0o700)
    return configured


def on_postgres(
    tmp_path: Path, cluster: Postgres, database: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings whose endpoints.yml names the cluster's ``database``."""
    configured = project_settings(tmp_path)
    configured.endpoints_file.write_text(
        endpoints(cluster, database, STORE_TYPE), encoding="utf-8"
    )
    for name, value in environment(cluster).items():
        monkeypatch.setenv(name, value)
    return configured


@pytest.fixture
def domain(tmp_path: Path) -> Domain:
    project = copy_project(tmp_path / "domain")
    return Domain.load([str(project.domain), str(project.faq_responses)])


def test_the_inbox_on_postgresql_is_the_inbox_on_sqlite(
    tmp_path: Path,
    cluster: Postgres,
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
    cluster: Postgres,
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
    tmp_path: Path, cluster: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.create_database("no_conversations")
    settings = on_postgres(tmp_path, cluster, "no_conversations", monkeypatch)
    assert missed.missed_messages(settings) == []


def test_a_database_that_is_not_there_is_an_error_not_an_empty_inbox(
    tmp_path: Path, cluster: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = on_postgres(tmp_path, cluster, "never_created", monkeypatch)

    with pytest.raises(missed.TrackerStoreUnreadable) as unreadable:
        missed.missed_messages(settings)

    assert str(unreadable.value) == (
        "Cannot read the conversations from the tracker store (OperationalError: "
        f'connection to server at "127.0.0.1", port {cluster.port} failed: '
        'FATAL:  database "never_created" does not exist).'
    )
