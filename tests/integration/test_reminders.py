"""Reminders end to end: the job -> Rasa's trigger_intent -> the action -> Twilio fake.

The session's assistant (real Rasa and action servers, the SMS channel texting the
fake Twilio API) and the reminder job's own wiring (staff/reminders.py), with a
fixed clock at the reminder's send time. The patient answers by signed webhook.
A reminder whose text Twilio refuses, or the carrier does not deliver (Twilio's
signed delivery report), shows "failed" to staff.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator, List

import pytest

from channels.store import ChannelStore
from channels.twilio_sms import TwilioConfig
from clinic_common.settings import load
from scheduling.base import Booking, Patient
from scheduling.config import scheduling_config
from scheduling.reminders import (
    ReminderSchedule,
    ReminderStore,
    day_entries,
    reminder_settings,
    reminder_text,
    send_time,
)
from scheduling.sqlite_backend import SqliteScheduler
from staff.rasa_api import RasaApi
from staff.reminders import rasa_sender
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import SMS_AUTH_TOKEN, Assistant
from tests.integration.test_sms import Phone

pytestmark = pytest.mark.integration


@pytest.fixture
def phone(assistant: Assistant, twilio_api: FakeTwilioApi) -> Iterator[Phone]:
    yield Phone(assistant, twilio_api)


def book(assistant: Assistant, phone: Phone, consent: bool = True) -> Booking:
    """A booking of ``phone``'s some days ahead, made as the booking form does."""
    scheduler = SqliteScheduler(assistant.scheduler_db, scheduling_config())
    now = datetime.now(timezone.utc)
    [slot] = scheduler.find_slots(
        "evaluation", now + timedelta(days=3), now + timedelta(days=10), 1
    )
    patient = Patient("Rita Reminder", phone.number)
    return scheduler.book(
        slot, patient, f"e2e-{phone.number}", reminder_consent=consent
    )


def job_at(assistant: Assistant, booking: Booking) -> ReminderSchedule:
    """The reminder job as scripts/reminders.py wires it, at the send time."""
    settings = reminder_settings()
    due = send_time(
        booking.slot.start,
        settings.reminders.offsets[0],
        settings.reminders,
        settings.scheduling.tz,
    )
    channels = ChannelStore(load(assistant.env).channel_db)
    api = RasaApi(
        f"http://127.0.0.1:{assistant.rasa_port}", assistant.env["RASA_API_TOKEN"]
    )
    return ReminderSchedule(
        SqliteScheduler(assistant.scheduler_db, scheduling_config()),
        ReminderStore(assistant.scheduler_db),
        rasa_sender(api, channels, TwilioConfig(auth_token=SMS_AUTH_TOKEN)),
        lambda number: not channels.is_opted_out(number),
        settings,
        clock=lambda: due,
    )


def test_the_reminder_reaches_the_patient_once_and_1_confirms(
    assistant: Assistant, phone: Phone
) -> None:
    phone.say("what is a back spasm")  # the patient has texted the clinic before
    booking = book(assistant, phone)
    job = job_at(assistant, booking)
    assert job.run_once().sent >= 1
    text = phone.twilio.wait_for_messages(phone.number, 2, timeout=60)[1]
    assert text == reminder_text(booking)
    job.run_once()  # again, and a second runner: nothing more
    job_at(assistant, booking).run_once()
    phone.say("1")
    scheduler = SqliteScheduler(assistant.scheduler_db, scheduling_config())
    assert scheduler.get_booking(booking.reference, phone.number).confirmed
    assert sum(body == text for body in phone.received()) == 1


def test_a_first_message_to_a_number_is_the_reminder(
    assistant: Assistant, phone: Phone
) -> None:
    """A patient who booked on the website: their SMS conversation starts here."""
    booking = book(assistant, phone)
    job_at(assistant, booking).run_once()
    assert phone.twilio.wait_for_messages(phone.number, 1, timeout=60)[-1] == (
        reminder_text(booking)
    )


def test_an_opted_out_number_gets_no_reminder(
    assistant: Assistant, phone: Phone
) -> None:
    assert phone.post("STOP") == 200
    booking = book(assistant, phone)
    phone.twilio.wait_for(
        lambda _: ChannelStore(load(assistant.env).channel_db).is_opted_out(
            phone.number
        )
    )
    job_at(assistant, booking).run_once()
    welcome = phone.say("START")
    assert phone.received() == [welcome]


def test_a_cancelled_booking_gets_no_reminder(
    assistant: Assistant, phone: Phone
) -> None:
    booking = book(assistant, phone)
    scheduler = SqliteScheduler(assistant.scheduler_db, scheduling_config())
    scheduler.cancel(booking.reference, phone.number, f"cancel-{phone.number}")
    job_at(assistant, booking).run_once()
    answer = phone.say("what is a back spasm")
    assert phone.received() == [answer]


def staff_states(assistant: Assistant, booking: Booking, now: datetime) -> List[str]:
    """What staff see of ``booking`` (as staff/reminders.py's day view reads it)."""
    scheduler = SqliteScheduler(assistant.scheduler_db, scheduling_config())
    channels = ChannelStore(load(assistant.env).channel_db)
    day = booking.slot.start.astimezone(scheduling_config().tz).date()
    return [
        entry.state
        for entry in day_entries(
            [b for b in scheduler.bookings_on(day) if b.reference == booking.reference],
            ReminderStore(assistant.scheduler_db),
            reminder_settings(),
            now,
            channels.failed_among,
        )
    ]


def test_a_reminder_twilio_refuses_shows_failed(
    assistant: Assistant, phone: Phone
) -> None:
    """The number unsubscribed at Twilio (21610), unknown to the assistant."""
    phone.twilio.opt_out(phone.number)
    booking = book(assistant, phone)
    assert job_at(assistant, booking).run_once().sent == 1  # Rasa took it ...
    now = datetime.now(timezone.utc)
    assert phone.twilio.wait_for(
        lambda _: staff_states(assistant, booking, now) == ["failed"], timeout=60
    ), staff_states(assistant, booking, now)  # ... and Twilio refused its text


def test_a_reminder_the_carrier_did_not_deliver_shows_failed(
    assistant: Assistant, phone: Phone
) -> None:
    booking = book(assistant, phone)
    assert job_at(assistant, booking).run_once().sent == 1
    phone.twilio.wait_for_messages(phone.number, 1, timeout=60)
    [message] = [m for m in phone.twilio.messages if m.to == phone.number]
    now = datetime.now(timezone.utc)
    status_route = phone.url.rsplit("/", 1)[0] + "/status"
    assert phone.twilio.report_status(message.sid, "delivered", via=status_route) == 204
    assert staff_states(assistant, booking, now) == ["sent"]
    answer = phone.twilio.report_status(message.sid, "undelivered", 30003, status_route)
    assert answer == 204
    assert staff_states(assistant, booking, now) == ["failed"]
