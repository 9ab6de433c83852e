"""Starts the assistant's servers: their commands, ports, readiness, stop and logs.

Every place that runs the action server and the Rasa server uses this module:
``make run`` (scripts/supervise.py writes ``ACTION_SERVER`` and ``RASA_SERVER`` into
supervisord's configuration and deploy/systemd/ holds the same commands), the
integration tests (tests/integration/conftest.py), the fault drill (scripts/faults.py,
which starts ``make run`` itself through ``Process``), the benchmarks and the retrain
end-to-end test (``Servers``).

The Rasa server always runs with its HTTP API behind a token, as in production. The
token reaches it through ``RASA_API_TOKEN`` in its environment and
scripts/rasa_server.py, never its command line (every local user can read that).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from clinic_common import settings
from clinic_common.settings import LOOPBACK as LOOPBACK
from scripts.wait_ready import is_ready

ROOT = Path(__file__).resolve().parents[1]
# The commands, with environment variables as ``{NAME}`` (see ``expand``).
ACTION_SERVER: Tuple[str, ...] = (
    "{VENV}/bin/rasa", "run", "actions", "--port", "{ACTION_PORT}",
    "--actions", "actions",
)  # fmt: skip
RASA_SERVER: Tuple[str, ...] = (
    "{VENV}/bin/python", "-m", "scripts.rasa_server", "run",
    "--interface", LOOPBACK, "--port", "{RASA_PORT}",
    "--model", "{MODEL_PATH}", "--credentials", "credentials.yml",
    "--endpoints", "{ENDPOINTS}", "--enable-api",
)  # fmt: skip
# URLs that answer 200 once each server serves.
ACTION_PROBE = "http://127.0.0.1:{ACTION_PORT}/health"
RASA_PROBE = "http://127.0.0.1:{RASA_PORT}/"
ACTION_TIMEOUT = 120.0
RASA_TIMEOUT = 240.0  # loading the model
STOP_GRACE = 20.0


def expand(template: str, environ: Mapping[str, str]) -> str:
    """``template`` with each ``{NAME}`` replaced by the variable's value.

    ``{ENDPOINTS}`` is the settings' endpoints file, set or not (scripts/env.sh
    exports no default): ``endpoints.yml`` unless ENDPOINTS names another, relative
    to the project, where the Rasa server runs, when it is in it.

    Raises:
        KeyError: a variable is not set (scripts/env.sh sets them all).
        clinic_common.settings.SettingsError: ``{ENDPOINTS}`` with a bad setting.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name != "ENDPOINTS":
            return environ[name]
        config = settings.load(environ)
        if config.endpoints.is_relative_to(config.project_root):
            return str(config.endpoints.relative_to(config.project_root))
        return str(config.endpoints)

    return re.sub(r"\{([A-Z_]+)\}", value, template)


def free_port(preferred: int = 0, taken: Sequence[int] = ()) -> int:
    """``preferred`` if loopback has it free and it is not ``taken``, else any.

    Raises:
        OSError: no port could be bound.
    """
    for candidate in (preferred, 0) if preferred else (0,):
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, candidate))
            except OSError:
                continue
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port
    raise OSError(f"no free loopback port near {preferred}")


def process_stats() -> Dict[int, List[str]]:
    """Every process's ``/proc/<pid>/stat`` fields after ``pid (comm)``, by pid.

    The fields start with state, ppid, pgrp, session (``comm`` may hold spaces).
    """
    found: Dict[int, List[str]] = {}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            stat = (proc_dir / "stat").read_text()
        except OSError:  # it exited while being read
            continue
        found[int(proc_dir.name)] = stat[stat.rindex(")") + 2 :].split()
    return found


def session_pids(
    leader: int, stats: Optional[Dict[int, List[str]]] = None
) -> List[int]:
    """The processes of the session ``leader`` started (it and all its descendants).

    Every process here starts in a new session, which its children inherit, so this
    is its whole tree, children re-parented to init included. ``stats``: a
    :func:`process_stats` already read.
    """
    stats = process_stats() if stats is None else stats
    return [pid for pid, fields in stats.items() if int(fields[3]) == leader]


def signal_tree(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Sends ``sig`` to every process of ``process``'s session that is still there."""
    for pid in [process.pid, *session_pids(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop(
    process: subprocess.Popen[bytes],
    sig: signal.Signals = signal.SIGTERM,
    grace: float = STOP_GRACE,
) -> None:
    """Stops ``process`` and its tree: ``sig``, then SIGKILL after ``grace`` seconds.

    Whatever of the tree outlives the leader is killed too.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_tree(process, signal.SIGKILL)
            process.wait()
    signal_tree(process, signal.SIGKILL)


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float
) -> None:
    """Waits until ``url`` answers 200.

    Raises:
        RuntimeError: the process ended first, or the time ran out.
    """
    wait_until(lambda: is_ready(url), process, timeout, url)


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    timeout: float,
    what: str,
) -> None:
    """Polls ``ready`` every 0.25 s while ``process`` runs.

    Raises:
        RuntimeError: the process ended first, or ``timeout`` seconds went by.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} after {timeout:.0f} s")
        time.sleep(0.25)


class Process:
    """A command in its own session, its output appended to ``log``.

    Usable as a context manager: leaving the block stops its whole process tree.
    ``started`` is the monotonic time just before it was spawned.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path = ROOT,
    ) -> None:
        """Prepares (does not start) the process."""
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self.cwd = cwd
        self.started = 0.0
        self._popen: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> Process:
        """Spawns the command; returns itself."""
        with self.log.open("ab") as output:
            self.started = time.monotonic()
            self._popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __enter__(self) -> Process:
        """Starts the process."""
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Stops the process tree."""
        self.stop()

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """The started process.

        Raises:
            RuntimeError: it has not been started.
        """
        if self._popen is None:
            raise RuntimeError(f"not started: {self.argv[:3]}")
        return self._popen

    @property
    def pid(self) -> int:
        """The process id (also its session's and process group's)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it has been started and still runs."""
        return self._popen is not None and self._popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Its exit code; raises ``subprocess.TimeoutExpired`` after ``timeout``."""
        return self.popen.wait(timeout=timeout)

    def wait_ready(self, url: str, timeout: float) -> None:
        """Waits until ``url`` answers 200.

        Raises:
            RuntimeError: it exited first or ``timeout`` went by (with its log's end).
        """
        try:
            wait_until_ready(url, self.popen, timeout)
        except RuntimeError as error:
            raise RuntimeError(f"{error} ({self.log}):\n{self.log_tail()}") from None

    def stop(
        self, sig: signal.Signals = signal.SIGTERM, grace: float = STOP_GRACE
    ) -> None:
        """Stops its tree (``sig``, SIGKILL after ``grace`` s), if it was started."""
        if self._popen is not None:
            stop(self._popen, sig, grace)

    def kill(self) -> None:
        """Kills its tree at once (SIGKILL), as a crash would."""
        if self._popen is not None:
            signal_tree(self._popen, signal.SIGKILL)
            self._popen.wait()

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of its log, to explain a failure."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log})"
        return "\n".join(text.splitlines()[-lines:])


class Servers:
    """The action server and the Rasa server on loopback ports, as make run has them.

    ``env`` is the base environment (``os.environ`` when None); the ports, the state
    directory, the tracker database, the action server's URL and the API token are
    set here. Logs: ``<log_dir>/actions.log`` and ``<log_dir>/rasa.log``.
    """

    def __init__(
        self,
        state_dir: Path,
        model: Path,
        env: Optional[Mapping[str, str]] = None,
        *,
        ports: Tuple[int, int] = (0, 0),
        api_token: Optional[str] = None,
        rasa_cwd: Path = ROOT,
        log_dir: Optional[Path] = None,
    ) -> None:
        """Prepares both servers; ``ports`` are (Rasa, action), preferred if free.

        Raises:
            RuntimeError: there is no model at ``model``.
        """
        if not model.is_file():
            raise RuntimeError(f"No trained model at {model}: run 'make train' first.")
        rasa_port = free_port(ports[0])
        action_port = free_port(ports[1], taken=(rasa_port,))
        self.rasa_port, self.action_port = rasa_port, action_port
        self.model = model
        self.token = api_token or secrets.token_hex(24)  # never starts with "-"
        base = dict(os.environ if env is None else env)
        # The servers' own files and URL follow from the state folder and port, as
        # clinic_common.settings derives them, whatever the base environment says.
        own = settings.load(
            {"STATE_DIR": str(state_dir), "ACTION_PORT": str(action_port)}
        )
        self.env: Dict[str, str] = {
            **base,
            "RASA_TELEMETRY_ENABLED": "false",
            "SANIC_HOST": LOOPBACK,
            "PYTHONPATH": str(ROOT),
            "VENV": base.get("VENV") or str(Path(sys.executable).parents[1]),
            "STATE_DIR": str(state_dir),
            "TRACKER_DB": str(own.tracker_db),
            "MODEL_PATH": str(model),
            "RASA_PORT": str(rasa_port),
            "ACTION_PORT": str(action_port),
            "ACTION_SERVER_URL": own.action_server_url,
            "RASA_API_TOKEN": self.token,
        }
        logs = log_dir or state_dir
        self.actions = Process(
            self._argv(ACTION_SERVER), self.env, logs / "actions.log"
        )
        self.rasa = Process(
            self._argv(RASA_SERVER), self.env, logs / "rasa.log", cwd=rasa_cwd
        )

    def _argv(self, command: Tuple[str, ...]) -> List[str]:
        return [expand(arg, self.env) for arg in command]

    @property
    def url(self) -> str:
        """The Rasa server's base URL."""
        return f"http://{LOOPBACK}:{self.rasa_port}"

    @property
    def rest_url(self) -> str:
        """The REST channel's webhook."""
        return f"{self.url}/webhooks/rest/webhook"

    def start(self) -> Servers:
        """Starts the action server, then the Rasa server, each until it answers.

        Raises:
            RuntimeError: one exited or did not answer in time (the others stop).
        """
        try:
            self.start_actions()
            self.start_rasa()
        except BaseException:
            self.close()
            raise
        return self

    def start_actions(self, wait: bool = True) -> None:
        """Starts (again) the action server on its port; waits until it answers."""
        self.actions.stop()
        self.actions.start()
        if wait:
            self.actions.wait_ready(expand(ACTION_PROBE, self.env), ACTION_TIMEOUT)

    def start_rasa(self, wait: bool = True) -> None:
        """Starts (again) the Rasa server on its port; waits until it answers."""
        self.rasa.stop()
        self.rasa.start()
        if wait:
            self.rasa.wait_ready(expand(RASA_PROBE, self.env), RASA_TIMEOUT)

    def close(self) -> None:
        """Stops both servers (the Rasa server first)."""
        self.rasa.stop()
        self.actions.stop()

    def __enter__(self) -> Servers:
        """Starts both servers."""
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Stops both servers."""
        self.close()
