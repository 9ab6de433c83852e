"""A text the webhook is storing when PostgreSQL cuts its connection is not lost.

Seen in the scaled profile's fault drill (``make chaos``): restarting PostgreSQL
while patients texted made the webhook refuse one text, which Twilio does not send
again. Here the cut is made on purpose and at a known moment: the webhook's
transaction waits for the channel store's write lock, held by another connection,
and its server process is terminated (as ``pg_ctl stop -m fast`` terminates every
session). The text must still be stored, once.
"""

from __future__ import annotations

import threading
import time
from typing import List, Optional

import psycopg2

from channels.sms_inbox import SmsInbox
from channels.store import ChannelStore, ReceivedSms
from scripts.services import Postgres
from tests.staff.pgkit import store_url

SMS = ReceivedSms(0, "SM" + "1" * 32, "+18175550142", "is there parking?", 0, "")
WAIT_LIMIT = 5.0  # seconds for the webhook's transaction to be seen waiting


def write_lock_waiter(admin: psycopg2.extensions.connection) -> Optional[int]:
    """The process id of the session waiting for an advisory lock, if any."""
    cursor = admin.cursor()
    cursor.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def test_a_text_whose_connection_is_cut_mid_transaction_is_stored_once(
    store_cluster: Postgres,
) -> None:
    url = store_url(store_cluster)
    store = ChannelStore(url)
    assert store.pending_sms() == 0  # tables made, a pooled connection open
    inbox = SmsInbox(lambda: store)
    admin = psycopg2.connect(url)
    admin.autocommit = True
    holder = psycopg2.connect(url)
    holder.autocommit = True
    # The channel store's write lock (clinic_common.sqlite.Database.write).
    key = store._db._lock_key
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (key,))
    rows: List[Optional[int]] = []
    receiving = threading.Thread(target=lambda: rows.append(inbox.receive(SMS)))
    receiving.start()
    try:
        deadline = time.monotonic() + WAIT_LIMIT
        while (waiter := write_lock_waiter(admin)) is None:
            assert time.monotonic() < deadline, "the webhook never waited for the lock"
            time.sleep(0.05)
        admin.cursor().execute("SELECT pg_terminate_backend(%s)", (waiter,))
        time.sleep(0.2)  # the retry waits for the lock in its turn
    finally:
        holder.cursor().execute("SELECT pg_advisory_unlock(%s)", (key,))
        receiving.join(timeout=10)
        holder.close()
        admin.close()
    assert rows and rows[0] is not None, "the text was not stored"
    assert store.unhandled_sms() == 1
    assert inbox.receive(SMS) is None  # Twilio's retry of it: seen, not stored again
