"""One conversation, one message at a time, across Rasa servers (issue 13).

Many SMS conversations at once; each conversation's consecutive messages go to the
two Rasa servers in turn, each sent as soon as the previous one was received (the
webhook's 200), without waiting for the answer. The lock store
(clinic_core/lock_store.py, on Redis) must then let each message through once, in
the order received (the SMS channel reserving its ticket on arrival), each answered
before the next one is read; a booking confirmed twice in a row is booked once.
The messages go to the servers directly, not through nginx, so that every two
consecutive messages of a conversation really reach different servers (nginx's
round robin would do that for about half of them); test_scaled_profile.py covers
the webhook through nginx.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest
import sqlalchemy as sa

from scripts.launcher import LOOPBACK
from scripts.run_scaled import DATABASE, DB_USER, ScaledProfile
from tests.scaled.conftest import post_sms, stored_events

pytestmark = pytest.mark.integration

CONVERSATIONS = 50
MESSAGES = 20
BOOKINGS = 4  # of the conversations, the first ones book an appointment
TIMEOUT = 240.0  # seconds for every answer
QUESTIONS = (
    "what is in the injection?",
    "how long does the treatment take?",
    "is there parking?",
    "what are your opening hours?",
    "does it hurt?",
)
# A booking by typed answers (tests/transcripts/booking_typed.yml), confirmed, the
# reminder accepted, then "yes" once more.
BOOKING = (
    "can I book a chiropractic appointment?",
    "next tuesday afternoon",
    "the first one",
    "{name}",
    "(817) 555 01{number:02d}",
    "yes",
    "yes",
    "yes",
)
NAMES = ("Oluwaseun Adeyemi", "Maria Lopez", "Chen Wei", "Anna Berg")


@pytest.fixture(scope="module", autouse=True)
def burst_allowed() -> Iterator[None]:
    """The profile's settings for a burst no patient could send.

    Each patient's twenty messages arrive at once, faster than the channels' rate
    limits let through (tested in tests/channels/test_rate_limit.py), and the last
    of them waits for the other nineteen, longer than ``LOCK_WAIT_SECONDS`` (tested
    in tests/scaled/test_lock_store.py): this test is about order, so both are
    lifted for its profile (which reads the environment when it starts).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RATE_LIMIT_PER_SECOND", "0")
        patch.setenv("LOCK_WAIT_SECONDS", str(TIMEOUT))
        yield


def phone_of(conversation: int) -> str:
    return f"+1682555{conversation:04d}"


def messages_of(conversation: int) -> List[str]:
    """What one patient sends: a booking, or questions each told apart by a tag."""
    if conversation < BOOKINGS:
        name = NAMES[conversation % len(NAMES)]
        return [text.format(name=name, number=conversation) for text in BOOKING]
    return [
        f"{QUESTIONS[i % len(QUESTIONS)]} (question {i + 1} of {MESSAGES})"
        for i in range(MESSAGES)
    ]


def send(servers: Sequence[str], conversation: int) -> None:
    """Each message to the next server as soon as the previous one was received."""
    for i, text in enumerate(messages_of(conversation)):
        status = post_sms(servers[i % len(servers)], phone_of(conversation), text)
        assert status == 200, f"message {i + 1} of {conversation}: {status}"


def turns(events: Sequence[Dict[str, object]]) -> List[List[str]]:
    """Each user message's text, then the types of the events up to the next one."""
    found: List[List[str]] = []
    for event in events:
        if event["event"] == "user":
            found.append([str(event["text"])])
        elif found:
            found[-1].append(str(event["event"]))
    return found


def answered(events: Sequence[Dict[str, object]], count: int) -> bool:
    """Whether ``count`` messages were read and the last one answered."""
    read = turns(events)
    return len(read) >= count and read[-1][-1] == "action" and "bot" in read[-1]


def conversations(profile: ScaledProfile) -> Dict[str, List[Dict[str, object]]]:
    """Every test conversation's stored events, in the order stored."""
    phones = [phone_of(c) for c in range(CONVERSATIONS)]
    stored: Dict[str, List[Dict[str, object]]] = {phone: [] for phone in phones}
    for sender, _, data in stored_events(profile, phones):
        stored[sender].append(json.loads(data))
    return stored


def test_each_message_is_handled_once_in_order_across_servers(
    profile: ScaledProfile,
) -> None:
    servers = [f"http://{LOOPBACK}:{port}" for port in profile.rasa_ports]
    expected = {phone_of(c): messages_of(c) for c in range(CONVERSATIONS)}
    started = time.monotonic()
    with ThreadPoolExecutor(CONVERSATIONS) as pool:
        list(pool.map(lambda c: send(servers, c), range(CONVERSATIONS)))
    deadline = started + TIMEOUT
    while True:
        stored = conversations(profile)
        done = all(answered(stored[p], len(m)) for p, m in expected.items())
        if done or time.monotonic() > deadline:
            break
        time.sleep(1)
    took = time.monotonic() - started
    total = sum(map(len, expected.values()))
    print(f"\n{total} messages answered in {took:.1f} s: {total / took:.1f}/s")

    for phone, sent in expected.items():
        read = turns(stored[phone])
        assert [turn[0] for turn in read] == sent, phone  # once each, in order
        unanswered = [turn[0] for turn in read if "bot" not in turn[1:]]
        assert unanswered == [], phone
    booked = bookings(profile)
    assert booked[0] == booked[1] >= 1  # the last "yes" books nothing


def bookings(profile: ScaledProfile) -> Tuple[int, int]:
    """How many bookings, and for how many phones (the profile's PostgreSQL)."""
    password = profile.env["POSTGRES_PASSWORD"]
    engine = sa.create_engine(profile.postgres.url(DATABASE, DB_USER, password))
    try:
        with engine.connect() as connection:
            made, phones = connection.execute(
                sa.text("SELECT COUNT(*), COUNT(DISTINCT patient_phone) FROM bookings")
            ).one()
            return int(made), int(phones)
    finally:
        engine.dispose()
