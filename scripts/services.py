"""PostgreSQL, Redis and nginx as the scaled profile runs them (Debian's binaries).

Their configuration and data are in the state folder; no system service is used.

``make run-scaled`` (scripts/run_scaled.py) starts one of each; a test that needs a
throwaway PostgreSQL starts ``Postgres`` in a temporary folder the same way. Each
listens on loopback only, except nginx's public server. PostgreSQL refuses to run as
root, Redis and nginx's workers should not: as root each runs under its Debian
account (``postgres``, ``redis``, ``www-data``), and the folders they need are
theirs (``own_folder``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import redis
import sqlalchemy as sa

from clinic_common.settings import LOOPBACK
from scripts.launcher import Process

PG_VERSIONS = ("17", "16", "15", "14", "13")
PG_SUPERUSER = "postgres"
REDIS_SERVER = "redis-server"
NGINX = "nginx"
# The Debian package that brings each program (scripts/install_services.sh).
PACKAGES = {
    "postgresql": "postgresql-15",
    REDIS_SERVER: "redis-server",
    NGINX: "nginx-light",
}
COMMAND_TIMEOUT = 120.0


class MissingPackage(RuntimeError):
    """A Debian package the profile needs is not installed; the message names it."""


def running_as_root() -> bool:
    """Whether this process is root (then the services run under their accounts)."""
    return os.geteuid() == 0


def as_account(account: str) -> List[str]:
    """The command prefix that runs a program as ``account`` when root, else none."""
    if not running_as_root():
        return []
    return [str(find_program("runuser")), "-u", account, "--"]


def own_folder(folder: Path, account: str) -> Path:
    """``folder`` created mode 700, owned by ``account`` when root.

    Its parent is made traversable (mode 711: no listing) so that the account can
    reach it; the parent's files stay as private as their own modes make them.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    if running_as_root():
        shutil.chown(folder, account, account)
        folder.parent.chmod(folder.parent.stat().st_mode & 0o777 | 0o711)
    return folder


def secret(path: Path) -> str:
    """The password kept in ``path`` (mode 600), generated on first use."""
    if path.is_file():
        saved = path.read_text(encoding="utf-8").strip()
        if saved:
            return saved
    value = secrets.token_hex(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(value + "\n")
    path.chmod(0o600)
    return value


def find_program(name: str, folders: Sequence[Path] = ()) -> Path:
    """A program from ``folders`` or PATH (or /usr/sbin, which root's PATH has).

    Raises:
        MissingPackage: not found; the message names the Debian package.
    """
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        package = PACKAGES.get(name, name)
        raise MissingPackage(
            f"{name} is not installed: run scripts/install_services.sh as root "
            f"(or sudo apt-get install {package})."
        )
    return Path(found)


def postgres_bin() -> Path:
    """Debian's PostgreSQL binaries folder (initdb, pg_ctl), newest first.

    Raises:
        MissingPackage: no PostgreSQL server is installed.
    """
    folders = [Path("/usr/lib/postgresql") / version / "bin" for version in PG_VERSIONS]
    try:
        return find_program("initdb", folders).parent
    except MissingPackage:
        raise MissingPackage(
            "PostgreSQL (initdb, pg_ctl) is not installed: run "
            "scripts/install_services.sh as root (or sudo apt-get install "
            f"{PACKAGES['postgresql']})."
        ) from None


def require_packages() -> None:
    """Checks that PostgreSQL, Redis and nginx are installed, before any starts.

    Raises:
        MissingPackage: one is not; the message names its Debian package.
    """
    postgres_bin()
    find_program(REDIS_SERVER)
    find_program(NGINX)


class Postgres:
    """A PostgreSQL cluster in ``root`` (``data/``, ``server.log``) on a loopback port.

    Created with initdb and started and stopped with pg_ctl. No Unix socket: every
    connection is TCP on loopback with a password (scram-sha-256); the superuser's
    password is kept in ``root/superuser.password`` (mode 600).
    """

    def __init__(
        self,
        root: Path,
        port: int,
        max_connections: int = 100,
        bin_dir: Optional[Path] = None,
    ) -> None:
        """Prepares (does not create or start) the cluster."""
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self.max_connections = max_connections
        self.bin_dir = bin_dir or postgres_bin()
        self.as_user = as_account("postgres")

    def _run(self, program: str, *args: str, check: bool = True) -> int:
        """Runs one of PostgreSQL's programs as its account; its exit code.

        Raises:
            RuntimeError: it failed and ``check`` is set (with its error output).
        """
        command = [*self.as_user, str(self.bin_dir / program), *args]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr[-2000:]}")
        return done.returncode

    @property
    def superuser_password(self) -> str:
        """The superuser's password (generated with the cluster)."""
        return secret(self.root / "superuser.password")

    def _initdb(self) -> None:
        """Creates the cluster, its superuser's password read from a passing file."""
        pwfile = self.root / "initdb.pwfile"  # the root folder is the account's
        pwfile.write_text(self.superuser_password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if running_as_root():
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", PG_SUPERUSER, "-E", "UTF8",
                "--auth=scram-sha-256", f"--pwfile={pwfile}", "--locale=C.UTF-8",
            )  # fmt: skip
        finally:
            pwfile.unlink()

    def start(self) -> None:
        """Creates the cluster if it is not there, then starts it; waits until ready."""
        own_folder(self.root, "postgres")
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        # Left running by a run that was killed: started again with this run's port.
        self.stop()
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} "
            f"-c unix_socket_directories='' -c max_connections={self.max_connections}"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "-t", str(int(COMMAND_TIMEOUT)), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stops the cluster (``fast``: disconnects clients, rolls back); if running."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(
        self,
        database: str,
        username: str = PG_SUPERUSER,
        password: Optional[str] = None,
    ) -> sa.engine.URL:
        """SQLAlchemy's URL of ``database`` (the superuser's unless told)."""
        return sa.engine.URL.create(
            "postgresql",
            username=username,
            password=self.superuser_password if password is None else password,
            host=LOOPBACK,
            port=self.port,
            database=database,
        )

    def running(self) -> bool:
        """Whether the cluster's server runs (``pg_ctl status``)."""
        if not (self.data / "PG_VERSION").is_file():
            return False
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False) == 0

    def create_database(
        self, name: str, owner: Optional[str] = None, password: Optional[str] = None
    ) -> None:
        """Creates the database ``name`` (and login role ``owner``) unless they exist.

        A role that exists gets ``password`` again, so the saved one always works.
        """
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        quoted = engine.dialect.identifier_preparer.quote
        try:
            with engine.connect() as connection:
                if owner is not None:
                    exists = connection.execute(
                        sa.text("SELECT 1 FROM pg_roles WHERE rolname = :name"),
                        {"name": owner},
                    ).first()
                    verb = "ALTER" if exists else "CREATE"
                    # Identifiers and passwords cannot be bound parameters here.
                    literal = (password or "").replace("'", "''")
                    connection.execute(
                        sa.text(
                            f"{verb} ROLE {quoted(owner)} LOGIN PASSWORD '{literal}'"
                        )
                    )
                found = connection.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": name},
                ).first()
                if not found:
                    owned = f" OWNER {quoted(owner)}" if owner else ""
                    connection.execute(
                        sa.text(f"CREATE DATABASE {quoted(name)}{owned}")
                    )
        finally:
            engine.dispose()


@dataclass(frozen=True)
class Redis:
    """A Redis server on a loopback port, with a password, no persistence.

    Rasa's lock store keeps only short-lived locks in it, so nothing is written to
    disk (``save ""``, no append-only file). ``daemonize no``: it runs as a
    ``launcher.Process`` and its log is that process's output.
    """

    root: Path
    port: int
    password: str

    def config(self) -> str:
        """redis.conf for this server."""
        return "\n".join(
            [
                f"bind {LOOPBACK}",
                "protected-mode yes",
                f"port {self.port}",
                "daemonize no",
                'logfile ""',
                f"dir {self.root}",
                'save ""',
                "appendonly no",
                f"requirepass {self.password}",
                "",
            ]
        )

    def process(self, env: Mapping[str, str], log: Path) -> Process:
        """The server's process (not started), its config written (mode 600)."""
        own_folder(self.root, "redis")
        conf = self.root / "redis.conf"
        descriptor = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(self.config())
        if running_as_root():
            shutil.chown(conf, "redis", "redis")
        argv = [*as_account("redis"), str(find_program(REDIS_SERVER)), str(conf)]
        return Process(argv, env, log)

    def ready(self) -> bool:
        """Whether the server answers PING with the password."""
        client = redis.Redis(host=LOOPBACK, port=self.port, password=self.password)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


@dataclass(frozen=True)
class Upstream:
    """An nginx upstream: a name, its loopback ports and how it balances."""

    name: str
    ports: Sequence[int]
    balance: str = "least_conn"  # or "ip_hash" (sticky by client address)

    def block(self) -> str:
        """The ``upstream`` block."""
        servers = "".join(f"    server {LOOPBACK}:{port};\n" for port in self.ports)
        return f"  upstream {self.name} {{\n    {self.balance};\n{servers}  }}\n"


@dataclass(frozen=True)
class RequestLimit:
    """nginx's limit on the requests one client address sends to some URIs.

    A backstop in front of the channels' own limits (channels/rate_limit.py), which
    answer a flooding sender politely: this one only stops an address whose flood
    would otherwise reach the Rasa servers, with a 429 (never a 5xx) and nothing in
    the logs (a client address is patient data).
    """

    zone: str  # also names the map variable: letters and underscores
    uris: str  # a regular expression of the URIs it counts
    rate: int  # requests per second, sustained
    burst: int  # requests at once beyond the rate

    def block(self) -> str:
        """The ``map``, ``limit_req_zone`` and ``limit_req`` lines (http level).

        Requests to other URIs get an empty key, which nginx does not count, so the
        limit applies in every ``server`` without a line in any of them.
        """
        key = f"${self.zone}_client"
        return (
            f'  map $uri {key} {{\n    default "";\n'
            f'    "~{self.uris}" $binary_remote_addr;\n  }}\n'
            f"  limit_req_zone {key} zone={self.zone}:10m rate={self.rate}r/s;\n"
            f"  limit_req zone={self.zone} burst={self.burst} nodelay;\n"
        )


PATIENT_LIMITS = (
    # Twilio posts every patient's SMS from a few addresses of its own: generous
    # (above what the Rasa servers can answer, so make bench-scale and make chaos,
    # which post from one address, never reach it), against floods of forged posts.
    RequestLimit("twilio_webhook", r"^/webhooks/twilio/webhook$", rate=200, burst=1000),
    # A widget makes a few requests per message (long polling) and a waiting
    # room's patients may share one address.
    RequestLimit("socket_io", r"^/socket\.io/", rate=20, burst=200),
)

# For the Twilio webhook's location only: a request that fails on one Rasa server
# (connection refused or reset, say by a server killed mid-request, or no answer in
# time) is sent to another, POSTs included. A repeat is harmless there: the webhook
# stores each text with its MessageSid in the SMS inbox (channels/sms_inbox.py) and
# answers a SID it has seen without handling it again. The body (a small form) is
# kept in memory so that it can be sent again; unbuffered, it could not.
RESEND_TO_ANOTHER_SERVER = (
    "    proxy_request_buffering on;\n"
    "    client_body_buffer_size 64k;\n"
    "    proxy_next_upstream error timeout non_idempotent;\n"
)


@dataclass(frozen=True)
class Nginx:
    """nginx with a configuration generated in ``prefix`` (pid, logs, temp files).

    ``servers`` are the ``server`` blocks (see scripts/run_scaled.py); ``upstreams``
    the backends they proxy to; ``limits`` the requests each client address may send
    to patients' URIs. ``daemon off``: it runs as a ``launcher.Process``.
    """

    prefix: Path
    upstreams: Sequence[Upstream]
    servers: Sequence[str]
    # PATIENT_LIMITS as they are when the configuration is made (tests shrink them).
    limits: Sequence[RequestLimit] = field(default_factory=lambda: PATIENT_LIMITS)

    def config(self) -> str:
        """nginx.conf: workers as www-data when root, every path in the prefix."""
        temp = self.prefix / "temp"
        paths = "".join(
            f"  {kind}_temp_path {temp / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user www-data;\n" if running_as_root() else ""
        return (
            f"{user}worker_processes 1;\ndaemon off;\n"
            f"pid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.prefix / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            # No access log: it would keep patients' addresses and times.
            "  access_log off;\n  server_tokens off;\n"
            # Bodies (conversations, trackers) pass through and are never written
            # to temporary files.
            "  proxy_request_buffering off;\n  proxy_max_temp_file_size 0;\n"
            f"{paths}"
            "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n"
            # Over a limit: 429, and no log line naming the client's address.
            "  limit_req_status 429;\n  limit_req_log_level info;\n"
            + "".join(limit.block() for limit in self.limits)
            + "".join(upstream.block() for upstream in self.upstreams)
            + "".join(self.servers)
            + "}\n"
        )

    def process(self, env: Mapping[str, str], log: Path) -> Process:
        """The nginx process (not started), its configuration written and tested.

        Raises:
            RuntimeError: ``nginx -t`` rejects the configuration (its message).
        """
        (self.prefix / "temp").mkdir(mode=0o700, parents=True, exist_ok=True)
        if running_as_root():  # the workers reach their temp folders
            self.prefix.chmod(0o711)
            (self.prefix / "temp").chmod(0o711)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config(), encoding="utf-8")
        argv = [str(find_program(NGINX)), "-p", str(self.prefix), "-c", str(conf)]
        tested = subprocess.run(
            [*argv, "-t", "-q"], capture_output=True, text=True, check=False
        )
        if tested.returncode != 0:
            raise RuntimeError(f"nginx rejects {conf}: {tested.stderr.strip()}")
        return Process(argv, env, log)
