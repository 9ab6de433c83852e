"""The channel store's guarantees, on a SQLite file and on PostgreSQL alike.

In the scaled profile every Rasa server shares one store (``STORE_DATABASE_URL``):
an offered button, an opt-out, a received SID or an outbox row written by one
server is what the others read.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from channels.store import FAILED_SMS_DAYS, SEEN_SMS_DAYS, ChannelStore
from staff.cli import main as staff_main
from tests.staff.pgkit import Location

PHONE = "+18175550100"
OTHER = "+18175550111"
NOW = 1_780_000_000.0
DAY = 86_400.0


@pytest.fixture
def store(store_location: Location) -> ChannelStore:
    return ChannelStore(store_location("channels.db"))


def test_offered_buttons_and_the_latest_numbered_list(store: ChannelStore) -> None:
    store.remember_offers("twilio", PHONE, [("Mon 9:00", "/a"), ("Tue 9:00", "/b")])
    store.remember_offers("twilio", PHONE, [("Yes", "/affirm"), ("Mon 9:00", "/a")])

    assert store.was_offered("twilio", PHONE, "/b")  # offered before: still valid
    assert not store.was_offered("twilio", OTHER, "/a")  # another conversation
    assert not store.was_offered("socketio", PHONE, "/a")  # another channel
    assert store.latest_choices("twilio", PHONE) == [
        ("Yes", "/affirm"),
        ("Mon 9:00", "/a"),
    ]
    store.forget_choices("twilio", PHONE)
    assert store.latest_choices("twilio", PHONE) == []
    assert store.was_offered("twilio", PHONE, "/affirm")


def test_opt_outs_survive_a_new_store_and_start_again(
    store: ChannelStore, store_location: Location
) -> None:
    store.set_opted_out(PHONE, True)
    store.set_opted_out(PHONE, True)  # twice: still one opt-out

    again = ChannelStore(store_location("channels.db"))
    assert again.is_opted_out(PHONE) and not again.is_opted_out(OTHER)
    again.set_opted_out(PHONE, False)
    assert not store.is_opted_out(PHONE)


def test_a_received_sid_is_answered_once_and_forgotten_after_a_week(
    store: ChannelStore,
) -> None:
    assert store.first_time_seen("SM1", now=NOW)
    assert not store.first_time_seen("SM1", now=NOW + 60)
    assert store.first_time_seen("SM1", now=NOW + SEEN_SMS_DAYS * DAY + 1)


def test_the_outbox_sends_each_numbers_replies_in_order(store: ChannelStore) -> None:
    store.queue_sms(PHONE, ["one", "two"], "k1", "c1", now=NOW)
    store.queue_sms(OTHER, ["other"], "k2", "c2", now=NOW)

    due = store.due_sms(NOW)
    assert [(sms.phone, sms.body) for sms in due] == [(PHONE, "one"), (OTHER, "other")]
    assert store.pending_sms() == 3 and store.next_sms_due() == NOW
    first = due[0]
    assert store.claim_sms(first.id, NOW, NOW + 30)
    assert not store.claim_sms(first.id, NOW, NOW + 30)  # taken by the first
    store.sms_retry_later(first.id, NOW, NOW + 10, 503, None)
    assert store.due_sms(NOW + 5) == [due[1]]
    store.sms_sent(first.id, NOW + 10, 201, "SM-out")
    assert [sms.body for sms in store.due_sms(NOW + 10)] == ["two", "other"]
    store.sms_failed(due[1].id, NOW + 11, "not a mobile number", 400, 21614)
    assert store.drop_pending_sms(PHONE, "opted out") == 1

    failed = store.failed_sms(since=NOW - DAY)
    assert [(f.phone_key, f.error_code, f.reason) for f in failed] == [
        ("k2", 21614, "not a mobile number"),  # newest first
        ("k1", None, "opted out"),
    ]
    assert store.pending_sms() == 0 and store.next_sms_due() is None


def test_retention_and_forget_keep_the_opt_out(store: ChannelStore) -> None:
    store.remember_offers("twilio", PHONE, [("Yes", "/affirm")])
    store.queue_sms(PHONE, ["Booked."], "k1", "c1", now=NOW)
    store.first_time_seen("SM-old", now=NOW - 30 * DAY)
    store.set_opted_out(PHONE, True)

    old = store.remove_old(NOW + FAILED_SMS_DAYS * DAY, dry_run=True)
    assert old["received message ids"] == 1 and old["offered buttons"] == 0
    assert store.forget(PHONE, [PHONE], ["c1"]) == {
        "offered buttons": 1,
        "numbered lists": 1,
        "outbox rows": 1,
    }
    assert store.remove_old(NOW)["received message ids"] == 1
    assert store.is_opted_out(PHONE) and store.pending_sms() == 0


def _claim(location: Any, sms_id: int, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(ChannelStore(location).claim_sms(sms_id, time.time(), time.time() + 60))


def test_one_of_several_processes_claims_a_reply(
    store: ChannelStore, store_location: Location
) -> None:
    """Two Rasa servers' senders never send one reply twice."""
    store.queue_sms(PHONE, ["Booked."], "k1", "c1")
    (due,) = store.due_sms(time.time())
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Queue()
    location = store_location("channels.db")
    processes = [
        context.Process(target=_claim, args=(location, due.id, barrier, results))
        for _ in range(8)
    ]
    for process in processes:
        process.start()
    claims = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)

    assert sorted(claims) == [False] * 7 + [True]


def test_staff_list_failed_texts_from_the_stores_database(
    store: ChannelStore,
    store_location: Location,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    store.queue_sms(PHONE, ["one"], "k1", "c1", now=now)
    (queued,) = store.due_sms(now)
    store.sms_failed(queued.id, now, "not a mobile number", 400, 21614)
    location = store_location("channels.db")
    if isinstance(location, str):  # PostgreSQL: the scaled profile's setting
        monkeypatch.setenv("STORE_DATABASE_URL", location)
    else:
        monkeypatch.setenv("CHANNEL_DB", str(location))

    assert staff_main(["sms-failures"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("  number k1  conversation c1")
    assert lines[-1].startswith("1 text(s) not delivered in the last 7 days")
