"""The scaled profile on one machine: ``make run-scaled``.

PostgreSQL (conversations), Redis (Rasa's lock store), M action servers, N Rasa
servers, the demo page, the staff page (with STAFF_PASSWORD), the daily retention
job (one for the profile, scripts/daily.py) and nginx in front, started in that
order, each until it answers; Ctrl-C or SIGTERM stops them in the reverse order.
Everything but nginx's public ports listens on loopback. Through
nginx: the Twilio webhook (any Rasa server), Socket.IO (sticky by client address,
WebSocket upgrades) and the widget's demo page and file on NGINX_PORT, and the staff
page on STAFF_PUBLIC_PORT. Neither REST nor Rasa's HTTP API is exposed. With more
than one action server, the Rasa servers reach them through an nginx upstream on a
loopback port. The Rasa servers read deploy/scaled/endpoints.yml.

Usage: python -m scripts.run_scaled [--rasa-servers N] [--action-servers M]
       [--port NGINX_PORT] [--listen ADDRESS] [--public-url URL]
Each option's default comes from the variable of the same name (RASA_SERVERS,
ACTION_SERVERS, NGINX_PORT, NGINX_LISTEN, PUBLIC_URL): 2, 1, 8088, 0.0.0.0,
http://127.0.0.1:NGINX_PORT. A part that stops by itself (a crash, kill -9) is
started again. Exit codes: 3 when a Debian package is missing, 1 when a part fails to
start or keeps stopping (RESTART_LIMIT times in RESTART_WINDOW seconds).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Type

from clinic_common import settings
from clinic_common.settings import LOOPBACK
from scripts import api_token
from scripts.launcher import (
    ACTION_PROBE,
    ACTION_SERVER,
    ACTION_TIMEOUT,
    RASA_PROBE,
    RASA_SERVER,
    RASA_TIMEOUT,
    ROOT,
    Process,
    expand,
    free_port,
    wait_until,
)
from scripts.services import (
    RESEND_TO_ANOTHER_SERVER,
    MissingPackage,
    Nginx,
    Postgres,
    Redis,
    Upstream,
    require_packages,
    secret,
)
from scripts.supervise import REMINDER_JOB, RETENTION_JOB

ENDPOINTS = ROOT / "deploy" / "scaled" / "endpoints.yml"
DATABASE = "clinic"
DB_USER = "clinic"
# Connections per Rasa server: SQL_POOL_SIZE kept open, SQL_MAX_OVERFLOW more at
# peaks. PostgreSQL's max_connections is sized from them (plus the staff tools).
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
SPARE_CONNECTIONS = 20
SANIC_BACKLOG = 1024  # below Linux's net.core.somaxconn (4096 here)
SERVICE_TIMEOUT = 30.0
# A part that stops by itself (a crash, kill -9) is started again, unless it
# stopped this many times within RESTART_WINDOW seconds: then it is broken.
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
# The headers every proxied request carries, so that the backends see the public
# host (the Twilio signature) and the client's address.
PROXY_HEADERS = (
    "    proxy_set_header Host $http_host;\n"
    "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
    "    proxy_set_header X-Forwarded-Proto $scheme;\n"
)


@dataclass(frozen=True)
class Options:
    """How many servers, and where nginx listens."""

    rasa_servers: int
    action_servers: int
    port: int
    listen: str
    public_url: str
    staff_port: int  # nginx's public port for the staff page


def parse_options(argv: Sequence[str], environ: Mapping[str, str]) -> Options:
    """The options from ``argv``, defaults from ``environ`` (see the module's doc)."""

    def default(name: str, fallback: str) -> str:
        return environ.get(name) or fallback

    parser = argparse.ArgumentParser(prog="python -m scripts.run_scaled")
    parser.add_argument(
        "--rasa-servers", type=int, default=int(default("RASA_SERVERS", "2"))
    )
    parser.add_argument(
        "--action-servers", type=int, default=int(default("ACTION_SERVERS", "1"))
    )
    parser.add_argument("--port", type=int, default=int(default("NGINX_PORT", "8088")))
    parser.add_argument("--listen", default=default("NGINX_LISTEN", "0.0.0.0"))
    parser.add_argument("--public-url", default=environ.get("PUBLIC_URL") or None)
    args = parser.parse_args(argv)
    if args.rasa_servers < 1 or args.action_servers < 1:
        parser.error("--rasa-servers and --action-servers must be 1 or more")
    return Options(
        rasa_servers=args.rasa_servers,
        action_servers=args.action_servers,
        port=args.port,
        listen=args.listen,
        public_url=(args.public_url or f"http://{LOOPBACK}:{args.port}").rstrip("/"),
        staff_port=int(default("STAFF_PUBLIC_PORT", str(args.port + 1))),
    )


def public_server(options: Options, web_port: int) -> str:
    """The public ``server`` block: Twilio, Socket.IO, the demo page; nothing else."""
    web = f"http://{LOOPBACK}:{web_port}"
    return (
        f"  server {{\n    listen {options.listen}:{options.port};\n"
        "    client_max_body_size 64k;\n"
        # A webhook request a dying server dropped goes to another one: safe, as a
        # repeated MessageSid is acknowledged and not handled again.
        "    location = /webhooks/twilio/webhook {\n"
        f"{PROXY_HEADERS}{RESEND_TO_ANOTHER_SERVER}"
        "    proxy_pass http://rasa;\n    }\n"
        # Rasa's Socket.IO has no shared queue: a client stays on one server.
        "    location /socket.io/ {\n"
        f"{PROXY_HEADERS}    proxy_pass http://rasa_sticky;\n"
        "    proxy_http_version 1.1;\n"
        "    proxy_set_header Upgrade $http_upgrade;\n"
        "    proxy_set_header Connection $connection_upgrade;\n"
        "    proxy_read_timeout 120s;\n    proxy_buffering off;\n    }\n"
        + "".join(
            f"    location {where} {{\n{PROXY_HEADERS}    proxy_pass {web};\n    }}\n"
            for where in ("= /", "/demo/", "/dist/")
        )
        # REST and Rasa's HTTP API (/model, /conversations, ...) stay on loopback.
        + "    location / {\n      return 404;\n    }\n  }\n"
    )


def proxy_server(listen: str, port: int, backend: str) -> str:
    """A ``server`` block that passes everything to ``backend``."""
    return (
        f"  server {{\n    listen {listen}:{port};\n    location / {{\n"
        f"{PROXY_HEADERS}    proxy_pass {backend};\n    }}\n  }}\n"
    )


def wait_for(process: Process, ready: Callable[[], bool], what: str) -> None:
    """Waits until ``ready`` while ``process`` runs (its log's end on failure)."""
    try:
        wait_until(ready, process.popen, SERVICE_TIMEOUT, what)
    except RuntimeError as error:
        raise RuntimeError(f"{error} ({process.log}):\n{process.log_tail()}") from None


class ScaledProfile:
    """Every part of the scaled profile, on free loopback ports.

    ``env`` is the base environment; ``state_dir`` holds PostgreSQL's cluster, Redis's
    and nginx's folders, the passwords (mode 600) and ``logs/``.
    """

    def __init__(
        self, state_dir: Path, model: Path, options: Options, env: Mapping[str, str]
    ) -> None:
        """Chooses the ports and writes nothing yet.

        Raises:
            RuntimeError: there is no model at ``model``.
            MissingPackage: a Debian package is not installed.
        """
        if not model.is_file():
            raise RuntimeError(f"No trained model at {model}: run 'make train' first.")
        require_packages()
        self.options = options
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        taken: List[int] = [options.port, options.staff_port]

        def port(preferred: int = 0) -> int:
            taken.append(free_port(preferred, taken))
            return taken[-1]

        pool = int(env.get("SQL_POOL_SIZE") or DEFAULT_POOL_SIZE)
        overflow = int(env.get("SQL_MAX_OVERFLOW") or DEFAULT_MAX_OVERFLOW)
        base = settings.load(env)
        # The small stores' pool (STORE_POOL_SIZE) in every process that opens
        # them: the Rasa servers (channels), the action servers (scheduler,
        # call-backs), the staff page, the retention and the reminder jobs.
        store_processes = options.rasa_servers + options.action_servers + 3
        self.postgres = Postgres(
            state_dir / "postgres",
            port(5433),
            max_connections=options.rasa_servers * (pool + overflow)
            + store_processes * base.store_pool_size
            + SPARE_CONNECTIONS,
        )
        self.redis = Redis(
            state_dir / "redis", port(6380), secret(self._secret("redis"))
        )
        self.rasa_ports = [port() for _ in range(options.rasa_servers)]
        self.action_ports = [port() for _ in range(options.action_servers)]
        self.actions_lb_port = port() if options.action_servers > 1 else 0
        self.web_port, self.staff_port = port(), port()
        action_port = self.actions_lb_port or self.action_ports[0]
        origin = options.public_url
        self.env: Dict[str, str] = {
            **env,
            "RASA_TELEMETRY_ENABLED": "false",
            "SANIC_HOST": LOOPBACK,
            # Connections a Rasa server's listening socket queues before its busy
            # event loop accepts them (Rasa's default is 100). nginx opens one per
            # request: 200 patients' texts at once overflowed it, and 29 webhook
            # posts were reset (bench-scale, 1 server at 200 conversations).
            "SANIC_BACKLOG": env.get("SANIC_BACKLOG") or str(SANIC_BACKLOG),
            "PYTHONPATH": str(ROOT),
            "VENV": env.get("VENV") or str(Path(sys.executable).parents[1]),
            "STATE_DIR": str(state_dir),
            # The Rasa servers' --endpoints and the staff tools' tracker store.
            "ENDPOINTS": str(ENDPOINTS),
            "MODEL_PATH": str(model),
            "ACTION_SERVER_URL": f"http://{LOOPBACK}:{action_port}/webhook",
            "RASA_API_TOKEN": api_token.api_token(state_dir, env),
            "POSTGRES_HOST": LOOPBACK,
            "POSTGRES_PORT": str(self.postgres.port),
            "POSTGRES_DB": DATABASE,
            "POSTGRES_USER": DB_USER,
            "POSTGRES_PASSWORD": secret(self._secret("postgres-clinic")),
            "SQL_POOL_SIZE": str(pool),
            "SQL_MAX_OVERFLOW": str(overflow),
            # Bookings, call-backs and the channels' store, shared by all servers.
            "STORE_DATABASE_URL": self.postgres.url(
                DATABASE, DB_USER, secret(self._secret("postgres-clinic"))
            ).render_as_string(hide_password=False),
            "STORE_POOL_SIZE": str(base.store_pool_size),
            "REDIS_HOST": LOOPBACK,
            "REDIS_PORT": str(self.redis.port),
            "REDIS_PASSWORD": self.redis.password,
            "WEB_PORT": str(self.web_port),
            "STAFF_PORT": str(self.staff_port),
            "WIDGET_ALLOWED_ORIGINS": ",".join(base.widget_allowed_origins)
            if env.get("WIDGET_ALLOWED_ORIGINS")
            else origin,
            "TWILIO_WEBHOOK_URL": env.get("TWILIO_WEBHOOK_URL")
            or f"{origin}/webhooks/twilio/webhook",
        }
        self.staff_enabled = bool(base.staff_password)
        self.processes: List[Process] = []  # started ones, in order
        self._restarts: Dict[str, List[float]] = {}  # log name: restart times

    def _secret(self, name: str) -> Path:
        return self.state_dir / f"{name}.password"

    def _process(self, name: str, argv: Sequence[str], **extra: str) -> Process:
        env = {**self.env, **extra}
        return Process(
            [expand(arg, env) for arg in argv], env, self.logs / f"{name}.log"
        )

    def _started(self, process: Process) -> Process:
        self.processes.append(process.start())
        return process

    def nginx(self) -> Nginx:
        """The nginx configuration for these ports."""
        upstreams = [
            Upstream("rasa", self.rasa_ports),
            Upstream("rasa_sticky", self.rasa_ports, "ip_hash"),
        ]
        servers = [public_server(self.options, self.web_port)]
        if self.staff_enabled:
            staff = f"http://{LOOPBACK}:{self.staff_port}"
            servers.append(
                proxy_server(self.options.listen, self.options.staff_port, staff)
            )
        if self.actions_lb_port:
            upstreams.append(Upstream("actions", self.action_ports))
            servers.append(
                proxy_server(LOOPBACK, self.actions_lb_port, "http://actions")
            )
        return Nginx(self.state_dir / "nginx", upstreams, servers)

    def start(self) -> ScaledProfile:
        """Starts every part in order, each until it answers.

        Raises:
            RuntimeError: a part failed (the ones started are stopped again).
        """
        self.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._start_stores()
            actions = [
                self._started(
                    self._process(f"actions-{i}", ACTION_SERVER, ACTION_PORT=str(p))
                )
                for i, p in enumerate(self.action_ports, 1)
            ]
            rasa = [
                self._started(self._process(f"rasa-{i}", RASA_SERVER, RASA_PORT=str(p)))
                for i, p in enumerate(self.rasa_ports, 1)
            ]
            for process, action_port in zip(actions, self.action_ports, strict=True):
                probe = expand(ACTION_PROBE, {"ACTION_PORT": str(action_port)})
                process.wait_ready(probe, ACTION_TIMEOUT)
            for process, rasa_port in zip(rasa, self.rasa_ports, strict=True):
                process.wait_ready(
                    expand(RASA_PROBE, {"RASA_PORT": str(rasa_port)}), RASA_TIMEOUT
                )
            self._start_pages()
            # One daily retention job for the whole profile (clinicbot retention
            # at start and at 03:00), on the same stores as the servers.
            self._started(self._process("retention", RETENTION_JOB.command))
            # One reminder job (any Rasa server: they share the conversations).
            self._started(
                self._process(
                    "reminders",
                    REMINDER_JOB.command,
                    RASA_URL=f"http://{LOOPBACK}:{self.rasa_ports[0]}",
                )
            )
            nginx = self._started(
                self.nginx().process(self.env, self.logs / "nginx.log")
            )
            nginx.wait_ready(f"{self.url}/demo/", SERVICE_TIMEOUT)
        except BaseException:
            self.close()
            raise
        return self

    def _start_stores(self) -> None:
        """PostgreSQL with the assistant's database and tables, then Redis."""
        self.postgres.start()
        self.postgres.create_database(DATABASE, DB_USER, self.env["POSTGRES_PASSWORD"])
        create_tracker_tables(self.env)
        redis = self._started(self.redis.process(self.env, self.logs / "redis.log"))
        wait_for(redis, self.redis.ready, "answering PING")

    def _start_pages(self) -> None:
        """The demo page (pointing at nginx); the staff page with STAFF_PASSWORD."""
        web = self._started(
            self._process(
                "web",
                (
                    "{VENV}/bin/python",
                    "scripts/serve_web.py",
                    "--port",
                    "{WEB_PORT}",
                    "--server-url",
                    self.options.public_url,
                ),
            )
        )
        web.wait_ready(f"http://{LOOPBACK}:{self.web_port}/demo/", SERVICE_TIMEOUT)
        if self.staff_enabled:
            staff = self._started(
                self._process(
                    "staff",
                    ("{VENV}/bin/python", "-m", "staff.web", "--port", "{STAFF_PORT}"),
                )
            )
            staff.wait_ready(
                f"http://{LOOPBACK}:{self.staff_port}/login", SERVICE_TIMEOUT
            )

    @property
    def url(self) -> str:
        """The public server's URL, as reached from this machine."""
        host = (
            LOOPBACK if self.options.listen in ("0.0.0.0", "*") else self.options.listen
        )
        return f"http://{host}:{self.options.port}"

    @property
    def staff_url(self) -> str:
        """The staff page's URL through nginx, as reached from this machine."""
        return f"{self.url.rsplit(':', 1)[0]}:{self.options.staff_port}/"

    def summary(self) -> str:
        """Where everything runs, for the terminal."""
        public = self.options.public_url
        lines = [
            f"Scaled profile: {len(self.rasa_ports)} Rasa server(s), "
            f"{len(self.action_ports)} action server(s), PostgreSQL, Redis, nginx.",
            f"  Website widget (demo page): {public}/",
            f"  Twilio webhook:             {public}/webhooks/twilio/webhook",
        ]
        if self.staff_enabled:
            lines.append(f"  Staff page:                 {self.staff_url}")
        lines += [
            f"  Rasa servers (loopback):    {', '.join(map(str, self.rasa_ports))}",
            f"  Action servers:             {self.env['ACTION_SERVER_URL']}",
            f"  PostgreSQL: {LOOPBACK}:{self.postgres.port} database {DATABASE}; "
            f"Redis: {LOOPBACK}:{self.redis.port}",
            f"  Logs: {self.logs}/ and {self.postgres.log}. Ctrl-C stops everything.",
        ]
        return "\n".join(lines)

    def restart_stopped(self) -> List[Process]:
        """Starts again each part that stopped by itself; the ones restarted.

        nginx sends the Rasa and action servers' requests to the others meanwhile.

        Raises:
            RuntimeError: a part stopped ``RESTART_LIMIT`` times in
                ``RESTART_WINDOW`` seconds (the profile is left running).
        """
        stopped = [p for p in self.processes if not p.alive()]
        now = time.monotonic()
        for process in stopped:
            times = self._restarts.setdefault(process.log.stem, [])
            times[:] = [t for t in times if now - t < RESTART_WINDOW] + [now]
            if len(times) > RESTART_LIMIT:
                raise RuntimeError(
                    f"{process.log.stem} keeps stopping ({process.log}):\n"
                    f"{process.log_tail()}"
                )
            process.start()
        return stopped

    def close(self) -> None:
        """Stops every part in the reverse order of starting."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self.postgres.stop()

    def __enter__(self) -> ScaledProfile:
        """Starts everything."""
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Stops everything."""
        self.close()


def create_tracker_tables(env: Mapping[str, str]) -> None:
    """Creates Rasa's ``events`` table once, before several servers start at once.

    Each Rasa server creates the table when missing; two doing it at the same moment
    on PostgreSQL can fail on the catalogue's unique index.
    """
    from rasa.core.tracker_store import SQLTrackerStore

    with warnings.catch_warnings():  # Rasa's own use of a deprecated SQLAlchemy call
        warnings.simplefilter("ignore")
        store = SQLTrackerStore(
            None,
            dialect="postgresql",
            host=env["POSTGRES_HOST"],
            port=int(env["POSTGRES_PORT"]),
            db=env["POSTGRES_DB"],
            username=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
        )
    store.engine.dispose()


def _stop_on_signal(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the profile until Ctrl-C, SIGTERM or a part keeps stopping; exit code."""
    options = parse_options(sys.argv[1:] if argv is None else argv, os.environ)
    os.umask(0o077)  # conversations and passwords are for this account only
    config = settings.load()
    config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Both stop everything, even when started where SIGINT was ignored (``&``).
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stop_on_signal)
    started = time.monotonic()
    try:
        profile = ScaledProfile(
            config.state_dir, config.model_path, options, os.environ
        )
        with profile:
            took = time.monotonic() - started
            print(f"{profile.summary()}\n  Started in {took:.0f} s.", flush=True)
            while True:
                for process in profile.restart_stopped():
                    print(
                        f"{process.log.stem} stopped; started again ({process.log}).",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(1)
    except MissingPackage as missing:
        print(f"error: {missing}", file=sys.stderr)
        return 3
    except (RuntimeError, api_token.TokenError, settings.SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
