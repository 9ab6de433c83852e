"""The README's run command: `make run` serves the assistant and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_run_script_serves_rest_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    rasa_port, action_port = free_port(), free_port()
    state = tmp_path / "state"
    env = {
        **os.environ,
        "RASA_PORT": str(rasa_port),
        "ACTION_PORT": str(action_port),
        "ACTION_SERVER_URL": f"http://127.0.0.1:{action_port}/webhook",
        "STATE_DIR": str(state),
        "TRACKER_DB": str(state / "tracker.db"),
    }
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],  # the README's command, as written
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 240
        banner = ""
        for line in process.stdout:
            banner += line
            if "Press Ctrl-C to stop." in line or time.monotonic() > deadline:
                break
        assert "The clinic assistant is running." in banner, banner[-2000:]
        assert f"http://127.0.0.1:{rasa_port}/webhooks/rest/webhook" in banner

        request = urllib.request.Request(
            f"http://127.0.0.1:{rasa_port}/webhooks/rest/webhook",
            data=json.dumps(
                {"sender": "run-sh", "message": "what is dry needling"}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            replies = json.loads(response.read())
        assert "no medication" in replies[-1]["text"]
        # Patient data stays with the account that runs the assistant.
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / "tracker.db").stat().st_mode) & 0o077 == 0

        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) is not None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{rasa_port}/", timeout=2)
