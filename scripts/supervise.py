"""The parts ``make run`` starts, and the supervisord configuration that keeps them up.

scripts/run.sh writes ``$STATE_DIR/supervisord.conf`` with ``config`` and runs
``supervisord -n`` on it in the foreground: supervisord restarts a part that dies (at
once; with growing pauses while one keeps failing to start), logs every start and exit
in ``$STATE_DIR/logs/supervisord.log`` and each part's output in
``$STATE_DIR/logs/<part>.log`` (rotated), and stops them all on Ctrl-C. Its control
socket is ``$STATE_DIR/supervisor.sock`` (mode 0700): ``supervisorctl -c
$STATE_DIR/supervisord.conf status`` shows the parts, and scripts/health.py reads it.
deploy/systemd/ runs the same commands under systemd on a real host.

Usage:
    python -m scripts.supervise config      the configuration, from the environment
    python -m scripts.supervise summary PID waits for the servers, prints where they
                                            are (ends if process PID, supervisord, does)
    python -m scripts.supervise env-file    the environment file for deploy/systemd/
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

from clinic_common.settings import LOOPBACK, load
from scripts.launcher import (
    ACTION_PROBE,
    ACTION_SERVER,
    RASA_PROBE,
    RASA_SERVER,
    expand,
)
from scripts.wait_ready import is_ready

ROOT = Path(__file__).resolve().parents[1]
# The longest path a unix socket can have (sun_path is 108 bytes on Linux).
MAX_SOCKET_PATH = 107
LOG_MAX_BYTES = "10MB"
LOG_BACKUPS = 5
# A part that exits before STARTSECS counts as a failed start: supervisord waits 1 s,
# 2 s, 3 s, ... between tries (BACKOFF) and gives up (FATAL) only after STARTRETRIES,
# about a month of pauses. One that ran longer is started again at once.
STARTSECS = 5
STARTRETRIES = 2000
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class Part:
    """One program supervisord runs.

    ``command`` and ``probe`` name environment variables as ``{NAME}``: the values
    go into the supervisord configuration, ``${NAME}`` into the systemd units.
    """

    name: str
    title: str
    command: Tuple[str, ...]
    probe: str  # a URL that answers 200 while the part serves ("": a job, no server)
    stopwaitsecs: int = 10

    def argv(self, environ: Mapping[str, str]) -> List[str]:
        """The command with the environment's values."""
        return [expand(arg, environ) for arg in self.command]

    def probe_url(self, environ: Mapping[str, str]) -> str:
        """The probe URL with the environment's ports."""
        return expand(self.probe, environ)


PARTS: Tuple[Part, ...] = (
    # The two servers' commands are scripts/launcher.py's, shared with the tests.
    Part("action_server", "action server", ACTION_SERVER, ACTION_PROBE),
    Part(
        "rasa_server",
        "Rasa server",
        RASA_SERVER,
        RASA_PROBE,
        # Rasa finishes the conversations it is answering and closes its stores.
        stopwaitsecs=30,
    ),
    Part(
        "demo_page",
        "demo page",
        ("{VENV}/bin/python", "scripts/serve_web.py", "--port", "{WEB_PORT}")
        + ("--server-url", "http://127.0.0.1:{RASA_PORT}"),
        "http://127.0.0.1:{WEB_PORT}/demo/",
    ),
    Part(
        "staff_page",
        "staff page",
        ("{VENV}/bin/python", "-m", "staff.web", "--port", "{STAFF_PORT}"),
        "http://127.0.0.1:{STAFF_PORT}/login",
    ),
)
HEALTH = Part(
    "health",
    "health endpoint",
    ("{VENV}/bin/python", "-m", "scripts.health", "--port", "{HEALTH_PORT}"),
    "http://127.0.0.1:{HEALTH_PORT}/health",
)
# Patients' data kept only as long as needed: clinicbot retention at start and daily.
RETENTION_JOB = Part(
    "retention",
    "daily retention",
    ("{VENV}/bin/python", "-m", "scripts.daily"),
    "",
)
# Appointment reminders by SMS when due (clinic.yml's reminders:), every
# REMINDER_POLL_SECONDS; once per booking however many run (scripts/reminders.py).
REMINDER_JOB = Part(
    "reminders",
    "appointment reminders",
    ("{VENV}/bin/python", "-m", "scripts.reminders"),
    "",
)
# Environment variables an operator may set that scripts/env.sh gives no default.
OPTIONAL_VARIABLES = (
    "RASA_API_TOKEN",
    "STAFF_PASSWORD",
    "CLINIC_CONFIG",
    "CHANNEL_DB",
    "SCHEDULER_BACKEND",
    "SCHEDULER_DB",
    "CALLBACK_DB",
    "WIDGET_ALLOWED_ORIGINS",
)


def enabled_parts(environ: Mapping[str, str]) -> List[Part]:
    """The parts to run: the staff page only when it has a password."""
    has_password = bool(load(environ).staff_password)
    return [part for part in PARTS if part.name != "staff_page" or has_password]


def state_paths(environ: Mapping[str, str]) -> Dict[str, Path]:
    """Where supervisord keeps its socket, logs and pid file."""
    state = load(environ).state_dir.resolve()
    return {
        "socket": state / "supervisor.sock",
        "logs": state / "logs",
        "pidfile": state / "supervisord.pid",
        "config": state / "supervisord.conf",
    }


def _value(text: str) -> str:
    """A value for supervisord's configuration, which expands ``%(...)s``."""
    if "\n" in text:
        raise ValueError(f"a line break in a setting: {text!r}")
    return text.replace("%", "%%")


def _program(part: Part, environ: Mapping[str, str], logs: Path) -> List[str]:
    command = shlex.join(part.argv(environ))
    return [
        f"[program:{part.name}]",
        f"command={_value(command)}",
        f"directory={_value(str(ROOT))}",
        "autostart=true",
        "autorestart=true",
        f"startsecs={STARTSECS}",
        f"startretries={STARTRETRIES}",
        "stopsignal=TERM",
        f"stopwaitsecs={part.stopwaitsecs}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={_value(str(logs / (part.name + '.log')))}",
        f"stdout_logfile_maxbytes={LOG_MAX_BYTES}",
        f"stdout_logfile_backups={LOG_BACKUPS}",
        "",
    ]


def supervisord_config(environ: Mapping[str, str]) -> str:
    """The configuration for the parts the environment asks for.

    Raises:
        KeyError: a variable the commands use is not set.
        ValueError: the state directory's path is too long for a unix socket.
    """
    paths = state_paths(environ)
    socket = paths["socket"]
    if len(str(socket)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"{socket} is longer than a unix socket's path can be "
            f"({MAX_SOCKET_PATH} characters): set STATE_DIR to a shorter path."
        )
    logs = paths["logs"]
    lines = [
        "; Written by scripts/supervise.py each time make run starts: edit that.",
        "[unix_http_server]",
        f"file={_value(str(socket))}",
        "chmod=0700",
        "",
        "[supervisord]",
        "nodaemon=true",
        # Patient data: logs and databases readable by this account only.
        "umask=077",
        f"logfile={_value(str(logs / 'supervisord.log'))}",
        f"logfile_maxbytes={LOG_MAX_BYTES}",
        f"logfile_backups={LOG_BACKUPS}",
        "loglevel=info",
        f"pidfile={_value(str(paths['pidfile']))}",
        f"childlogdir={_value(str(logs))}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:"
        "make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_value(str(socket))}",
        "",
    ]
    for part in [*enabled_parts(environ), HEALTH, RETENTION_JOB, REMINDER_JOB]:
        lines += _program(part, environ, logs)
    return "\n".join(lines)


def env_file(environ: Mapping[str, str]) -> str:
    """``NAME="value"`` lines for systemd's EnvironmentFile=.

    Every variable scripts/env.sh exports, those of ``OPTIONAL_VARIABLES`` that
    are set, and ``ENDPOINTS`` always (the Rasa server's unit names it; default
    ``endpoints.yml``).
    """
    exported = re.findall(
        r"^export ([A-Z_]+)\b", (ROOT / "scripts" / "env.sh").read_text(), re.M
    )
    names = list(dict.fromkeys([*exported, *OPTIONAL_VARIABLES]))
    values = {name: environ[name] for name in names if name in environ}
    values["ENDPOINTS"] = expand("{ENDPOINTS}", environ)
    lines = ["# Written by: python -m scripts.supervise env-file (mode 600: secrets)"]
    for name, value in values.items():
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{name}="{quoted}"')
    return "\n".join(lines) + "\n"


def summary(environ: Mapping[str, str], ready: Dict[str, bool]) -> str:
    """What ``make run`` prints once the servers answer."""
    settings = load(environ)
    port = settings.rasa_port
    logs = state_paths(environ)["logs"]

    def where(name: str, url: str) -> str:
        if name not in ready:
            return "not started: set STAFF_PASSWORD (and STAFF_USERNAME) to start it"
        if ready[name]:
            return url
        return f"not answering yet (see {logs / (name + '.log')})"

    demo = where("demo_page", f"http://{LOOPBACK}:{settings.web_port}/demo/")
    staff = where(
        "staff_page",
        f"http://{LOOPBACK}:{settings.staff_port}/ "
        f"(log in as {settings.staff_username})",
    )
    config = state_paths(environ)["config"]
    return f"""
The clinic assistant is running.
  REST:  POST http://{LOOPBACK}:{port}/webhooks/rest/webhook
         e.g. curl -s -XPOST http://{LOOPBACK}:{port}/webhooks/rest/webhook \\
                -d '{{"sender":"me","message":"What is a back spasm?"}}'
  Chat in a terminal:  make chat   (in another terminal)
  Website widget demo: {demo}
  Staff page:          {staff}
  Health of each part: http://{LOOPBACK}:{settings.health_port}/health
  Logs:                {logs}/ (supervisord.log: every start, exit and restart)
  A part that stops is started again; see them with
    {environ["VENV"]}/bin/supervisorctl -c {config} status
  Conversations are kept in {settings.tracker_db}
Press Ctrl-C to stop.
"""


def alive(pid: int) -> bool:
    """Whether process ``pid`` is still running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_and_summarise(environ: Mapping[str, str], supervisord: int) -> int:
    """Waits for the two servers, then prints the summary.

    Started in the background by scripts/run.sh just before it becomes supervisord
    (process ``supervisord``); ends quietly if that stops first.
    """
    parts = {part.name: part for part in enabled_parts(environ)}
    needed = [
        parts[name].probe_url(environ) for name in ("rasa_server", "action_server")
    ]
    deadline = time.monotonic() + READY_TIMEOUT
    while needed:
        if not alive(supervisord):
            return 1  # it has stopped (Ctrl-C, or it could not start)
        if time.monotonic() > deadline:
            logs = state_paths(environ)["logs"]
            print(
                f"\nNot ready after {READY_TIMEOUT:.0f} s: {', '.join(needed)}. "
                f"supervisord keeps starting them again; see {logs}/.",
                file=sys.stderr,
                flush=True,
            )
            return 1
        needed = [url for url in needed if not is_ready(url)]
        if needed:
            time.sleep(0.25)
    ready = {
        name: is_ready(part.probe_url(environ))
        for name, part in parts.items()
        if name in ("demo_page", "staff_page")
    }
    print(summary(environ, ready), flush=True)
    return 0


def main() -> int:
    """Runs the sub-command named on the command line."""
    command = " ".join(sys.argv[1:2])
    arguments = sys.argv[2:]
    environ = dict(os.environ)
    try:
        if command == "config" and not arguments:
            print(supervisord_config(environ), end="")
        elif command == "env-file" and not arguments:
            print(env_file(environ), end="")
        elif command == "summary" and len(arguments) == 1 and arguments[0].isdigit():
            return wait_and_summarise(environ, int(arguments[0]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (KeyError, ValueError) as error:
        detail = f"{error} is not set" if isinstance(error, KeyError) else str(error)
        print(f"error: {detail} (scripts/env.sh sets the defaults)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
