"""Runs the real action server and Rasa server on free loopback ports for a session."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from testkit import post_rest

# free_port, stop and wait_until_ready are also tests/web/conftest.py's.
from scripts.launcher import Servers, free_port, stop, wait_until_ready
from tests.fakes.twilio_api import FakeTwilioApi

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["Assistant", "free_port", "stop", "wait_until_ready"]

# The SMS channel of credentials.yml needs its variables set (empty: SMS off, as in
# scripts/env.sh); the session's assistant sends SMS to the fake Twilio API.
SMS_UNSET = {
    name: ""
    for name in (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_FROM_NUMBER",
        "TWILIO_MESSAGING_SERVICE_SID",
        "TWILIO_WEBHOOK_URL",
        "TWILIO_API_BASE",
    )
}
SMS_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
SMS_AUTH_TOKEN = "integration-test-token"
SMS_FROM_NUMBER = "+18175550000"
SMS_PUBLIC_URL = "https://sms.clinic.test/webhooks/twilio/webhook"


class Assistant:
    """The running assistant (scripts/launcher.py): post messages, restart a server."""

    def __init__(self, tmp: Path, extra_env: Optional[Dict[str, str]] = None) -> None:
        env = {
            **SMS_UNSET,
            **os.environ,
            "SCHEDULER_BACKEND": "sqlite",
            "SCHEDULER_DB": str(tmp / "scheduler.db"),
            **(extra_env or {}),
        }
        model = Path(os.environ.get("MODEL_PATH", ROOT / "models" / "clinic.tar.gz"))
        self.servers = Servers(tmp, model, env).start()
        self.model = model
        self.env = self.servers.env
        self.tracker_db = Path(self.env["TRACKER_DB"])
        self.scheduler_db = tmp / "scheduler.db"
        self.rasa_port = self.servers.rasa_port
        self.action_port = self.servers.action_port
        self.log_dir = tmp

    def kill_actions(self) -> None:
        """Kills the action server at once (SIGKILL), as a crash would."""
        self.servers.actions.kill()

    def start_actions(self) -> None:
        """Starts the action server again on the same port."""
        self.servers.start_actions()

    def restart_rasa(self) -> None:
        """Stops the Rasa server and starts it again on the same port."""
        self.servers.start_rasa()

    def post(self, sender: str, message: Any) -> tuple[int, Any]:
        """Posts to the REST channel; returns (status, parsed JSON or raw text)."""
        body = json.dumps({"sender": sender, "message": message}).encode("utf-8")
        return self.post_raw(body)

    def post_raw(self, body: bytes) -> tuple[int, Any]:
        """Posts these bytes to the REST channel as JSON; returns (status, reply)."""
        return post_rest(self.rasa_port, body)

    def texts(self, sender: str, message: str) -> List[str]:
        status, replies = self.post(sender, message)
        assert status == 200, (status, replies)
        assert isinstance(replies, list) and replies, f"no reply to {message!r}"
        return [str(reply.get("text", "")) for reply in replies]

    def replies(self, sender: str, message: str) -> List[Dict[str, Any]]:
        status, replies = self.post(sender, message)
        assert status == 200, (status, replies)
        assert isinstance(replies, list)
        return replies

    def close(self) -> None:
        self.servers.close()


@pytest.fixture(scope="session")
def twilio_api() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi(SMS_ACCOUNT_SID, SMS_AUTH_TOKEN) as fake:
        yield fake


def sms_env(twilio_api: FakeTwilioApi) -> Dict[str, str]:
    """The SMS channel's settings for an assistant that texts the fake API."""
    return {
        "TWILIO_ACCOUNT_SID": SMS_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": SMS_AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": SMS_FROM_NUMBER,
        "TWILIO_WEBHOOK_URL": SMS_PUBLIC_URL,
        "TWILIO_API_BASE": twilio_api.base_url,
    }


@pytest.fixture(scope="session")
def assistant(
    tmp_path_factory: pytest.TempPathFactory, twilio_api: FakeTwilioApi
) -> Iterator[Assistant]:
    running = Assistant(
        tmp_path_factory.mktemp("assistant"), extra_env=sms_env(twilio_api)
    )
    try:
        yield running
    finally:
        running.close()


# --- whole turns: every message the patient reads, in order -------------------------

INTRO = (
    "Hi, I'm the virtual assistant of Valliant Life Medical. I can share general "
    "information about back spasms and their treatment, and help you get an "
    "appointment. I'm not a doctor and this isn't medical advice. In an emergency, "
    "call 911."
)
Turn = List[Tuple[str, List[Tuple[str, str]]]]


def turn(assistant: Assistant, sender: str, message: str) -> Turn:
    """The replies to ``message``: (text, [(button title, payload)]) in order."""
    return [
        (
            str(reply.get("text", "")),
            [(b["title"], b["payload"]) for b in reply.get("buttons") or []],
        )
        for reply in assistant.replies(sender, message)
    ]
