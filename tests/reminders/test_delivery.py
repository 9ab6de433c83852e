"""A reminder's delivery: no SMS, no reminder; a text that failed shows "failed".

The job's own wiring (staff/reminders.py) over the channel store's outbox, written
as the Twilio channel writes it, and a stand-in for the Rasa server whose reminder
action utters while the call runs, as Rasa's does. Stores on a SQLite file and on
PostgreSQL (``store_location``).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from channels.store import ChannelStore
from channels.twilio_sms import TwilioConfig
from scheduling.base import Patient
from scheduling.reminders import (
    FAILED,
    SENT,
    ReminderSchedule,
    ReminderStore,
    day_entries,
)
from scheduling.sqlite_backend import SqliteScheduler
from staff import reminders
from staff.rasa_api import ApiError, RasaApi
from tests.reminders.test_schedule import CONFIG, SETTINGS, FakeClock, book, local
from tests.staff.pgkit import Location

TWILIO = TwilioConfig(account_sid="AC1", auth_token="token", from_number="+1")
PATIENTS = [Patient(f"P{i} Person", f"+1817555030{i}") for i in range(4)]


@dataclass(frozen=True)
class FakeRasa(RasaApi):
    """Rasa's trigger_intent: the reminder action's text goes to the outbox at once.

    ``answers``: per number, "refuse" (an error answer), "silent" (taken, nothing
    uttered) or "reply" (the patient's own text is answered at the same moment,
    just before the reminder).
    """

    channels: ChannelStore
    answers: Dict[str, str]

    def trigger_intent(
        self,
        conversation_id: str,
        intent: str,
        entities: Dict[str, str],
        output_channel: str,
        timeout: float = 10.0,
    ) -> None:
        channels, answer = self.channels, self.answers.get(conversation_id, "")
        if answer == "refuse":
            raise ApiError("The assistant answered 500: boom")
        key = TWILIO.log_id(conversation_id)
        if answer == "reply":
            channels.queue_sms(conversation_id, ["An answer."], key, "c")
        if answer != "silent":
            channels.queue_sms(conversation_id, ["Reminder."], key, "c", pushed=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(local(2026, 3, 2, 11, 0))


@pytest.fixture
def scheduler(store_location: Location, clock: FakeClock) -> SqliteScheduler:
    return SqliteScheduler(store_location("scheduler.db"), CONFIG, clock=clock)


@pytest.fixture
def channels(store_location: Location) -> ChannelStore:
    return ChannelStore(store_location("channels.db"))


def job(
    scheduler: SqliteScheduler,
    channels: ChannelStore,
    clock: FakeClock,
    answers: Dict[str, str],
) -> ReminderSchedule:
    return ReminderSchedule(
        scheduler,
        ReminderStore(scheduler.location),
        reminders.rasa_sender(
            FakeRasa("http://rasa.invalid", "token", channels, answers),
            channels,
            TWILIO,
        ),
        lambda phone: True,
        SETTINGS,
        clock=clock,
    )


def states(
    scheduler: SqliteScheduler, channels: Optional[ChannelStore], now: datetime
) -> List[str]:
    entries = day_entries(
        scheduler.bookings_on(date(2026, 3, 3)),
        ReminderStore(scheduler.location),
        SETTINGS,
        now,
        channels.failed_among if channels else None,
    )
    return [entry.state for entry in entries]


def test_a_reminder_is_linked_to_its_own_texts_and_fails_with_them(
    scheduler: SqliteScheduler, channels: ChannelStore, clock: FakeClock
) -> None:
    made = [
        book(scheduler, local(2026, 3, 3, 9, 0) + timedelta(minutes=30 * i), patient)
        for i, patient in enumerate(PATIENTS)
    ]
    replying, refused_later, silent, refused_now = made
    answers = {
        replying.patient.phone: "reply",
        silent.patient.phone: "silent",
        refused_now.patient.phone: "refuse",
    }
    result = job(scheduler, channels, clock, answers).run_once()
    assert (result.sent, result.failed) == (2, 2)

    rows = ReminderStore(scheduler.location).rows([b.reference for b in made])
    # The patient's own reply, queued while Rasa ran the reminder, is not linked.
    [ours] = rows[replying.reference][0].messages
    reply = ours - 1
    assert [row.state for b in made for row in rows[b.reference]] == [
        SENT,
        SENT,
        FAILED,  # Rasa took it but queued no SMS
        FAILED,  # Rasa refused it
    ]
    [later] = rows[refused_later.reference][0].messages
    before = states(scheduler, channels, clock.now)
    channels.sms_failed(reply, clock.now.timestamp(), "refused by Twilio", 400, 21211)
    channels.sms_failed(later, clock.now.timestamp(), "refused by Twilio", 400, 21610)

    assert before == ["sent", "sent", "failed", "failed"]
    assert states(scheduler, channels, clock.now) == [
        "sent",  # its reminder went; a reply to the patient failed
        "failed",
        "failed",
        "failed",
    ]
    # As recorded, without the outbox: the job's outcome only.
    assert states(scheduler, None, clock.now)[1] == "sent"


def _sender_must_not_run(*_: object) -> ReminderSchedule:
    raise AssertionError("the schedule was built: reminders would be claimed")


def test_without_sms_the_job_claims_nothing_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "")  # as make run has it by default
    monkeypatch.setattr(reminders, "build_schedule", _sender_must_not_run)
    naps: List[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt  # the test's way out of the loop

    with caplog.at_level(logging.INFO), pytest.raises(KeyboardInterrupt):
        reminders.run_forever(0.01, sleep)
    said = [r.getMessage() for r in caplog.records if reminders.SMS_OFF in r.message]
    assert len(said) == 1


def test_with_sms_the_job_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (
        ("TWILIO_ACCOUNT_SID", "AC1"),
        ("TWILIO_AUTH_TOKEN", "token"),
        ("TWILIO_FROM_NUMBER", "+18175550000"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(reminders, "build_schedule", _sender_must_not_run)
    with pytest.raises(AssertionError, match="the schedule was built"):
        reminders.run_forever(0.01, lambda _: None)


@pytest.mark.parametrize("token", ["", "token"])
def test_staff_are_told_when_sms_is_off(
    scheduler: SqliteScheduler, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+18175550000")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", token)
    title, _ = reminders.day_view(
        date(2026, 3, 3), scheduler=scheduler, store=ReminderStore(scheduler.location)
    )
    assert (reminders.SMS_OFF in title) is (not token)
    assert title.startswith("Tuesday 2026-03-03 (")


def test_a_reminders_store_made_before_the_links_gains_them(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "scheduler.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE reminders (reference TEXT NOT NULL, offset_minutes INTEGER"
            " NOT NULL, state TEXT NOT NULL, claimed_utc INTEGER NOT NULL,"
            " PRIMARY KEY (reference, offset_minutes))"
        )
        old.execute("INSERT INTO reminders VALUES ('OLD', 1440, 'sent', 0)")
    store = ReminderStore(path)
    assert [row.messages for row in store.rows(["OLD"])["OLD"]] == [()]
    assert store.claim("NEW", timedelta(hours=24), clock.now)
    store.record("NEW", timedelta(hours=24), SENT, [7, 8])
    assert [row.messages for row in store.rows(["NEW"])["NEW"]] == [(7, 8)]
