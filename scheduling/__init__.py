"""Scheduling backends behind one interface (``scheduling.base.Scheduler``).

The backend is chosen by the environment, read when it is first needed:

- ``SCHEDULER_BACKEND``: ``sqlite`` (default; no other setting needed),
  ``fhir`` or ``webhook``.
- ``sqlite``: ``SCHEDULER_DB`` (default ``$STATE_DIR/scheduler.db``); opening hours,
  visit types and providers from the ``scheduling:`` section of ``clinic.yml``.
- ``fhir``: ``FHIR_BASE_URL``, optional ``FHIR_AUTH_TOKEN`` and ``FHIR_SCHEDULE_IDS``.
- ``webhook``: ``SCHEDULER_WEBHOOK_URL`` and ``SCHEDULER_WEBHOOK_SECRET``.
- ``SCHEDULER_TIMEOUT``: seconds before a remote backend counts as down (default 5).
"""

from __future__ import annotations

import os
from functools import lru_cache

from scheduling.base import Scheduler

BACKENDS = ("sqlite", "fhir", "webhook")


class SchedulerConfigError(ValueError):
    """``SCHEDULER_BACKEND`` or a backend's settings are wrong."""


@lru_cache(maxsize=1)
def get_scheduler() -> Scheduler:
    """The configured scheduler, built once per process."""
    backend = (os.environ.get("SCHEDULER_BACKEND") or "sqlite").strip().lower()
    if backend == "sqlite":
        from scheduling.config import default_db_path, scheduling_config
        from scheduling.sqlite_backend import SqliteScheduler

        path = os.environ.get("SCHEDULER_DB") or str(default_db_path())
        return SqliteScheduler(path, scheduling_config())
    if backend == "fhir":
        from scheduling.fhir_backend import FhirScheduler

        fhir: Scheduler = FhirScheduler.from_env(os.environ)
        return fhir
    if backend == "webhook":
        from scheduling.webhook_backend import WebhookScheduler

        webhook: Scheduler = WebhookScheduler.from_env(os.environ)
        return webhook
    raise SchedulerConfigError(
        f"SCHEDULER_BACKEND is '{backend}'; it must be one of {', '.join(BACKENDS)}."
    )
