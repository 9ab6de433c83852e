"""clinicbot retention and forget, on a SQLite and on a PostgreSQL tracker store.

Every store gets data of three patients: one whose conversation and visit are old,
one who is recent, and the patient of PHONE (an SMS conversation, a web booking, a
web message naming the number, a call-back, an outbox row, an opt-out).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest
import sqlalchemy as sa
from pgkit import endpoints, environment, started_postgres
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, Event, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from staffkit import copy_project, settings_for

from channels.store import ChannelStore, ReceivedSms
from clinic_core.tracker_store import CachedSQLTrackerStore
from scheduling.base import Patient
from scheduling.callbacks import CallbackStore
from scheduling.config import scheduling_config
from scheduling.sqlite_backend import SqliteScheduler
from scripts import daily, supervise
from scripts.services import Postgres
from staff import cli, retention
from staff.faq_data import Refused
from staff.project import Settings

PHONE = "+18175550188"
OTHER = "+18175550142"
DAY = 86_400.0
NOW = time.time()
OLD = NOW - 100 * DAY
RECENT = NOW - 2 * DAY


@pytest.fixture(scope="module")
def cluster() -> Iterator[Postgres]:
    yield from started_postgres()


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory) -> Domain:
    project = copy_project(tmp_path_factory.mktemp("domain"))
    return Domain.load([str(project.domain), str(project.faq_responses)])


_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    domain: Domain,
    monkeypatch: pytest.MonkeyPatch,
) -> retention.Stores:
    """Every store, filled, with the tracker store on SQLite or PostgreSQL."""
    settings = settings_for(copy_project(tmp_path / "project"), tmp_path / "state")
    settings.state_dir.mkdir(mode=0o700)
    monkeypatch.setenv("STATE_DIR", str(settings.state_dir))
    if request.param == "sqlite":
        tracker_store: SQLTrackerStore = CachedSQLTrackerStore(
            domain, db=str(settings.tracker_db)
        )
    else:
        cluster: Postgres = request.getfixturevalue("cluster")
        database = f"retention_{next(_databases)}"
        cluster.create_database(database)
        settings.endpoints_file.write_text(
            endpoints(cluster, database, "SQL"), encoding="utf-8"
        )
        for name, value in environment(cluster).items():
            monkeypatch.setenv(name, value)
        tracker_store = SQLTrackerStore(
            domain,
            dialect="postgresql",
            host="127.0.0.1",
            port=cluster.port,
            db=database,
            username="postgres",
            password=cluster.superuser_password,
        )
    for sender, events in conversations().items():
        tracker = DialogueStateTracker.from_events(sender, events, domain.slots)
        asyncio.run(tracker_store.save(tracker))
    tracker_store.engine.dispose()
    found = retention.Stores(
        staff=settings,
        scheduler_db=settings.state_dir / "scheduler.db",
        callback_db=settings.state_dir / "callbacks.db",
        channel_db=settings.state_dir / "channels.db",
        retention_days=90.0,
        booking_retention_days=90.0,
    )
    fill_other_stores(found)
    return found


def turn(text: str, at: float, *slots: SlotSet) -> List[Event]:
    return [
        ActionExecuted("action_listen", timestamp=at),
        UserUttered(text, timestamp=at),
        *slots,
        ActionExecuted("utter_greet", timestamp=at),
    ]


def conversations() -> Dict[str, List[Event]]:
    return {
        "old-web": turn("hello", OLD),
        "recent-web": turn("hello", RECENT),
        PHONE: turn("book me in", RECENT),  # the SMS conversation: sender is the number
        "booked-on-web": turn(
            "817-555-0188",
            RECENT,
            SlotSet("patient_phone", PHONE, timestamp=RECENT),
        ),
        "typed-it": turn("call me on (817) 555 0188 please", RECENT),
        "other-number": turn("817.555.0142", RECENT),
    }


def fill_other_stores(stores: retention.Stores) -> None:
    assert stores.scheduler_db is not None
    at = [datetime.fromtimestamp(OLD - 30 * DAY, timezone.utc)]
    scheduler = SqliteScheduler(stores.scheduler_db, scheduling_config(), lambda: at[0])
    for key, phone in (("old", OTHER), ("phone", PHONE)):
        slot = scheduler.find_slots("evaluation", at[0], at[0] + timedelta(14))
        scheduler.book(slot[0], Patient("Old Visit", phone), key)
    at[0] = datetime.now(timezone.utc)
    for key, name, phone in (("ann", "Ann", PHONE), ("bob", "Bob", OTHER)):
        slot = scheduler.find_slots("evaluation", at[0], at[0] + timedelta(30))
        scheduler.book(slot[0], Patient(f"{name} Upcoming", phone), key)

    old_done = datetime.fromtimestamp(OLD, timezone.utc)
    callbacks = CallbackStore(stores.callback_db, clock=lambda: old_done)
    done = callbacks.add("Old Caller", OTHER, "any", "", "old-web")
    assert done is not None and callbacks.mark_done(done)
    CallbackStore(stores.callback_db).add("Ann", "817 555 0188", "am", "", "x")
    CallbackStore(stores.callback_db).add("Bob", OTHER, "pm", "", "y")

    channel = ChannelStore(stores.channel_db)
    channel.remember_offers("twilio", PHONE, [("Mon 9:00", "/choose{}")])
    channel.remember_offers("socketio", "recent-web", [("Yes", "/affirm")])
    channel.queue_sms(PHONE, ["Booked."], "k", "c-x", now=RECENT)
    channel.queue_sms(OTHER, ["Booked."], "k2", "c-y", now=RECENT)
    channel.set_opted_out(PHONE, True)
    channel.receive_sms(ReceivedSms(0, "SM-new", PHONE, "hi", 0, ""), "a", 0, NOW)
    channel.receive_sms(ReceivedSms(0, "SM-old", OTHER, "hi", 0, ""), "a", OLD, OLD)


def senders(settings: Settings) -> List[str]:
    engine = retention.tracker_engine(settings)
    assert engine is not None
    with engine.connect() as connection:
        query = sa.select(retention.EVENTS.c.sender_id).distinct()
        found = sorted(str(row[0]) for row in connection.execute(query))
    engine.dispose()
    return found


def bookings(stores: retention.Stores) -> List[Tuple[str, str, str]]:
    assert stores.scheduler_db is not None
    connection = sqlite3.connect(stores.scheduler_db)
    try:
        return sorted(
            connection.execute(
                "SELECT patient_name, patient_phone, status FROM bookings"
            ).fetchall()
        )
    finally:
        connection.close()


ALL = sorted(conversations())


def test_retention_removes_what_is_older_than_kept(stores: retention.Stores) -> None:
    report = retention.retention(stores, now=NOW)

    assert senders(stores.staff) == [s for s in ALL if s != "old-web"]
    assert report.counts["conversations (tracker store)"] == 1
    assert report.counts["bookings (name and phone)"] == 2
    assert bookings(stores) == [
        ("", "", "booked"),
        ("", "", "booked"),
        ("Ann Upcoming", PHONE, "booked"),
        ("Bob Upcoming", OTHER, "booked"),
    ]
    assert report.counts["call-backs marked done"] == 1
    assert len(CallbackStore(stores.callback_db).list_open()) == 2
    assert report.counts["received message ids (channel store)"] == 1
    assert report.counts["unhandled texts (channel store)"] == 1  # the old one
    assert ChannelStore(stores.channel_db).is_opted_out(PHONE)
    assert retention.retention(stores, now=NOW).counts == {
        kind: 0 for kind in report.counts
    }


def test_a_dry_run_changes_nothing(stores: retention.Stores) -> None:
    before = (senders(stores.staff), bookings(stores))

    counted = retention.retention(stores, dry_run=True, now=NOW)
    forgotten = retention.forget(stores, "817-555-0188", dry_run=True)

    assert (senders(stores.staff), bookings(stores)) == before
    assert counted.counts["conversations (tracker store)"] == 1
    assert forgotten.counts["conversations (tracker store)"] == 3
    assert retention.retention(stores, now=NOW).counts == counted.counts


def test_a_shorter_limit_on_the_command_line(stores: retention.Stores) -> None:
    report = retention.retention(stores, days=1.0, now=NOW)
    assert senders(stores.staff) == []
    assert report.counts["conversations (tracker store)"] == len(ALL)


@pytest.mark.parametrize("typed", ["(817) 555-0188", "817.555.0188", "+1 817 555 0188"])
def test_forget_removes_one_patient_and_keeps_the_opt_out(
    stores: retention.Stores, typed: str
) -> None:
    report = retention.forget(stores, typed)

    assert senders(stores.staff) == ["old-web", "other-number", "recent-web"]
    assert report.counts["conversations (tracker store)"] == 3
    assert bookings(stores) == [
        ("", "", "booked"),  # the past visit: still counted
        ("", "", "cancelled"),  # the upcoming one: nobody can be reached for it
        ("Bob Upcoming", OTHER, "booked"),
        ("Old Visit", OTHER, "booked"),
    ]
    assert report.counts["call-backs"] == 1
    assert [r.name for r in CallbackStore(stores.callback_db).list_open()] == ["Bob"]
    channel = ChannelStore(stores.channel_db)
    assert not channel.was_offered("twilio", PHONE, "/choose{}")
    assert channel.was_offered("socketio", "recent-web", "/affirm")
    assert [sms.phone for sms in channel.due_sms(NOW)] == [OTHER]
    assert report.counts["unhandled texts (channel store)"] == 1
    assert channel.unhandled_sms() == 1  # the other number's
    assert channel.is_opted_out(PHONE)
    text = "\n".join(report.lines())
    assert "0188" not in text and "Ann" not in text


def test_forget_refuses_what_is_no_phone_number(stores: retention.Stores) -> None:
    with pytest.raises(Refused):
        retention.forget(stores, "555-01")


def test_the_cached_store_does_not_bring_a_removed_conversation_back(
    tmp_path: Path, domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(copy_project(tmp_path / "project"), tmp_path / "state")
    settings.state_dir.mkdir(mode=0o700)
    monkeypatch.setenv("STATE_DIR", str(settings.state_dir))
    store = CachedSQLTrackerStore(domain, db=str(settings.tracker_db))
    stores = retention.Stores(
        settings, None, tmp_path / "c.db", tmp_path / "ch.db", 90.0, 90.0
    )
    for sender in ("read-again", "mid-turn"):
        tracker = DialogueStateTracker.from_events(
            sender, turn("hi", OLD), domain.slots
        )
        asyncio.run(store.save(tracker))
    mid_turn = asyncio.run(store.retrieve("mid-turn"))
    assert mid_turn is not None and store.cached_senders() == ["read-again", "mid-turn"]

    retention.retention(stores, now=NOW)

    assert asyncio.run(store.retrieve("read-again")) is None
    # A turn that was running meanwhile saves its own events, not the removed ones.
    for event in turn("new message", NOW):
        mid_turn.update(event)
    asyncio.run(store.save(mid_turn))
    again = asyncio.run(store.retrieve("mid-turn"))
    assert again is not None
    assert [e.text for e in again.events if isinstance(e, UserUttered)] == [
        "new message"
    ]


def test_the_commands(
    stores: retention.Stores,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(retention.Stores, "from_env", lambda: stores)
    monkeypatch.setattr(Settings, "from_env", lambda: stores.staff)

    assert cli.main(["retention", "--dry-run"]) == 0
    assert "conversations (tracker store): 1" in capsys.readouterr().out
    assert cli.main(["forget", "--phone", "817 555 0188"]) == 0
    out = capsys.readouterr().out
    assert "conversations (tracker store): 3" in out
    assert "opt-out: kept" in out
    assert cli.main(["forget", "--phone", "12"]) == 1


# --- the daily job (scripts/daily.py) ------------------------------------------------


def test_the_daily_job_runs_at_start_then_at_three_and_retries_a_failure() -> None:
    clock = [datetime(2026, 3, 7, 14, 30)]
    runs: List[datetime] = []
    results = iter([0, 1, 0])

    def command(argv: Sequence[str]) -> int:
        assert list(argv) == ["retention"]
        runs.append(clock[0])
        return next(results, 0)

    def sleep(seconds: float) -> None:
        if len(runs) == 3:
            raise StopIteration
        clock[0] += timedelta(seconds=seconds)

    with pytest.raises(StopIteration):
        daily.run_forever(command, sleep, lambda: clock[0])

    assert runs == [
        datetime(2026, 3, 7, 14, 30),
        datetime(2026, 3, 8, 3, 0),
        datetime(2026, 3, 8, 4, 0),  # an hour after the failed run
    ]


def test_supervisord_runs_the_daily_job(tmp_path: Path) -> None:
    ports = ("RASA_PORT", "ACTION_PORT", "WEB_PORT", "STAFF_PORT", "HEALTH_PORT")
    environ = {name: str(15000 + n) for n, name in enumerate(ports)}
    environ.update(VENV="/venv", STATE_DIR=str(tmp_path), MODEL_PATH="m.tar.gz")
    config = supervise.supervisord_config(environ)
    assert "[program:retention]" in config
    assert "command=/venv/bin/python -m scripts.daily" in config
