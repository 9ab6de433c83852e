"""Every setting of every process, read from the environment in one place.

The Rasa server's components, the action server, the channels, the staff tools and
the scripts all call :func:`load`, so each variable's default is written once, here
(README.md, "Settings", lists them). ``scripts/env.sh`` exports some of the same
defaults for the shell and for Rasa's ``${VAR}`` placeholders in ``endpoints.yml``;
``tests/test_settings.py`` checks that the two agree.

An empty variable counts as unset. A bad value raises :class:`SettingsError`, whose
message names the variable, except for the two settings that must never stop the
assistant (``ACTION_SERVER_TIMEOUT``, ``SMS_RETRY_WINDOW_SECONDS``): a bad value of
those is logged and the default used.

Nothing is read at import time, and nothing is cached: a test (or a process that
changes its environment) gets the current values from the next :func:`load`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where this code is
DEFAULT_CLINIC_CONFIG = PROJECT_ROOT / "clinic.yml"

# The retrieval intent of the FAQ answers (``faq/<topic>``, ``utter_faq/<topic>``),
# named here so the action server, the staff tools and the scripts share it without
# importing one another.
RETRIEVAL_INTENT = "faq"

LOOPBACK = "127.0.0.1"
DEFAULT_RASA_PORT = 5005
DEFAULT_ACTION_PORT = 5055
DEFAULT_WEB_PORT = 8080
DEFAULT_STAFF_PORT = 8090
DEFAULT_HEALTH_PORT = 5006
DEFAULT_SCHEDULER_BACKEND = "sqlite"
DEFAULT_SCHEDULER_TIMEOUT = 5.0  # seconds before a remote scheduler counts as down
DEFAULT_ACTION_SERVER_TIMEOUT = 15.0  # seconds the Rasa server waits for an action
DEFAULT_SMS_RETRY_WINDOW = 3600.0  # seconds an SMS reply is retried
DEFAULT_RATE_LIMIT_PER_SECOND = 2.0  # messages per second of one sender, sustained
DEFAULT_RATE_LIMIT_BURST = 20.0  # messages one sender may send at once
DEFAULT_STAFF_USERNAME = "staff"
DEFAULT_MIN_HELDOUT_ACCURACY = 0.90
DEFAULT_RETENTION_DAYS = 90.0  # conversations whose last event is older go
DEFAULT_BOOKING_RETENTION_DAYS = 90.0  # past visits lose the patient's name and phone
DEFAULT_STORE_POOL_SIZE = 4  # PostgreSQL connections per process for the small stores
DEFAULT_LOCK_WAIT_SECONDS = 20.0  # a message waits this long for its conversation
DEFAULT_REMINDER_POLL_SECONDS = 60.0  # the reminder job looks for due reminders


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """The settings of this process (README.md, "Settings", says what each does)."""

    project_root: Path
    state_dir: Path
    clinic_config: Path
    scheduler_backend: str
    scheduler_db: Path
    scheduler_timeout: float
    fhir_base_url: str
    fhir_auth_token: Optional[str] = field(repr=False)
    fhir_schedule_ids: Tuple[str, ...]
    fhir_visit_type_codes: str
    scheduler_webhook_url: str
    scheduler_webhook_secret: str = field(repr=False)
    callback_db: Path
    channel_db: Path
    store_database_url: str = field(repr=False)  # may hold a password
    store_pool_size: int
    tracker_db: Path
    endpoints: Path
    model_path: Path
    rasa_port: int
    action_port: int
    web_port: int
    staff_port: int
    health_port: int
    rasa_url: str
    action_server_url: str
    action_server_timeout: float
    sms_retry_window_seconds: float
    rate_limit_per_second: float
    rate_limit_burst: float
    widget_allowed_origins: Tuple[str, ...]
    rasa_api_token: Optional[str]
    staff_username: str
    staff_password: str
    min_heldout_accuracy: float
    retention_days: float
    booking_retention_days: float
    lock_wait_seconds: float
    reminder_poll_seconds: float


def load(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """The settings from ``environ`` (default ``os.environ``).

    Raises:
        SettingsError: a variable's value is not usable; the message names it.
    """
    env = _Environment(os.environ if environ is None else environ)
    root = Path(env.text("PROJECT_ROOT") or PROJECT_ROOT).resolve()
    state = env.path("STATE_DIR", root / "var")
    rasa_port = env.port("RASA_PORT", DEFAULT_RASA_PORT)
    action_port = env.port("ACTION_PORT", DEFAULT_ACTION_PORT)
    web_port = env.port("WEB_PORT", DEFAULT_WEB_PORT)
    demo_page = (f"http://{LOOPBACK}:{web_port}", f"http://localhost:{web_port}")
    origins = env.items("WIDGET_ALLOWED_ORIGINS")
    return Settings(
        project_root=root,
        state_dir=state,
        clinic_config=env.path("CLINIC_CONFIG", DEFAULT_CLINIC_CONFIG),
        scheduler_backend=(
            env.text("SCHEDULER_BACKEND") or DEFAULT_SCHEDULER_BACKEND
        ).lower(),
        scheduler_db=env.path("SCHEDULER_DB", state / "scheduler.db"),
        scheduler_timeout=env.seconds("SCHEDULER_TIMEOUT", DEFAULT_SCHEDULER_TIMEOUT),
        fhir_base_url=env.text("FHIR_BASE_URL"),
        fhir_auth_token=env.text("FHIR_AUTH_TOKEN") or None,
        fhir_schedule_ids=env.items("FHIR_SCHEDULE_IDS"),
        fhir_visit_type_codes=env.text("FHIR_VISIT_TYPE_CODES"),
        scheduler_webhook_url=env.text("SCHEDULER_WEBHOOK_URL"),
        scheduler_webhook_secret=env.text("SCHEDULER_WEBHOOK_SECRET"),
        callback_db=env.path("CALLBACK_DB", state / "callbacks.db"),
        channel_db=env.path("CHANNEL_DB", state / "channels.db"),
        store_database_url=env.text("STORE_DATABASE_URL"),
        store_pool_size=int(
            env.number(
                "STORE_POOL_SIZE",
                DEFAULT_STORE_POOL_SIZE,
                lambda value: value >= 1 and value == int(value),
                "a whole number of connections, 1 or more",
            )
        ),
        tracker_db=env.path("TRACKER_DB", state / "tracker.db"),
        # A relative path is the project's, wherever the process runs.
        endpoints=root / env.path("ENDPOINTS", Path("endpoints.yml")),
        model_path=env.path("MODEL_PATH", root / "models" / "clinic.tar.gz"),
        rasa_port=rasa_port,
        action_port=action_port,
        web_port=web_port,
        staff_port=env.port("STAFF_PORT", DEFAULT_STAFF_PORT),
        health_port=env.port("HEALTH_PORT", DEFAULT_HEALTH_PORT),
        rasa_url=env.text("RASA_URL") or f"http://{LOOPBACK}:{rasa_port}",
        action_server_url=env.text("ACTION_SERVER_URL")
        or f"http://{LOOPBACK}:{action_port}/webhook",
        action_server_timeout=env.seconds_or_default(
            "ACTION_SERVER_TIMEOUT", DEFAULT_ACTION_SERVER_TIMEOUT
        ),
        sms_retry_window_seconds=env.seconds_or_default(
            "SMS_RETRY_WINDOW_SECONDS", DEFAULT_SMS_RETRY_WINDOW
        ),
        rate_limit_per_second=env.number(
            "RATE_LIMIT_PER_SECOND",
            DEFAULT_RATE_LIMIT_PER_SECOND,
            lambda value: value >= 0,
            "a number of messages per second, 0 (no limit) or more",
        ),
        rate_limit_burst=env.number(
            "RATE_LIMIT_BURST",
            DEFAULT_RATE_LIMIT_BURST,
            lambda value: value >= 1,
            "a number of messages, 1 or more",
        ),
        widget_allowed_origins=origins or demo_page,
        rasa_api_token=env.text("RASA_API_TOKEN") or None,
        staff_username=env.raw("STAFF_USERNAME") or DEFAULT_STAFF_USERNAME,
        staff_password=env.raw("STAFF_PASSWORD"),
        min_heldout_accuracy=env.share(
            "MIN_HELDOUT_ACCURACY", DEFAULT_MIN_HELDOUT_ACCURACY
        ),
        retention_days=env.days("RETENTION_DAYS", DEFAULT_RETENTION_DAYS),
        booking_retention_days=env.days(
            "BOOKING_RETENTION_DAYS", DEFAULT_BOOKING_RETENTION_DAYS
        ),
        lock_wait_seconds=env.seconds("LOCK_WAIT_SECONDS", DEFAULT_LOCK_WAIT_SECONDS),
        reminder_poll_seconds=env.seconds(
            "REMINDER_POLL_SECONDS", DEFAULT_REMINDER_POLL_SECONDS
        ),
    )


@dataclass(frozen=True)
class _Environment:
    """Typed reads of one environment mapping; empty values count as unset."""

    values: Mapping[str, str]

    def raw(self, name: str) -> str:
        """The value exactly as set (a password may begin or end with a space)."""
        return self.values.get(name) or ""

    def text(self, name: str) -> str:
        return self.raw(name).strip()

    def items(self, name: str) -> Tuple[str, ...]:
        """A comma-separated list, blanks trimmed and empty items dropped."""
        return tuple(
            item.strip() for item in self.text(name).split(",") if item.strip()
        )

    def path(self, name: str, default: Path) -> Path:
        return Path(self.text(name) or default)

    def port(self, name: str, default: int) -> int:
        text = self.text(name)
        if not text:
            return default
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise SettingsError(f"{name} is '{text}'; it must be a port, 1 to 65535.")
        return int(text)

    def share(self, name: str, default: float) -> float:
        return self.number(
            name, default, lambda value: 0 <= value <= 1, "a number, 0 to 1"
        )

    def seconds(self, name: str, default: float) -> float:
        return self.number(
            name, default, lambda value: value > 0, "a positive number of seconds"
        )

    def days(self, name: str, default: float) -> float:
        return self.number(
            name, default, lambda value: value > 0, "a positive number of days"
        )

    def number(
        self, name: str, default: float, fits: Callable[[float], bool], what: str
    ) -> float:
        """A finite number for which ``fits`` is true; ``what`` says which, if not."""
        text = self.text(name)
        if not text:
            return default
        value = _number(text)
        if value is None or not fits(value):
            raise SettingsError(f"{name} is '{text}'; it must be {what}.")
        return value

    def seconds_or_default(self, name: str, default: float) -> float:
        """A positive number of seconds; a bad one is logged and ``default`` used.

        For settings whose mistake must not stop the rest of the assistant.
        """
        try:
            return self.seconds(name, default)
        except SettingsError:
            logger.error(
                "%s must be a positive number of seconds; using %g.", name, default
            )
            return default


def _number(text: str) -> Optional[float]:
    """``text`` as a finite number, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
