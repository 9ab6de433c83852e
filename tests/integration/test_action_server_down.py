"""With the action server dead, patients still get safety guidance and FAQ answers.

A fresh assistant (both servers, the embedded scheduler, SMS to the fake Twilio API,
the website's Socket.IO channel) takes patients to every question of the booking and
lookup forms while the action server is up; then the action server is killed
(SIGKILL, as a crash) and each patient writes one more message. Every reply is
compared in full, in order, on REST, by SMS and over Socket.IO:

- a red flag gets the emergency or crisis guidance, and nothing else;
- an FAQ question gets its answer, then "this part is unavailable right now";
- anything else (an answer to the form's question) gets "unavailable" alone;
- a new patient still gets the introduction first.

At the end the action server comes back and booking works again; no log of either
server holds the patients' names, phone numbers or messages.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import socketio
import yaml
from testkit import domain_text, first_faq_answers

from actions.settings import parse_clinic_config
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import (
    SMS_ACCOUNT_SID,
    SMS_AUTH_TOKEN,
    Assistant,
    sms_env,
)
from tests.integration.test_sms import Phone

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WIDGET_ORIGIN = "http://clinic.test"
NAME = "Marisol Quintanilla"
PHONE = "817-555-0188"

EMERGENCY = "I have crushing chest pain and cannot breathe"
CRISIS = "I want to kill myself"
FAQ = "what is in the injection?"
ANSWER = "tomorrow at 10am"

# How to reach each question of the forms while the action server is up. A step
# "<offer>" is the payload of the first time offered.
POINTS: Dict[str, Tuple[str, ...]] = {
    "visit_type": ("I'd like to book an appointment",),
    "time_preference": ("I'd like to book an appointment", "dry needling"),
    "appointment_slot": (
        "I'd like to book an appointment",
        "dry needling",
        "as soon as possible",
    ),
    "patient_name": (
        "I'd like to book an appointment",
        "dry needling",
        "as soon as possible",
        "<offer>",
    ),
    "patient_phone": (
        "I'd like to book an appointment",
        "dry needling",
        "as soon as possible",
        "<offer>",
        NAME,
    ),
    "booking_confirmed": (
        "I'd like to book an appointment",
        "dry needling",
        "as soon as possible",
        "<offer>",
        NAME,
        PHONE,
    ),
    "lookup_reference": ("I want to cancel my appointment",),
    "lookup_phone": ("I want to cancel my appointment", "K7PM3Q"),
}
PROBES = {"emergency": EMERGENCY, "crisis": CRISIS, "faq": FAQ, "answer": ANSWER}


def clinic_values() -> Dict[str, str]:
    info = parse_clinic_config(
        yaml.safe_load((ROOT / "clinic.yml").read_text(encoding="utf-8")), "clinic.yml"
    )
    return {
        **info.template_values(),
        "clinic_contact_sentence": info.contact_sentence(),
    }


def text_of(response: str, channel: str = "rest") -> str:
    text = domain_text(response, channel)
    for name, value in clinic_values().items():
        text = text.replace("{" + name + "}", value)
    assert "{" not in text, text
    return text


def expected(probe: str, channel: str = "rest") -> List[str]:
    unavailable = text_of("utter_action_unavailable", channel)
    return {
        "emergency": [text_of("utter_emergency", channel)],
        "crisis": [text_of("utter_crisis", channel)],
        "faq": [first_faq_answers()["injection_contents"], unavailable],
        "answer": [unavailable],
    }[probe]


@pytest.fixture(scope="module")
def twilio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi(SMS_ACCOUNT_SID, SMS_AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, twilio: FakeTwilioApi
) -> Iterator[Assistant]:
    running = Assistant(
        tmp_path_factory.mktemp("action-server-down"),
        extra_env={**sms_env(twilio), "WIDGET_ALLOWED_ORIGINS": WIDGET_ORIGIN},
    )
    try:
        yield running
    finally:
        running.close()


def rest_texts(stack: Assistant, sender: str, message: str) -> List[str]:
    return [str(reply.get("text")) for reply in stack.replies(sender, message)]


def walk_to(stack: Assistant, sender: str, steps: Tuple[str, ...]) -> None:
    """Takes a REST patient to a form's question while the action server is up."""
    offers: List[str] = []
    for step in steps:
        message = offers[0] if step == "<offer>" else step
        replies = stack.replies(sender, message)
        assert replies, f"no reply to {message!r}"
        offers = [
            button["payload"]
            for reply in replies
            for button in reply.get("buttons") or []
        ]


class SocketPatient:
    """A website visitor on the Socket.IO channel, as the widget talks to it."""

    def __init__(self, stack: Assistant) -> None:
        self.url = f"http://127.0.0.1:{stack.rasa_port}"
        self.session_id: Optional[str] = None  # the server issues it

    async def say(self, messages: List[str], expect: List[int]) -> List[List[str]]:
        """Sends each message; collects ``expect[i]`` replies (and checks no more)."""
        client = socketio.AsyncClient()
        inbox: asyncio.Queue[str] = asyncio.Queue()

        confirmed: asyncio.Queue[str] = asyncio.Queue()

        @client.on("bot_uttered")  # type: ignore[misc]
        async def _on_bot(data: Dict[str, str]) -> None:
            await inbox.put(str(data.get("text")))

        @client.on("session_confirm")  # type: ignore[misc]
        async def _on_confirm(session_id: str) -> None:
            await confirmed.put(session_id)

        # Long polling: this aiohttp is too old for python-engineio's WebSocket
        # client; the server side is the same Socket.IO channel either way.
        await client.connect(
            self.url, headers={"Origin": WIDGET_ORIGIN}, transports=["polling"]
        )
        try:
            await client.emit("session_request", {"session_id": self.session_id})
            self.session_id = await asyncio.wait_for(confirmed.get(), timeout=60)
            turns: List[List[str]] = []
            for message, count in zip(messages, expect, strict=True):
                await client.emit(
                    "user_uttered", {"message": message, "session_id": self.session_id}
                )
                turn = [
                    await asyncio.wait_for(inbox.get(), timeout=60)
                    for _ in range(count)
                ]
                await asyncio.sleep(1.0)  # nothing more may come
                while not inbox.empty():
                    turn.append(inbox.get_nowait())
                turns.append(turn)
            return turns
        finally:
            await client.disconnect()


@pytest.fixture(scope="module")
def prepared(
    stack: Assistant, twilio: FakeTwilioApi
) -> Iterator[Dict[Tuple[str, str], str]]:
    """REST patients at every question, for every probe; then the action server dies."""
    senders: Dict[Tuple[str, str], str] = {}
    for (point, steps), probe in itertools.product(POINTS.items(), PROBES):
        sender = f"down-{point}-{probe}-{uuid.uuid4().hex[:6]}"
        walk_to(stack, sender, steps)
        senders[point, probe] = sender
    phones = {probe: Phone(stack, twilio) for probe in PROBES}
    for phone in phones.values():
        assert "What kind of visit" in phone.say("I'd like to book an appointment")
        assert "What day and time" in phone.say("2")
    socket_patient = SocketPatient(stack)
    turns = asyncio.run(
        socket_patient.say(["I'd like to book an appointment", "dry needling"], [2, 1])
    )
    assert "What day and time" in turns[-1][0]
    stack.kill_actions()
    yield {
        **senders,
        **{("sms", probe): phone.number for probe, phone in phones.items()},
        ("socketio", "session"): socket_patient.session_id,
    }
    stack.start_actions()


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("point", POINTS)
def test_rest_mid_form(
    stack: Assistant, prepared: Dict[Tuple[str, str], str], point: str, probe: str
) -> None:
    sender = prepared[point, probe]
    assert rest_texts(stack, sender, PROBES[probe]) == expected(probe)


@pytest.mark.parametrize(
    ("message", "responses"),
    [
        (EMERGENCY, ["utter_emergency"]),
        (CRISIS, ["utter_crisis"]),
        ("I'd like to book an appointment", ["utter_action_unavailable"]),
    ],
)
def test_rest_new_patient(
    stack: Assistant,
    prepared: Dict[Tuple[str, str], str],
    message: str,
    responses: List[str],
) -> None:
    sender = f"down-new-{uuid.uuid4().hex[:8]}"
    assert rest_texts(stack, sender, message) == [
        text_of("utter_intro"),
        *(text_of(response) for response in responses),
    ]


def test_rest_new_patient_faq(
    stack: Assistant, prepared: Dict[Tuple[str, str], str]
) -> None:
    sender = f"down-new-{uuid.uuid4().hex[:8]}"
    assert rest_texts(stack, sender, "what is a back spasm?") == [
        text_of("utter_intro"),
        first_faq_answers()["what_is_spasm"],
    ]


@pytest.mark.parametrize("probe", PROBES)
def test_sms_mid_form(
    stack: Assistant,
    twilio: FakeTwilioApi,
    prepared: Dict[Tuple[str, str], str],
    probe: str,
) -> None:
    phone = Phone(stack, twilio)
    phone.number = prepared["sms", probe]
    before = len(phone.received())
    assert phone.say(PROBES[probe]) == "\n\n".join(expected(probe, "twilio"))
    assert len(phone.received()) == before + 1


def test_sms_new_patient(
    stack: Assistant, twilio: FakeTwilioApi, prepared: Dict[Tuple[str, str], str]
) -> None:
    phone = Phone(stack, twilio)
    assert phone.say(EMERGENCY) == "\n\n".join(
        [text_of("utter_intro", "twilio"), text_of("utter_emergency", "twilio")]
    )


def test_socketio_mid_form_and_new_visitor(
    stack: Assistant, prepared: Dict[Tuple[str, str], str]
) -> None:
    patient = SocketPatient(stack)
    patient.session_id = prepared["socketio", "session"]
    turns = asyncio.run(patient.say([FAQ, EMERGENCY], [2, 1]))
    assert turns == [expected("faq"), expected("emergency")]

    newcomer = SocketPatient(stack)
    turns = asyncio.run(newcomer.say([CRISIS], [2]))
    assert turns == [[text_of("utter_intro"), text_of("utter_crisis")]]


def test_no_patient_details_in_any_log(
    stack: Assistant, prepared: Dict[Tuple[str, str], str]
) -> None:
    logs = {
        path.name: path.read_text(encoding="utf-8", errors="replace")
        for path in stack.log_dir.glob("*.log")
    }
    assert set(logs) >= {"rasa.log", "actions.log"}
    assert "failed in conversation c-" in logs["rasa.log"]  # failures are logged
    digits = re.sub(r"\D", "", PHONE)
    secrets = [NAME, NAME.split()[1], digits, PHONE, "555-0188", "(817) 555", FAQ]
    secrets += [EMERGENCY, CRISIS, "K7PM3Q", "crushing chest"]
    secrets += [number for (kind, _), number in prepared.items() if kind == "sms"]
    secrets += [number[2:] for (kind, _), number in prepared.items() if kind == "sms"]
    for name, text in logs.items():
        found = [secret for secret in secrets if secret.lower() in text.lower()]
        assert not found, f"{name} holds {found}"


def test_booking_works_again_once_the_action_server_is_back(
    stack: Assistant, prepared: Dict[Tuple[str, str], str]
) -> None:
    stack.start_actions()
    sender = f"down-back-{uuid.uuid4().hex[:8]}"
    texts = rest_texts(stack, sender, "I'd like to book an appointment")
    assert texts[0] == text_of("utter_intro")
    assert texts[-1] == "What kind of visit would you like to book?"
