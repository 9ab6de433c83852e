"""The appointment reminder job of ``make run``: due reminders, every few seconds.

supervisord runs it as one more part (scripts/supervise.py, program ``reminders``;
on a host, deploy/systemd/valliant-reminders.service; the scaled profile runs one).
Each pass sends the reminders that are due (``reminders:`` in clinic.yml) through
the Rasa server, once per booking and offset however many copies run
(staff/reminders.py, scheduling/reminders.py); then it sleeps
``REMINDER_POLL_SECONDS``. Its log has counts and reference codes, never patient
data: ``$STATE_DIR/logs/reminders.log``.

Usage:
    python -m scripts.reminders
"""

from __future__ import annotations

import logging

from clinic_common.settings import load
from staff.reminders import run_forever

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run_forever(load().reminder_poll_seconds)
