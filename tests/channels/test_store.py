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

from channels.store import (
    FAILED_SMS_DAYS,
    INBOX_DAYS,
    SEEN_SMS_DAYS,
    ChannelStore,
    ReceivedSms,
)
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


def text(sid: Any, body: str = "hello", phone: str = PHONE) -> ReceivedSms:
    return ReceivedSms(0, sid, phone, body, 0, "")


def test_a_received_sid_is_stored_once_and_forgotten_after_a_week(
    store: ChannelStore,
) -> None:
    row = store.receive_sms(text("SM1"), "a", NOW + 10, now=NOW)
    assert row is not None
    assert store.receive_sms(text("SM2"), "a", NOW + 10, now=NOW) is not None
    assert store.receive_sms(text("SM1"), "b", NOW + 70, now=NOW + 60) is None
    store.queue_sms(PHONE, ["Reply."], "k1", "c1", now=NOW + 60, handled=row)
    later = NOW + SEEN_SMS_DAYS * DAY + 1
    assert store.receive_sms(text("SM1"), "a", later + 10, now=later) is not None
    # Still in the inbox (no server handled it for a week): stored once.
    assert store.receive_sms(text("SM2"), "a", later + 10, now=later) is None
    # Without a SID nothing tells a retry apart: each post is stored.
    assert store.receive_sms(text(None), "a", NOW + 10, now=NOW) is not None
    assert store.receive_sms(text(None), "a", NOW + 10, now=NOW) is not None
    assert store.unhandled_sms() == 4


def test_the_inbox_holds_a_text_until_its_replies_are_queued(
    store: ChannelStore,
) -> None:
    first = store.receive_sms(text("SM1", "one"), "a", NOW + 10, now=NOW)
    second = store.receive_sms(text("SM2", "two"), "a", NOW + 10, now=NOW)
    other = store.receive_sms(text("SM3", "other", OTHER), "b", NOW + 30, now=NOW)
    assert first is not None and second is not None and other is not None

    assert store.hold_sms([first, second], "a", NOW + 20) == 2  # renewed by "a"
    assert store.hold_sms([first], "b", NOW + 40) == 0  # "b" does not hold it
    assert not store.orphaned_sms(NOW + 15)
    assert store.claim_orphaned_sms("b", NOW + 15, NOW + 25, 3) == ([], 0)

    # "a" stopped renewing (killed): "b" takes its texts, oldest first, once.
    assert store.orphaned_sms(NOW + 21)
    taken, given_up = store.claim_orphaned_sms("b", NOW + 21, NOW + 31, 3)
    assert [(sms.id, sms.body, sms.phone) for sms in taken] == [
        (first, "one", PHONE),
        (second, "two", PHONE),
    ]
    assert taken[0].message_sid == "SM1" and given_up == 0
    assert store.claim_orphaned_sms("c", NOW + 21, NOW + 31, 3) == ([], 0)
    assert store.hold_sms([first], "a", NOW + 40) == 0  # "a" lost it

    store.queue_sms(PHONE, ["Reply."], "k1", "c1", now=NOW + 22, handled=first)
    store.queue_sms(PHONE, [], "k1", "c1", now=NOW + 22, handled=second)  # STOP
    assert store.unhandled_sms() == 1 and store.pending_sms() == 1


def test_a_text_no_server_finishes_is_given_up(store: ChannelStore) -> None:
    store.receive_sms(text("SM1"), "a", NOW + 10, now=NOW)
    for attempt, server in enumerate(("b", "c"), start=1):
        now = NOW + 11 * attempt
        taken, _ = store.claim_orphaned_sms(server, now, now + 10, 3)
        assert len(taken) == 1
    assert store.claim_orphaned_sms("d", NOW + 40, NOW + 50, 3) == ([], 1)
    assert store.unhandled_sms() == 0


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
    store.receive_sms(text("SM-new"), "a", NOW + 10, now=NOW)
    store.receive_sms(text("SM-old", phone=OTHER), "a", 0.0, now=NOW - 30 * DAY)
    store.set_opted_out(PHONE, True)

    old = store.remove_old(NOW + FAILED_SMS_DAYS * DAY, dry_run=True)
    assert old["received message ids"] == 2 and old["offered buttons"] == 0
    assert store.forget(PHONE, [PHONE], ["c1"]) == {
        "offered buttons": 1,
        "numbered lists": 1,
        "outbox rows": 1,
        "unhandled texts": 1,
    }
    removed = store.remove_old(NOW)
    assert removed["received message ids"] == 1
    assert removed["unhandled texts"] == 1  # older than INBOX_DAYS
    assert store.remove_old(NOW + INBOX_DAYS * DAY)["unhandled texts"] == 0
    assert store.is_opted_out(PHONE) and store.pending_sms() == 0
    assert store.unhandled_sms() == 0


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


def _take(location: Any, owner: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    now = time.time()
    taken, _ = ChannelStore(location).claim_orphaned_sms(owner, now, now + 60, 3)
    results.put([sms.id for sms in taken])


def test_one_of_several_processes_takes_an_orphaned_text(
    store: ChannelStore, store_location: Location
) -> None:
    """Two Rasa servers never both handle a text a stopped server left."""
    row = store.receive_sms(text("SM1"), "dead", time.time() - 1)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Queue()
    location = store_location("channels.db")
    processes = [
        context.Process(target=_take, args=(location, f"s{n}", barrier, results))
        for n in range(8)
    ]
    for process in processes:
        process.start()
    taken = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)

    assert sorted(taken) == [[]] * 7 + [[row]]


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
