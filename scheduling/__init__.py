"""Scheduling backends behind one interface (``scheduling.base.Scheduler``).

The backend is chosen by the environment, read when it is first needed through
``clinic_common.settings``, which also reads the remote backends' variables:

- ``SCHEDULER_BACKEND``: ``sqlite`` (default; no other setting needed),
  ``fhir`` or ``webhook``.
- ``sqlite``: ``SCHEDULER_DB`` (default ``$STATE_DIR/scheduler.db``); opening hours,
  visit types and providers from the ``scheduling:`` section of ``clinic.yml``.
- ``fhir``: ``FHIR_BASE_URL``, optional ``FHIR_AUTH_TOKEN`` and ``FHIR_SCHEDULE_IDS``.
- ``webhook``: ``SCHEDULER_WEBHOOK_URL`` and ``SCHEDULER_WEBHOOK_SECRET``.
- ``SCHEDULER_TIMEOUT``: seconds before a remote backend counts as down (default 5).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from clinic_common import settings
from clinic_common.sqlite import StrPath
from scheduling.base import BackendUnavailable, Scheduler

BACKENDS = ("sqlite", "fhir", "webhook")

logger = logging.getLogger(__name__)


class SchedulerConfigError(ValueError):
    """``SCHEDULER_BACKEND`` or a backend's settings are wrong."""


@lru_cache(maxsize=1)
def get_scheduler() -> Scheduler:
    """The configured scheduler, built once per process."""
    config = settings.load()
    backend = config.scheduler_backend
    if backend == "sqlite":
        from scheduling.config import default_db_path, scheduling_config
        from scheduling.sqlite_backend import SqliteScheduler

        return SqliteScheduler(default_db_path(), scheduling_config())
    if backend == "fhir":
        from scheduling.fhir_backend import FhirScheduler

        fhir: Scheduler = FhirScheduler.from_settings(config)
        return fhir
    if backend == "webhook":
        from scheduling.webhook_backend import WebhookScheduler

        webhook: Scheduler = WebhookScheduler.from_settings(config)
        return webhook
    raise SchedulerConfigError(
        f"SCHEDULER_BACKEND is '{backend}'; it must be one of {', '.join(BACKENDS)}."
    )


def database_unavailable(path: StrPath, error: BaseException) -> BackendUnavailable:
    """What a failed SQLite file of the scheduler or the call-backs raises.

    Logs the cause (a file name and SQLite's words: no patient data) and returns
    the typed outcome the callers branch on.
    """
    logger.warning("Database %s unavailable: %s", path, error)
    return BackendUnavailable("The appointment database is not available.")
