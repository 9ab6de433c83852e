"""The scaled profile (scripts/run_scaled.py): two Rasa servers, one action server,
PostgreSQL, Redis and nginx, reached only through nginx as patients would.

The profile and the Twilio fake are the fixtures of tests/scaled/conftest.py.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, List, Tuple

import pytest
import socketio

from scripts.launcher import LOOPBACK
from scripts.run_scaled import SANIC_BACKLOG, ScaledProfile
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import INTRO
from tests.scaled.conftest import post_sms, status_of, stored_events

pytestmark = pytest.mark.integration


def test_an_unsigned_or_badly_signed_sms_is_refused(profile: ScaledProfile) -> None:
    assert post_sms(profile.url, "+16825550101", "hello", signature="") == 403
    assert post_sms(profile.url, "+16825550101", "hello", signature="forged") == 403


def test_a_signed_sms_is_answered_through_nginx(
    profile: ScaledProfile, twilio: FakeTwilioApi
) -> None:
    assert post_sms(profile.url, "+16825550102", "hello", signature="valid") == 200
    first = twilio.wait_for_messages("+16825550102", 1, timeout=60)[0]
    assert "virtual assistant" in first  # the SMS variant of the introduction


@pytest.mark.parametrize(
    "path",
    ["/webhooks/rest/webhook", "/model", "/status", "/conversations/x/tracker"],
)
def test_rest_and_rasas_http_api_are_not_exposed(
    profile: ScaledProfile, path: str
) -> None:
    assert status_of(profile.url + path) == 404
    assert status_of(profile.url + path, b"{}") == 404


def test_the_widget_and_the_demo_page_are_served(profile: ScaledProfile) -> None:
    assert status_of(f"{profile.url}/dist/clinic-chat.js") == 200
    with urllib.request.urlopen(f"{profile.url}/demo/config.js", timeout=10) as page:
        assert profile.url in page.read().decode()


def test_the_staff_page_answers(profile: ScaledProfile) -> None:
    assert status_of(f"{profile.staff_url}login") == 200


def test_socket_io_upgrades_to_a_websocket_through_nginx(
    profile: ScaledProfile,
) -> None:
    request = (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        f"Host: {LOOPBACK}:{profile.options.port}\r\n"
        f"Origin: {profile.options.public_url}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "\r\n"
    )
    with socket.create_connection((LOOPBACK, profile.options.port), timeout=10) as conn:
        conn.sendall(request.encode())
        status_line = conn.recv(1024).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 101 Switching Protocols"


async def widget_conversation(url: str, origin: str) -> Tuple[str, List[str]]:
    """A widget's session through nginx: its id, its first messages and one answer."""
    client = socketio.AsyncClient()
    inbox: asyncio.Queue[str] = asyncio.Queue()
    confirmed: asyncio.Queue[str] = asyncio.Queue()

    @client.on("bot_uttered")  # type: ignore[misc]
    async def _on_bot(data: Dict[str, str]) -> None:
        await inbox.put(str(data.get("text")))

    @client.on("session_confirm")  # type: ignore[misc]
    async def _on_confirm(session_id: str) -> None:
        await confirmed.put(session_id)

    # Long polling: several requests, each of which must reach the same server.
    await client.connect(url, headers={"Origin": origin}, transports=["polling"])
    try:
        await client.emit("session_request", {"session_id": None})
        session_id = await asyncio.wait_for(confirmed.get(), timeout=60)  # issued
        texts = [await asyncio.wait_for(inbox.get(), timeout=60)]
        await client.emit(
            "user_uttered",
            {"message": "what is in the injection?", "session_id": session_id},
        )
        while "anesthetic" not in texts[-1]:
            texts.append(await asyncio.wait_for(inbox.get(), timeout=60))
        return session_id, texts
    finally:  # without waiting up to 25 s for the long poll to end
        await client.eio.disconnect(abort=True)


def test_a_widget_conversation_goes_through_nginx_into_postgresql(
    profile: ScaledProfile,
) -> None:
    session_id, texts = asyncio.run(
        widget_conversation(profile.url, profile.options.public_url)
    )

    assert texts[0] == INTRO
    kinds = [kind for _, kind, _ in stored_events(profile, [session_id])]
    assert kinds.count("user") == 1
    assert kinds.count("bot") == len(texts)


def test_each_rasa_server_queues_a_burst_of_nginx_connections(
    profile: ScaledProfile,
) -> None:
    # nginx opens a connection per request; with Rasa's backlog of 100, 200 texts at
    # once had 29 webhook posts reset (bench-scale, 1 server, 200 conversations).
    for port in profile.rasa_ports:
        listing = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert int(listing[2]) == SANIC_BACKLOG  # a listening socket's Send-Q
