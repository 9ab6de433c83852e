"""The channels' rate limits (channels/rate_limit.py) and the widget's session ids.

Token buckets on a fake clock; what a message over the limit is answered with (the
polite reply, or the domain's emergency guidance for a red flag); the server-signed
conversation ids of the Socket.IO channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
from rasa.shared.core.domain import Domain

from channels import rate_limit
from channels.rate_limit import (
    POLITE_REPLY,
    RateLimits,
    TokenBuckets,
    Verdict,
    client_address,
    replies_over_limit,
)
from channels.socketio import is_issued, issue_session_id

PASS, NOTICE, QUIET = Verdict.PASS, Verdict.NOTICE, Verdict.QUIET


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def takes(buckets: TokenBuckets, key: str, count: int) -> List[Verdict]:
    return [buckets.take(key) for _ in range(count)]


def test_a_burst_passes_then_the_rate_applies_per_sender() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert takes(buckets, "a", 4) == [PASS, PASS, PASS, NOTICE]
    assert buckets.take("b") is PASS  # another sender is not affected
    clock.now += 0.5  # one token back
    assert takes(buckets, "a", 2) == [PASS, NOTICE]
    clock.now += 10  # full again, never more than the burst
    assert takes(buckets, "a", 4) == [PASS, PASS, PASS, NOTICE]


def test_the_notice_interval_keeps_a_flood_from_being_told_each_time() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=1, notice_interval=60, clock=clock)
    assert takes(buckets, "a", 3) == [PASS, NOTICE, QUIET]
    clock.now += 59.5
    assert takes(buckets, "a", 2) == [PASS, QUIET]
    clock.now += 0.5
    assert takes(buckets, "a", 2) == [NOTICE, QUIET]


def test_idle_buckets_are_dropped_and_the_number_kept_is_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=2, clock=clock)
    takes(buckets, "idle", 2)
    clock.now += 2  # full again: no different from a new bucket
    buckets.take("busy")
    assert len(buckets) == 1
    monkeypatch.setattr(rate_limit, "MAX_BUCKETS", 3)
    for key in "wxyz":
        takes(buckets, key, 2)
    assert len(buckets) == 3
    assert takes(buckets, "z", 1) == [NOTICE]  # the newest are kept


def test_limits_per_sender_and_per_address() -> None:
    clock = Clock()
    limits = RateLimits(rate=1, burst=2, clock=clock)
    assert [limits.check("a", "10.0.0.1") for _ in range(3)] == [PASS, PASS, NOTICE]
    # The address allows five times as much: ten senders behind it use it up.
    verdicts = [limits.check(f"s{n}", "10.0.0.1") for n in range(8)]
    assert verdicts == [PASS] * 7 + [NOTICE]
    assert limits.check("s9", "10.0.0.2") is PASS
    assert limits.check_address("10.0.0.1") is NOTICE


def test_a_rate_of_zero_switches_the_limits_off() -> None:
    limits = RateLimits(rate=0, burst=0)
    assert {limits.check("a", "10.0.0.1") for _ in range(100)} == {PASS}
    assert limits.check_address("10.0.0.1") is PASS


async def test_what_answers_a_message_over_the_limit(rasa_domain: Domain) -> None:
    assert await replies_over_limit(PASS, "hello", rasa_domain, "rest") is None
    assert await replies_over_limit(NOTICE, "hello", rasa_domain, "rest") == [
        POLITE_REPLY
    ]
    assert await replies_over_limit(QUIET, "hello", rasa_domain, "twilio") == []


@pytest.mark.parametrize(
    "text, response, language",
    [
        ("I lost control of my bladder", "utter_emergency", "en"),
        ("perdí el control de la vejiga", "utter_emergency", "es"),
        ("I want to kill myself", "utter_crisis", "en"),
    ],
)
@pytest.mark.parametrize("verdict", [NOTICE, QUIET])
async def test_a_red_flag_over_the_limit_gets_the_guidance(
    rasa_domain: Domain, text: str, response: str, language: str, verdict: Verdict
) -> None:
    variants = rasa_domain.responses[response]
    expected = next(
        variant["text"]
        for variant in variants
        if any(c.get("value") == language for c in variant.get("condition", []))
        or (language == "en" and not variant.get("condition"))
    )
    assert await replies_over_limit(verdict, text, rasa_domain, "rest") == [expected]


async def test_a_red_flag_over_the_limit_goes_to_rasa_while_no_model_is_loaded() -> (
    None
):
    assert await replies_over_limit(NOTICE, "I want to kill myself", None, "rest") is (
        None
    )


@pytest.mark.parametrize(
    "peer, forwarded, address",
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "10.9.9.9", "203.0.113.5"),  # not through the local nginx
        ("127.0.0.1", "1.2.3.4, 198.51.100.7", "198.51.100.7"),  # nginx's own entry
        ("127.0.0.1", None, "127.0.0.1"),
        (None, None, ""),
    ],
)
def test_client_address(peer: str, forwarded: str, address: str) -> None:
    assert client_address(peer, forwarded) == address


def test_widget_session_ids_are_issued_and_checked_by_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = issue_session_id()
    assert is_issued(issued)
    assert issue_session_id() != issued
    token, _, signature = issued.partition("-")
    forged = f"{token}-{'0' * len(signature)}"
    other_token = f"{'0' * len(token)}-{signature}"
    for chosen in (forged, other_token, token, "someone-else", "", None, 42):
        assert not is_issued(chosen)
