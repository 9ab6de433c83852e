"""The README's run command: `make run` serves the assistant, keeps every part
running, reports their health, and stops them all cleanly.

One stack serves the tests of this module in order (starting Rasa takes a while);
the last one stops it with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml
from testkit import domain_text, first_faq_answers

from scripts.supervise import alive
from scripts.wait_ready import is_ready
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What an older make run could save: a token that `rasa run --auth-token` reads as
# an option (scripts/run.sh must replace it, not fail).
BAD_SAVED_TOKEN = "-Xq3" + "a" * 39
CLINIC_NAME = yaml.safe_load((ROOT / "clinic.yml").read_text())["name"]


@dataclass
class Stack:
    """`make run` in its own session, its output read as it comes."""

    process: subprocess.Popen[str]
    state: Path
    ports: Dict[str, int]
    output: List[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def supervisorctl(self, *args: str) -> str:
        result = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "supervisorctl")]
            + ["-c", str(self.state / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout

    def pids(self) -> Dict[str, int]:
        """The running pid of each program, from supervisorctl status."""
        found = re.findall(
            r"^(\w+)\s+RUNNING\s+pid (\d+)", self.supervisorctl("status"), re.M
        )
        return {name: int(pid) for name, pid in found}

    def health(self) -> Tuple[int, Dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url("health", "/health"), timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def texts(self, sender: str, message: str) -> List[str]:
        request = urllib.request.Request(
            self.url("rasa", "/webhooks/rest/webhook"),
            data=json.dumps({"sender": sender, "message": message}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return [reply["text"] for reply in json.loads(response.read())]


def answers(url: str) -> bool:
    return is_ready(url, timeout=5)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def cmdlines() -> Dict[int, bytes]:
    """Every process's command line that can be read now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # it ended meanwhile
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("run") / "state"
    state.mkdir(mode=0o700)
    (state / "rasa_api_token").write_text(BAD_SAVED_TOKEN + "\n")
    ports = {name: free_port() for name in ("rasa", "action", "web", "staff", "health")}
    env = {
        **os.environ,
        "RASA_PORT": str(ports["rasa"]),
        "ACTION_PORT": str(ports["action"]),
        "ACTION_SERVER_URL": f"http://127.0.0.1:{ports['action']}/webhook",
        "WEB_PORT": str(ports["web"]),
        "STAFF_PORT": str(ports["staff"]),
        "HEALTH_PORT": str(ports["health"]),
        "STAFF_PASSWORD": "run-script-test-password",
        "STATE_DIR": str(state),
        "TRACKER_DB": str(state / "tracker.db"),
    }
    env.pop("RASA_API_TOKEN", None)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],  # the README's command, as written
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    served = Stack(process, state, ports)
    banner = threading.Event()

    def read() -> None:  # supervisord writes to it all along: never let it fill
        assert process.stdout is not None
        for line in process.stdout:
            served.output.append(line)
            if "Press Ctrl-C to stop." in line:
                banner.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        banner.wait(timeout=300)
        assert "The clinic assistant is running." in served.text(), served.text()[
            -3000:
        ]
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_bad_saved_token_is_replaced_and_the_stack_starts(stack: Stack) -> None:
    path = stack.state / "rasa_api_token"
    token = path.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    notes = [line for line in stack.output if "saved Rasa API token" in line]
    assert notes == [
        f'note: the saved Rasa API token in {path} starts with "-", which a '
        "command line reads as an option; replaced it with a new one.\n"
    ]
    assert f"http://127.0.0.1:{stack.ports['rasa']}/webhooks/rest/webhook" in (
        stack.text()
    )
    assert f"Health of each part: {stack.url('health', '/health')}" in stack.text()


def test_serves_rest_and_keeps_patient_data_private(stack: Stack) -> None:
    assert stack.texts("run-sh", "what is dry needling") == [
        domain_text("utter_intro").replace("{clinic_name}", CLINIC_NAME),
        first_faq_answers()["dry_needling"],
    ]
    assert stat.S_IMODE(stack.state.stat().st_mode) == 0o700
    assert stat.S_IMODE((stack.state / "tracker.db").stat().st_mode) & 0o077 == 0
    logs = stack.state / "logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE((stack.state / "supervisor.sock").stat().st_mode) == 0o700
    for log in logs.iterdir():
        assert stat.S_IMODE(log.stat().st_mode) & 0o077 == 0, log


def test_api_token_is_in_no_command_line(stack: Stack) -> None:
    token = (stack.state / "rasa_api_token").read_text().strip().encode()
    lines = cmdlines()
    assert any(b"scripts.rasa_server" in line for line in lines.values())
    assert [pid for pid, line in lines.items() if token in line] == []
    # ...and the API takes it: the Rasa server got it through its environment.
    status = f"/status?token={token.decode()}"
    assert answers(stack.url("rasa", status))
    assert not answers(stack.url("rasa", "/status?token=wrong"))


def test_health_reports_every_part(stack: Stack) -> None:
    code, body = stack.health()
    assert code == 200
    assert body["status"] == "ok"
    assert sorted(body["parts"]) == [
        "action_server",
        "demo_page",
        "rasa_server",
        "staff_page",
    ]
    for part in body["parts"].values():
        assert part["state"] == "RUNNING"
        assert part["ok"] is True
        assert part["restarts"] == 0
        assert part["uptime_s"] >= 5  # supervisord's startsecs


def test_killed_action_server_comes_back_while_rasa_keeps_answering(
    stack: Stack,
) -> None:
    before = stack.pids()["action_server"]
    os.kill(before, signal.SIGKILL)
    # Down: supervisord starts it again, and it counts as up after startsecs (5 s).
    code, body = stack.health()
    assert (code, body["status"]) == (503, "degraded")
    # Its supervisord state may already read RUNNING (startsecs passed on a busy
    # machine) while it does not answer yet: the probe is what says it is down.
    assert body["parts"]["action_server"]["ok"] is False
    assert body["parts"]["rasa_server"]["ok"] is True
    # Meanwhile the Rasa server answers patients' questions.
    assert stack.texts("run-sh-outage", "what medicine is in the injection") == [
        domain_text("utter_intro").replace("{clinic_name}", CLINIC_NAME),
        first_faq_answers()["injection_contents"],
    ]
    wait_for(
        lambda: stack.pids().get("action_server", before) != before,
        60,
        "the action server running again",
    )
    assert answers(stack.url("action", "/health"))
    code, body = stack.health()
    assert (code, body["status"]) == (200, "ok")
    assert body["parts"]["action_server"]["restarts"] == 1
    log = (stack.state / "logs" / "supervisord.log").read_text()
    assert "exited: action_server (terminated by SIGKILL; not expected)" in log


def test_ctrl_c_stops_every_part_and_leaves_nothing_behind(stack: Stack) -> None:
    pids = stack.pids()
    assert sorted(pids) == [
        "action_server",
        "demo_page",
        "health",
        "rasa_server",
        "reminders",
        "retention",
        "staff_page",
    ]
    supervisord = int((stack.state / "supervisord.pid").read_text())
    os.killpg(stack.process.pid, signal.SIGINT)
    # make waits for supervisord to stop every part, then ends by the same signal.
    assert stack.process.wait(timeout=90) == -signal.SIGINT
    assert [pid for pid in [supervisord, *pids.values()] if alive(pid)] == []
    marks = [str(stack.state).encode()] + [
        f"--port\0{port}\0".encode() for port in stack.ports.values()
    ]
    left = [line for line in cmdlines().values() if any(mark in line for mark in marks)]
    assert left == []
    for name in stack.ports:
        assert not answers(stack.url(name, "/"))
