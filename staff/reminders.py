"""The appointment reminder job's wiring, and the day's reminder states for staff.

:mod:`scheduling.reminders` decides what is due and keeps who got what; this module
joins it to the rest: the configured scheduler's bookings (every backend lists
them, :class:`~scheduling.base.Scheduler`), the channel store's opt-outs
(``channels.store``: a number that replied STOP gets nothing), and the Rasa
server, which sends each reminder into the patient's SMS conversation
(``POST /conversations/{phone}/trigger_intent?output_channel=twilio``; the action
server's ``action_send_reminder`` utters the text, the Twilio channel's outbox
sends it with its retries). ``scripts/reminders.py`` runs :func:`run_forever`;
``clinicbot reminders --date D`` and the staff page show :func:`day_view`.

Who got what is the ``reminders`` table of the scheduler's own store
(:func:`reminder_store`): beside the embedded scheduler's bookings, and with the FHIR
or webhook backend in the same place (``STORE_DATABASE_URL``, else
``$STATE_DIR/scheduler.db``), which then holds nothing else. A webhook receiver
without ``bookings/list`` cannot list bookings: the job sends nothing and says so
once.

Logs carry counts and reference codes, never names or phone numbers.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Callable, List, Optional, Sequence, Tuple

from channels.store import ChannelStore
from channels.store import default_location as channel_store_location
from channels.twilio_sms import CHANNEL_NAME, TwilioConfig
from clinic_common.settings import load as load_settings
from scheduling import get_scheduler
from scheduling.base import (
    Booking,
    Clock,
    ListingUnsupported,
    Scheduler,
    local_day,
    utc_now,
)
from scheduling.config import default_db_path
from scheduling.reminders import (
    DayEntry,
    ReminderSchedule,
    ReminderStore,
    day_entries,
    reminder_settings,
)
from staff.project import Settings
from staff.rasa_api import ApiError, RasaApi

logger = logging.getLogger(__name__)

# The intent the job triggers and the entity naming the booking (issue 14's
# interface with domain.yml and actions/reminders.py).
REMINDER_INTENT = "EXTERNAL_appointment_reminder"
REFERENCE_ENTITY = "booking_reference"
# What the job logs and staff read while the Twilio channel is not configured.
SMS_OFF = "SMS is not configured: no reminders are being sent"


def reminder_store() -> ReminderStore:
    """The ``reminders`` table in the scheduler's store, whatever the backend.

    ``STORE_DATABASE_URL`` if set, else ``$SCHEDULER_DB`` (``$STATE_DIR/scheduler.db``):
    where the embedded scheduler keeps its bookings, so the table stays beside them.
    """
    return ReminderStore(default_db_path())


def sms_config() -> TwilioConfig:
    """The Twilio channel's settings, as the Rasa server reads them."""
    return TwilioConfig.from_file(load_settings().project_root / "credentials.yml")


def rasa_sender(
    api: RasaApi, channels: ChannelStore, twilio: TwilioConfig
) -> Callable[[Booking], Sequence[int]]:
    """Sends a booking's reminder through the Rasa server; its SMS outbox rows.

    They are the texts the Twilio channel queued to the number, as ones the
    assistant started (not replies to the patient's own texts), while Rasa ran the
    reminder: the action utters before Rasa answers. Empty if Rasa refused
    or sent nothing (the reminder failed). Two runners reminding one number at
    the same moment (two bookings due together) may each count both texts.
    """

    def send(booking: Booking) -> Sequence[int]:
        phone = booking.patient.phone
        before = channels.last_sms_id()
        try:
            api.trigger_intent(
                phone,
                REMINDER_INTENT,
                {REFERENCE_ENTITY: booking.reference},
                CHANNEL_NAME,
            )
        except ApiError:
            # The error's words are the server's: they may name the conversation.
            logger.warning("The reminder of %s was not sent.", booking.reference)
            return []
        queued = channels.pushed_sms(twilio.log_id(phone), before)
        if not queued:
            logger.warning(
                "Rasa took the reminder of %s but sent no SMS.", booking.reference
            )
        return queued

    return send


def build_schedule(scheduler: Scheduler, settings: Settings) -> ReminderSchedule:
    """The schedule over ``scheduler``, the opt-outs and the Rasa server."""
    channels = ChannelStore(channel_store_location())
    return ReminderSchedule(
        bookings=scheduler,
        store=reminder_store(),
        send=rasa_sender(
            RasaApi(settings.rasa_url, settings.api_token), channels, sms_config()
        ),
        reachable=lambda phone: not channels.is_opted_out(phone),
        settings=reminder_settings(),
    )


def run_forever(
    poll_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Sends due reminders every ``poll_seconds``; a failed pass is tried again.

    A scheduler that cannot list bookings is said once; the job goes on asking, so
    reminders start without a restart once the webhook receiver can. Without SMS
    (the Twilio channel not configured) it sends nothing and says so once.
    """
    if not sms_config().configured:
        # Nothing is claimed: once SMS is set up (and the job restarted), the
        # reminders still due are sent.
        logger.warning("%s (TWILIO_* settings, credentials.yml).", SMS_OFF)
        while True:
            sleep(3600.0)
    schedule = build_schedule(get_scheduler(), Settings.from_env())
    said_unsupported = False
    while True:
        try:
            schedule.run_once()
        except ListingUnsupported as error:
            if not said_unsupported:
                logger.warning("No reminders will be sent: %s", error)
            said_unsupported = True
        except Exception:  # noqa: BLE001 - the job must outlive a bad moment
            logger.exception("A reminder pass failed; trying again shortly.")
        sleep(poll_seconds)


def day_view(
    day: Optional[date] = None,
    clock: Clock = utc_now,
    scheduler: Optional[Scheduler] = None,
    store: Optional[ReminderStore] = None,
) -> Tuple[str, List[DayEntry]]:
    """A title and each booking of local ``day`` (default today) with its state.

    The title names the day and the clinic's time zone, and says so if SMS is not
    configured (no reminder goes out). A reminder whose text failed in the SMS
    outbox is "failed". Front-desk details only
    (:class:`~scheduling.reminders.DayEntry`). ``scheduler`` and ``store``: the
    configured ones unless given.

    Raises:
        BackendUnavailable: the scheduler cannot list the day's bookings
            (``ListingUnsupported``: not at all).
    """
    settings, now = reminder_settings(), clock()
    tz = settings.scheduling.tz
    day = day or now.astimezone(tz).date()
    entries = day_entries(
        (scheduler or get_scheduler()).bookings_between(*local_day(day, tz)),
        store or reminder_store(),
        settings,
        now,
        ChannelStore(channel_store_location()).failed_among,
    )
    sms = "" if sms_config().configured else f"; {SMS_OFF}"
    return f"{day:%A %Y-%m-%d} ({settings.scheduling.timezone}{sms})", entries
