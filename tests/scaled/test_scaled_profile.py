"""The scaled profile (scripts/run_scaled.py): two Rasa servers, one action server,
PostgreSQL, Redis and nginx, reached only through nginx as patients would.

Debian's packages are installed by scripts/install_services.sh when missing (as root,
as in CI); the module is skipped, with the reason, only when they cannot be. The
model is $MODEL_PATH (scripts/train.sh). The state folder is made outside pytest's
temporary folders: PostgreSQL and Redis run under their own accounts when root and
must reach it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
import socketio
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from scripts.launcher import LOOPBACK, ROOT, free_port
from scripts.run_scaled import DATABASE, DB_USER, Options, ScaledProfile
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import (
    INTRO,
    SMS_ACCOUNT_SID,
    SMS_AUTH_TOKEN,
    SMS_FROM_NUMBER,
    SMS_PUBLIC_URL,
    SMS_UNSET,
    sms_env,
)

pytestmark = pytest.mark.integration

STAFF_PASSWORD = "scaled-profile-staff-password"


def install_services() -> None:
    """Installs the Debian packages, or skips the module saying why it could not."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "install_services.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"the scaled profile's Debian packages: {done.stderr.strip()}")


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi(SMS_ACCOUNT_SID, SMS_AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def profile(twilio: FakeTwilioApi) -> Iterator[ScaledProfile]:
    install_services()
    state = Path(tempfile.mkdtemp(prefix="scaled-"))
    port = free_port()
    options = Options(
        rasa_servers=2,
        action_servers=1,
        port=port,
        listen=LOOPBACK,
        public_url=f"http://{LOOPBACK}:{port}",
        staff_port=free_port(taken=(port,)),
    )
    env = {
        **SMS_UNSET,
        **os.environ,
        **sms_env(twilio),
        "SCHEDULER_BACKEND": "sqlite",
        "STAFF_PASSWORD": STAFF_PASSWORD,
        "WIDGET_ALLOWED_ORIGINS": "",
    }
    for name in (
        "STATE_DIR",
        "TRACKER_DB",
        "SCHEDULER_DB",
        "CALLBACK_DB",
        "CHANNEL_DB",
    ):
        env.pop(name, None)  # all follow the state folder
    model = Path(os.environ.get("MODEL_PATH", ROOT / "models" / "clinic.tar.gz"))
    running = ScaledProfile(state, model, options, env)
    try:
        with running:
            yield running
    finally:
        shutil.rmtree(state, ignore_errors=True)


def status_of(url: str, data: Optional[bytes] = None, **headers: str) -> int:
    """The HTTP status ``url`` answers with (GET, or POST with ``data``)."""
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def post_sms(profile: ScaledProfile, phone: str, text: str, signature: str) -> int:
    form = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "From": phone,
        "To": SMS_FROM_NUMBER,
        "Body": text,
        "NumMedia": "0",
    }
    if signature == "valid":
        signature = RequestValidator(SMS_AUTH_TOKEN).compute_signature(
            SMS_PUBLIC_URL, form
        )
    return status_of(
        f"{profile.url}/webhooks/twilio/webhook",
        urllib.parse.urlencode(form).encode(),
        **{"X-Twilio-Signature": signature},
    )


def test_an_unsigned_or_badly_signed_sms_is_refused(profile: ScaledProfile) -> None:
    assert post_sms(profile, "+16825550101", "hello", signature="") == 403
    assert post_sms(profile, "+16825550101", "hello", signature="forged") == 403


def test_a_signed_sms_is_answered_through_nginx(
    profile: ScaledProfile, twilio: FakeTwilioApi
) -> None:
    assert post_sms(profile, "+16825550102", "hello", signature="valid") == 200
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


async def widget_conversation(url: str, origin: str, session_id: str) -> List[str]:
    """A widget's session through nginx: its first messages, then one question's."""
    client = socketio.AsyncClient()
    inbox: asyncio.Queue[str] = asyncio.Queue()

    @client.on("bot_uttered")  # type: ignore[misc]
    async def _on_bot(data: Dict[str, str]) -> None:
        await inbox.put(str(data.get("text")))

    # Long polling: several requests, each of which must reach the same server.
    await client.connect(url, headers={"Origin": origin}, transports=["polling"])
    try:
        await client.emit("session_request", {"session_id": session_id})
        texts = [await asyncio.wait_for(inbox.get(), timeout=60)]
        await client.emit(
            "user_uttered",
            {"message": "what is in the injection?", "session_id": session_id},
        )
        while "anesthetic" not in texts[-1]:
            texts.append(await asyncio.wait_for(inbox.get(), timeout=60))
        return texts
    finally:  # without waiting up to 25 s for the long poll to end
        await client.eio.disconnect(abort=True)


def test_a_widget_conversation_goes_through_nginx_into_postgresql(
    profile: ScaledProfile,
) -> None:
    session_id = uuid.uuid4().hex
    texts = asyncio.run(
        widget_conversation(profile.url, profile.options.public_url, session_id)
    )

    assert texts[0] == INTRO
    engine = sa.create_engine(
        profile.postgres.url(DATABASE, DB_USER, profile.env["POSTGRES_PASSWORD"])
    )
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                sa.text(
                    "SELECT type_name FROM events WHERE sender_id = :id ORDER BY id"
                ),
                {"id": session_id},
            ).scalars()
            kinds = list(stored)
    finally:
        engine.dispose()
    assert kinds.count("user") == 1
    assert kinds.count("bot") == len(texts)
