"""Reminders end to end: the job -> Rasa's trigger_intent -> the action -> Twilio fake.

The session's assistant (real Rasa and action servers, the SMS channel texting the
fake Twilio API) and the reminder job's own wiring (staff/reminders.py), with a
fixed clock at the reminder's send time. The patient answers by signed webhook.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from channels.store import ChannelStore
from clinic_common.settings import load
from scheduling.base import Booking, Patient
from scheduling.config import scheduling_config
from scheduling.reminders import (
    ReminderSchedule,
    ReminderStore,
    reminder_settings,
    reminder_text,
    send_time,
)
from scheduling.sqlite_backend import SqliteScheduler
from staff.rasa_api import RasaApi
from staff.reminders import rasa_sender
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import Assistant
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
        rasa_sender(api),
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
