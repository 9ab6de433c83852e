"""What became of a text after Twilio took it, and which texts the assistant started.

Twilio's delivery reports reach the channel's signed ``/status`` route (the fake
Twilio API posts them, signed as Twilio does); the outbox marks a text the carrier
did not deliver as failed. Texts pushed through Rasa's ``trigger_intent`` (the
reminders) are told apart from replies, on SQLite and PostgreSQL, and in a store
made before either existed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from channels.store import ChannelStore
from channels.twilio_sms import TwilioConfig, TwilioSmsInput
from tests.channels.test_twilio_sms import (
    PHONE,
    SID,
    TOKEN,
    FakeRasa,
    config_for,
    question_form,
    running,
)
from tests.fakes.twilio_api import FakeTwilioApi
from tests.staff.pgkit import Location

PUBLIC = "https://sms.clinic.example/webhooks/twilio/webhook"
PUBLIC_STATUS = "https://sms.clinic.example/webhooks/twilio/status"
OTHER = "+18175550111"


@pytest.fixture
def twilio() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi(SID, TOKEN) as fake:
        yield fake


# --- delivery reports ---------------------------------------------------------------


async def test_a_carrier_failure_marks_the_sent_text_failed(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    config = config_for(twilio, webhook_url=PUBLIC)
    async with running(tmp_path, config, twilio, FakeRasa()) as sms:
        status, _, _ = await sms.post(question_form(), signed_url=PUBLIC)
        assert status == 200
        await sms.channel.drain()
        [message] = twilio.messages
        assert message.status_callback == PUBLIC_STATUS
        local = sms.url.rsplit("/", 1)[0] + "/status"
        store = sms.channel.store
        row = store.last_sms_id()  # the reply's

        def report(status: str, code: int | None = None) -> int:
            return twilio.report_status(message.sid, status, code, via=local)

        assert await asyncio.to_thread(report, "delivered") == 204
        assert store.failed_among([row]) == set()
        assert await asyncio.to_thread(report, "undelivered", 30003) == 204
        assert store.failed_among([row]) == {row}
        [failure] = store.failed_sms(since=0)
        assert (failure.reason, failure.error_code) == (
            "reported undelivered by Twilio",
            30003,
        )
        # Twilio repeats a report: nothing changes, nothing breaks.
        assert await asyncio.to_thread(report, "undelivered", 30003) == 204


async def test_a_report_not_signed_for_the_status_url_is_refused(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    async with running(
        tmp_path, config_for(twilio, webhook_url=PUBLIC), twilio, FakeRasa()
    ) as sms:
        await sms.post(question_form(), signed_url=PUBLIC)
        await sms.channel.drain()
        [message] = twilio.messages
        local = sms.url.rsplit("/", 1)[0] + "/status"
        form = {"MessageSid": message.sid, "MessageStatus": "failed"}
        for signature in ("", twilio.signature(PUBLIC, form)):  # none; the webhook's
            headers = {"X-Twilio-Signature": signature} if signature else {}
            async with sms.http.post(local, data=form, headers=headers) as answer:
                assert answer.status == 403
        assert sms.channel.store.failed_sms(since=0) == []


async def test_without_a_public_url_no_reports_are_asked_for(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    async with running(tmp_path, config_for(twilio), twilio, FakeRasa()) as sms:
        await sms.send("hello")
        assert [message.status_callback for message in twilio.messages] == [""]


# --- texts the assistant started ------------------------------------------------


async def test_pushed_texts_are_told_apart_from_replies(tmp_path: Path) -> None:
    config = TwilioConfig.from_credentials(
        {"account_sid": "AC1", "auth_token": "t", "from_number": "+18175550000"}
    )
    channel = TwilioSmsInput(config, ChannelStore(tmp_path / "channels.db"))
    store = channel.store
    mark = store.last_sms_id()
    await channel._send(PHONE, ["A reply to the patient's own text."])
    output = channel.get_output_channel()
    assert output is not None
    await output.send_text_message(PHONE, "Your reminder.")
    await output.send_text_message(OTHER, "Someone else's reminder.")
    assert len(store.pushed_sms(config.log_id(PHONE), mark)) == 1
    assert store.pushed_sms(config.log_id(PHONE), store.last_sms_id()) == []
    assert store.last_sms_id() == mark + 3


def test_pushed_rows_go_with_their_outbox_rows(store_location: Location) -> None:
    store = ChannelStore(store_location("channels.db"))
    ids = store.queue_sms(PHONE, ["one", "two"], "key", "c-1", now=0.0, pushed=True)
    assert store.pushed_sms("key", 0) == ids
    store.sms_sent(ids[0], now=1.0, http_status=201, message_sid="SM1")
    assert store.sms_undelivered("SM1", "reported failed by Twilio", None) == ids[0]
    assert store.sms_undelivered("SM1", "reported failed by Twilio", None) is None
    assert store.failed_among([*ids, 999]) == {ids[0]}
    assert store.forget(PHONE, [PHONE], ["c-1"])["outbox rows"] == 2
    assert store.pushed_sms("key", 0) == []


def test_a_store_made_before_pushed_texts_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "channels.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE sms_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " phone TEXT, body TEXT, phone_key TEXT NOT NULL, conversation TEXT NOT"
            " NULL, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,"
            " last_attempt_at REAL, attempts INTEGER NOT NULL DEFAULT 0, state TEXT"
            " NOT NULL, http_status INTEGER, error_code INTEGER, reason TEXT,"
            " message_sid TEXT)"
        )
        old.execute(
            "INSERT INTO sms_outbox (phone_key, conversation, created_at,"
            " next_attempt_at, state, message_sid) VALUES ('key', 'c', 0, 0, 'sent',"
            " 'SM0')"
        )
    store = ChannelStore(path)
    assert store.last_sms_id() == 1
    [pushed] = store.queue_sms(PHONE, ["Reminder."], "key", "c", pushed=True)
    assert store.pushed_sms("key", 0) == [pushed] and pushed == 2


# --- is SMS configured? (the reminder job asks without running the channel) ------


@pytest.fixture
def credentials(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "credentials.yml"
    path.write_text(
        "channels.twilio_sms.TwilioSmsInput:\n"
        "  account_sid: ${T_SID}\n"
        "  auth_token: ${T_TOKEN}\n"
        "  from_number: ${T_FROM}\n"
        "  webhook_url: ${T_URL}\n"
    )
    yield path


@pytest.mark.parametrize(
    ("token", "configured"), [("secret", True), ("", False), (None, False)]
)
def test_configured_is_read_from_credentials_as_rasa_reads_them(
    credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
    configured: bool,
) -> None:
    monkeypatch.setenv("T_SID", "AC1")
    monkeypatch.setenv("T_FROM", "+18175550000")
    monkeypatch.setenv("T_URL", PUBLIC)
    if token is None:
        monkeypatch.delenv("T_TOKEN", raising=False)  # Rasa would not start
    else:
        monkeypatch.setenv("T_TOKEN", token)
    config = TwilioConfig.from_file(credentials)
    assert config.configured is configured
    if configured:
        assert config.status_url == PUBLIC_STATUS
        assert config.log_id(PHONE) == TwilioSmsInput(config).log_id(PHONE)


def test_no_credentials_file_is_not_configured(tmp_path: Path) -> None:
    assert not TwilioConfig.from_file(tmp_path / "missing.yml").configured
