"""SMS end to end: signed Twilio webhooks -> Rasa -> action server -> fake Twilio API.

The session's Rasa server has the Twilio channel of credentials.yml configured with
the fake API of tests/fakes/twilio_api.py and a public webhook URL, as behind a
proxy: requests are signed for that URL with the twilio library, and the answers
are read from what the fake API recorded.
"""

from __future__ import annotations

import itertools
import random
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Dict, List

import pytest
from testkit import domain_text, first_faq_answers
from twilio.request_validator import RequestValidator

from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import (
    SMS_AUTH_TOKEN,
    SMS_FROM_NUMBER,
    SMS_PUBLIC_URL,
    Assistant,
)

pytestmark = pytest.mark.integration

REFERENCE = re.compile(r"Your reference is ([A-Z0-9]{5,12})\.")
CHOICE_LINE = re.compile(r"^(\d+)\. (.+)$", re.M)
_numbers = itertools.count(random.randrange(1000, 9000))


class Phone:
    """A patient's phone texting the assistant through (fake) Twilio."""

    def __init__(self, assistant: Assistant, twilio: FakeTwilioApi) -> None:
        self.number = f"+1682555{next(_numbers) % 10000:04d}"
        self.assistant = assistant
        self.twilio = twilio
        self.url = f"http://127.0.0.1:{assistant.rasa_port}/webhooks/twilio/webhook"

    def post(self, text: str, signed: bool = True) -> int:
        form = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "From": self.number,
            "To": SMS_FROM_NUMBER,
            "Body": text,
            "NumMedia": "0",
        }
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            validator = RequestValidator(SMS_AUTH_TOKEN)
            headers["X-Twilio-Signature"] = validator.compute_signature(
                SMS_PUBLIC_URL, form
            )
        request = urllib.request.Request(
            self.url, data=urllib.parse.urlencode(form).encode(), headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.headers["Content-Type"].startswith("text/xml")
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code

    def received(self) -> List[str]:
        return self.twilio.sent_to(self.number)

    def say(self, text: str) -> str:
        """Texts ``text``; returns the one SMS the assistant answers with."""
        before = len(self.received())
        assert self.post(text) == 200
        bodies = self.twilio.wait_for_messages(self.number, before + 1, timeout=60)
        assert len(bodies) == before + 1, bodies[before:]
        return bodies[-1]


def choices(sms: str) -> Dict[int, str]:
    return {int(number): title for number, title in CHOICE_LINE.findall(sms)}


def tracker_events(assistant: Assistant, sender: str) -> int:
    with sqlite3.connect(assistant.tracker_db) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM events WHERE sender_id = ?", (sender,)
        ).fetchone()
    return int(count)


@pytest.fixture
def phone(assistant: Assistant, twilio_api: FakeTwilioApi) -> Phone:
    return Phone(assistant, twilio_api)


def test_a_question_is_answered_by_sms(phone: Phone, twilio_api: FakeTwilioApi) -> None:
    answer = phone.say("what is a back spasm exactly")
    assert answer.endswith(first_faq_answers()["what_is_spasm"]), answer
    assert "virtual assistant" in answer  # the session's introduction, same SMS
    sent = [message for message in twilio_api.messages if message.to == phone.number]
    assert sent[0].from_ == SMS_FROM_NUMBER


def test_unsigned_requests_are_refused(phone: Phone) -> None:
    assert phone.post("what is a back spasm", signed=False) == 403
    assert phone.say("hi")  # the next, signed message is answered as usual
    assert len(phone.received()) == 1


def test_numbered_choices_round_trip(phone: Phone) -> None:
    visit_types = phone.say("I'd like to book an appointment")
    assert "What kind of visit" in visit_types
    assert choices(visit_types)[2] == "Dry needling"
    assert visit_types.rstrip().endswith("Reply 1-5")
    assert "What day and time" in phone.say("2")
    times = choices(phone.say("as soon as possible"))
    assert len(times) >= 2
    assert "full name" in phone.say("2")
    phone.say("Maria Lopez")
    readback = phone.say("817-555-0100")
    assert f"dry needling on {times[2]}" in readback, readback
    assert times[1] not in readback
    stop = next(n for n, title in choices(readback).items() if title == "Stop")
    assert phone.say(str(stop)) == domain_text("utter_booking_stopped")


def test_a_whole_booking_by_sms(assistant: Assistant, phone: Phone) -> None:
    visit_types = choices(phone.say("can I book a visit"))
    injection = next(
        n for n, t in visit_types.items() if t == "Trigger point injection"
    )
    phone.say(str(injection))
    times = choices(phone.say("as soon as possible"))
    phone.say("1")
    phone.say("Ana Garcia")
    readback = phone.say("469 555 0182")
    assert f"trigger point injection on {times[1]}" in readback
    assert "(469) 555-0182" in readback and "Reply 1-4" in readback
    # A typed yes does not say whether to text a reminder: the question follows.
    asked = phone.say("yes")
    assert asked.startswith("May we text you a reminder at (469) 555-0182"), asked
    assert asked.endswith("1. Yes, text me a reminder\n2. No reminder\nReply 1 or 2")
    confirmation = phone.say("2")
    match = REFERENCE.search(confirmation)
    assert match, confirmation
    with sqlite3.connect(assistant.scheduler_db) as connection:
        row = connection.execute(
            "SELECT patient_phone, status FROM bookings WHERE reference = ?",
            (match.group(1),),
        ).fetchone()
    assert row == ("+14695550182", "booked")


def test_stop_then_a_question_gives_nothing(assistant: Assistant, phone: Phone) -> None:
    assert phone.post("STOP") == 200
    assert phone.post("what is a back spasm") == 200
    # Messages of one number are handled in order: once START is answered, the
    # question before it was handled too -- and got nothing.
    welcome = phone.say("START")
    assert welcome.startswith("Welcome back to Valliant Life Medical.")
    assert phone.received() == [welcome]
    assert tracker_events(assistant, phone.number) == 0  # Rasa never saw them
    answer = phone.say("what is a back spasm")
    assert answer.endswith(first_faq_answers()["what_is_spasm"]), answer
    assert tracker_events(assistant, phone.number) > 0
