"""The appointment reminder job's wiring, and the day's reminder states for staff.

:mod:`scheduling.reminders` decides what is due and keeps who got what; this module
joins it to the rest: the embedded scheduler's bookings, the channel store's
opt-outs (``channels.store``: a number that replied STOP gets nothing), and the Rasa
server, which sends each reminder into the patient's SMS conversation
(``POST /conversations/{phone}/trigger_intent?output_channel=twilio``; the action
server's ``action_send_reminder`` utters the text, the Twilio channel's outbox
sends it with its retries). ``scripts/reminders.py`` runs :func:`run_forever`;
``clinicbot reminders --date D`` and the staff page show :func:`day_view`.

Only the embedded scheduler can list a day's bookings; with the FHIR or webhook
backend the job sends nothing and says so once.

Logs carry counts and reference codes, never names or phone numbers.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Callable, List, Optional, Tuple

from channels.store import ChannelStore
from channels.store import default_location as channel_store_location
from channels.twilio_sms import CHANNEL_NAME
from scheduling import get_scheduler
from scheduling.base import Booking, Clock, utc_now
from scheduling.reminders import (
    DayEntry,
    ReminderSchedule,
    ReminderStore,
    day_entries,
    reminder_settings,
)
from scheduling.sqlite_backend import SqliteScheduler
from staff.project import Settings
from staff.rasa_api import ApiError, RasaApi

logger = logging.getLogger(__name__)

# The intent the job triggers and the entity naming the booking (issue 14's
# interface with domain.yml and actions/reminders.py).
REMINDER_INTENT = "EXTERNAL_appointment_reminder"
REFERENCE_ENTITY = "booking_reference"


def embedded_scheduler() -> Optional[SqliteScheduler]:
    """The embedded scheduler, if that is the configured backend."""
    scheduler = get_scheduler()
    return scheduler if isinstance(scheduler, SqliteScheduler) else None


def rasa_sender(api: RasaApi) -> Callable[[Booking], bool]:
    """Sends a booking's reminder through the Rasa server; False if it refused."""

    def send(booking: Booking) -> bool:
        try:
            api.trigger_intent(
                booking.patient.phone,
                REMINDER_INTENT,
                {REFERENCE_ENTITY: booking.reference},
                CHANNEL_NAME,
            )
        except ApiError:
            # The error's words are the server's: they may name the conversation.
            logger.warning("The reminder of %s was not sent.", booking.reference)
            return False
        return True

    return send


def build_schedule(scheduler: SqliteScheduler, settings: Settings) -> ReminderSchedule:
    """The schedule over the embedded scheduler, the opt-outs and the Rasa server."""
    channels = ChannelStore(channel_store_location())
    return ReminderSchedule(
        bookings=scheduler,
        store=ReminderStore(scheduler.location),
        send=rasa_sender(RasaApi(settings.rasa_url, settings.api_token)),
        reachable=lambda phone: not channels.is_opted_out(phone),
        settings=reminder_settings(),
    )


def run_forever(
    poll_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Sends due reminders every ``poll_seconds``; a failed pass is tried again."""
    scheduler = embedded_scheduler()
    if scheduler is None:
        logger.warning(
            "Reminders need the embedded scheduler (SCHEDULER_BACKEND=sqlite);"
            " none will be sent."
        )
        while True:
            sleep(3600.0)
    schedule = build_schedule(scheduler, Settings.from_env())
    while True:
        try:
            schedule.run_once()
        except Exception:  # noqa: BLE001 - the job must outlive a bad moment
            logger.exception("A reminder pass failed; trying again shortly.")
        sleep(poll_seconds)


def day_view(
    day: Optional[date] = None,
    clock: Clock = utc_now,
    scheduler: Optional[SqliteScheduler] = None,
) -> Tuple[str, List[DayEntry]]:
    """A title and each booking of local ``day`` (default today) with its state.

    The title names the day and the clinic's time zone. Front-desk details only
    (:class:`~scheduling.reminders.DayEntry`). ``scheduler``: the configured one.

    Raises:
        LookupError: the scheduler is not the embedded one.
    """
    scheduler = scheduler or embedded_scheduler()
    if scheduler is None:
        raise LookupError(
            "Reminder states are kept for the embedded scheduler only"
            " (SCHEDULER_BACKEND=sqlite)."
        )
    config, now = scheduler.config, clock()
    day = day or now.astimezone(config.tz).date()
    entries = day_entries(
        scheduler.bookings_on(day),
        ReminderStore(scheduler.location),
        reminder_settings(),
        now,
    )
    return f"{day:%A %Y-%m-%d} ({config.timezone})", entries
