"""The scaled profile's limits, through nginx as patients reach it.

The widget's conversation ids are the server's (channels/socketio.py), and nginx
answers a client address that floods the Twilio webhook or Socket.IO with a 429,
never a 5xx (scripts/services.py, ``PATIENT_LIMITS``: shrunk here, so that a few
requests show it). The channels' own per-sender limits are tested in tests/channels.
About 30 s, most of it starting the profile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional

import pytest
import socketio

from scripts import services
from scripts.run_scaled import ScaledProfile
from tests.scaled.conftest import status_of

pytestmark = pytest.mark.integration

ISSUED = re.compile(r"[0-9a-f]{32}-[0-9a-f]{12}")
# nginx's limits, far smaller than the profile's, so that a few requests reach them.
SMALL = tuple(
    dataclasses.replace(limit, rate=5, burst=20) for limit in services.PATIENT_LIMITS
)


@pytest.fixture(scope="module", autouse=True)
def small_limits() -> Iterator[None]:
    """The module's profile (started after this) has nginx's limits shrunk."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "PATIENT_LIMITS", SMALL)
        yield


async def confirmed_session(profile: ScaledProfile, asked: Optional[str]) -> str:
    """The id ``session_confirm`` gives a widget that asks for ``asked``."""
    client = socketio.AsyncClient()
    confirmed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @client.on("session_confirm")  # type: ignore[misc]
    async def _on_confirm(session_id: str) -> None:
        if not confirmed.done():
            confirmed.set_result(session_id)

    await client.connect(
        profile.url,
        headers={"Origin": profile.options.public_url},
        transports=["polling"],
    )
    try:
        await client.emit("session_request", {"session_id": asked})
        return await asyncio.wait_for(confirmed, timeout=30)
    finally:  # without waiting up to 25 s for the long poll to end
        await client.eio.disconnect(abort=True)


def test_a_widget_cannot_choose_its_conversation_id(profile: ScaledProfile) -> None:
    chosen = "a-conversation-someone-else-started"
    issued = asyncio.run(confirmed_session(profile, chosen))
    assert issued != chosen
    assert ISSUED.fullmatch(issued), issued
    # The id it was given is taken back (a reload carries on the conversation).
    assert asyncio.run(confirmed_session(profile, issued)) == issued
    assert asyncio.run(confirmed_session(profile, None)) not in (issued, chosen)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/webhooks/twilio/webhook", b"From=%2B16825550101&Body=hi"),
        ("/socket.io/", None),
    ],
)
def test_nginx_answers_a_flooding_address_with_429(
    profile: ScaledProfile, path: str, body: Optional[bytes]
) -> None:
    # Three times the burst at once, far faster than the rate: the excess gets 429.
    count = 3 * max(limit.burst for limit in SMALL)
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses: List[int] = list(
            pool.map(lambda _: status_of(profile.url + path, body), range(count))
        )
    assert 429 in statuses
    assert max(statuses) < 500, sorted(set(statuses))
    # Only those URIs are limited: the staff page is not.
    assert status_of(f"{profile.staff_url}login") == 200
