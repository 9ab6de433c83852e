"""Runs the real action server and Rasa server on free loopback ports for a session."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from scripts.wait_ready import is_ready
from tests.fakes.twilio_api import FakeTwilioApi

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before ready")
        if is_ready(url):
            return
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Assistant:
    """The running assistant: post messages, restart the Rasa server."""

    def __init__(self, tmp: Path, extra_env: Optional[Dict[str, str]] = None) -> None:
        model = Path(os.environ.get("MODEL_PATH", ROOT / "models" / "clinic.tar.gz"))
        if not model.is_file():
            raise RuntimeError(f"No trained model at {model}: run 'make train' first.")
        self.model = model
        self.tracker_db = tmp / "tracker.db"
        self.scheduler_db = tmp / "scheduler.db"
        self.rasa_port = free_port()
        self.action_port = free_port()
        self.log_dir = tmp
        self.env = {
            **SMS_UNSET,
            **os.environ,
            "RASA_TELEMETRY_ENABLED": "false",
            "SANIC_HOST": "127.0.0.1",
            "TRACKER_DB": str(self.tracker_db),
            "STATE_DIR": str(tmp),
            "SCHEDULER_BACKEND": "sqlite",
            "SCHEDULER_DB": str(tmp / "scheduler.db"),
            "ACTION_SERVER_URL": f"http://127.0.0.1:{self.action_port}/webhook",
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        self.actions = self._start_actions()
        self.rasa = self._start_rasa()

    def _spawn(self, log_name: str, args: List[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - closed by the OS
        return subprocess.Popen(
            [str(VENV_BIN / "rasa"), *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _start_actions(self) -> subprocess.Popen[bytes]:
        process = self._spawn(
            "actions.log",
            ["run", "actions", "--port", str(self.action_port), "--actions", "actions"],
        )
        wait_until_ready(f"http://127.0.0.1:{self.action_port}/health", process, 120)
        return process

    def kill_actions(self) -> None:
        """Kills the action server at once (SIGKILL), as a crash would."""
        if self.actions.poll() is None:
            os.killpg(self.actions.pid, signal.SIGKILL)
            self.actions.wait()

    def start_actions(self) -> None:
        """Starts the action server again on the same port."""
        self.kill_actions()
        self.actions = self._start_actions()

    def _start_rasa(self) -> subprocess.Popen[bytes]:
        process = self._spawn(
            "rasa.log",
            [
                "run",
                "--interface",
                "127.0.0.1",
                "--port",
                str(self.rasa_port),
                "--model",
                str(self.model),
                "--credentials",
                "credentials.yml",
                "--endpoints",
                "endpoints.yml",
            ],
        )
        wait_until_ready(f"http://127.0.0.1:{self.rasa_port}/", process, 240)
        return process

    def restart_rasa(self) -> None:
        stop(self.rasa)
        self.rasa = self._start_rasa()

    def post(self, sender: str, message: Any) -> tuple[int, Any]:
        """Posts to the REST channel; returns (status, parsed JSON or raw text)."""
        body = json.dumps({"sender": sender, "message": message}).encode("utf-8")
        return self.post_raw(body)

    def post_raw(self, body: bytes) -> tuple[int, Any]:
        """Posts these bytes to the REST channel as JSON; returns (status, reply)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rasa_port}/webhooks/rest/webhook",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")

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
        stop(self.rasa)
        stop(self.actions)


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
