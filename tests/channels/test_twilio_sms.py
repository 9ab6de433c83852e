"""SMS through Twilio (channels/twilio_sms.py): the pure parts, then the webhook.

The webhook tests run the channel's blueprint in a real Sanic server on a loopback
port, sign requests with the twilio library's own ``RequestValidator``, and let the
channel send through the fake Twilio API of ``tests/fakes/twilio_api.py``. Rasa is
stood in for by a small scripted handler that records what reached it and answers
through the output channel it was given, as Rasa's agent does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import sqlite3
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Tuple,
)

import aiohttp
import pytest
from rasa.core.actions.action import ActionBotResponse
from rasa.core.channels.channel import UserMessage
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Sanic
from twilio.request_validator import RequestValidator

from actions.settings import clinic
from channels.rate_limit import POLITE_REPLY, SMS_NOTICE_INTERVAL, RateLimits
from channels.sms_inbox import LEASE_SECONDS
from channels.sms_outbox import DEFAULT_RETRY_WINDOW, RetryPolicy
from channels.store import ChannelStore, ReceivedSms
from channels.twilio_sms import (
    MAX_INBOUND_CHARS,
    MAX_SMS_CHARS,
    MEDIA_NOTE,
    InboundSms,
    TwilioConfig,
    TwilioSmsInput,
    TwilioSmsOutput,
    choice_number,
    earlier_turn,
    keyword_of,
    numbered_choices,
    render_turn,
    reply_hint,
    split_for_sms,
)
from clinic_common.privacy import conversation_key
from staff.cli import main as staff_main
from tests.fakes.twilio_api import FakeTwilioApi

SID = "AC" + "1" * 32
TOKEN = "test-auth-token"
FROM = "+18175550000"
PHONE = "+18175550123"
WEBHOOK_PATH = "/webhooks/twilio/webhook"

# --- Splitting ---------------------------------------------------------------------

SENTENCE = "Trigger point injections relax a tight knot of muscle within days."


def paragraph(sentences: int, tag: str) -> str:
    return " ".join(f"{tag}{n}: {SENTENCE}" for n in range(sentences))


def test_short_text_is_one_message() -> None:
    assert split_for_sms("  Hello there.\n\nSee you soon.  ") == [
        "Hello there.\n\nSee you soon."
    ]
    assert split_for_sms(" \n ") == []


def test_long_answer_splits_between_paragraphs() -> None:
    paragraphs = [paragraph(8, f"p{n}-") for n in range(6)]  # ~600 chars each
    text = "\n\n".join(paragraphs)
    messages = split_for_sms(text)
    assert len(messages) == 3  # two paragraphs fit in each, three do not
    assert all(len(message) <= MAX_SMS_CHARS for message in messages)
    for message in messages:
        assert all(part in paragraphs for part in message.split("\n\n"))
    assert "\n\n".join(messages) == text


def test_a_paragraph_too_long_splits_between_sentences() -> None:
    text = paragraph(60, "s")  # ~4,400 characters, one paragraph
    messages = split_for_sms(text)
    assert len(messages) == 3
    assert all(len(message) <= MAX_SMS_CHARS for message in messages)
    assert all(message.endswith("within days.") for message in messages)
    assert " ".join(messages) == text


def test_a_sentence_too_long_splits_between_words_and_never_cuts_one() -> None:
    words = [f"word{n}" for n in range(700)]  # ~5,800 characters, no full stop
    messages = split_for_sms(" ".join(words))
    assert len(messages) == 4
    assert all(len(message) <= MAX_SMS_CHARS for message in messages)
    assert [word for message in messages for word in message.split(" ")] == words


def test_numbered_lines_are_never_cut() -> None:
    titles = [
        f"Tue Jun {n % 28 + 1}, 9:{n % 60:02d} AM CDT, {SENTENCE}" for n in range(40)
    ]
    text = numbered_choices("Here are the open times. Which one suits you?", titles)
    messages = split_for_sms(text + "\n" + reply_hint(40))  # ~4,100 characters
    assert len(messages) == 3
    lines = text.split("\n")
    for message in messages:
        assert len(message) <= MAX_SMS_CHARS
        for line in message.split("\n"):
            assert line in lines or line == "Reply 1-40"


def test_only_a_word_longer_than_a_message_is_cut() -> None:
    link = "https://example.com/" + "a" * 2000
    messages = split_for_sms(f"See {link} for more.")
    assert all(len(message) <= MAX_SMS_CHARS for message in messages)
    assert "".join(messages).replace("See", "See ", 1).startswith("See https")
    assert len(messages) == 3


# --- Numbered choices, keywords, numbers -----------------------------------------


@pytest.mark.parametrize(
    "count, hint",
    [(1, "Reply 1"), (2, "Reply 1 or 2"), (3, "Reply 1, 2 or 3"), (5, "Reply 1-5")],
)
def test_reply_hint(count: int, hint: str) -> None:
    assert reply_hint(count) == hint


def test_buttons_become_numbered_lines_with_a_hint() -> None:
    paragraphs, choices = render_turn(
        [
            {"text": "Hi, I'm the assistant."},
            {
                "text": "What would you like to know?",
                "buttons": [
                    {"title": "What is a back spasm?", "payload": "/faq_spasm"},
                    {"title": "Book an appointment", "payload": "/book_appointment"},
                    {"title": "Visit our site", "url": "https://example.com"},
                ],
            },
            {"custom": {"widget": "only"}},
        ]
    )
    assert paragraphs == [
        "Hi, I'm the assistant.",
        "What would you like to know?\n"
        "1. What is a back spasm?\n"
        "2. Book an appointment\n"
        "Reply 1 or 2",
    ]
    assert choices == [
        ("What is a back spasm?", "/faq_spasm"),
        ("Book an appointment", "/book_appointment"),
    ]


def test_two_lists_in_one_turn_are_numbered_on() -> None:
    paragraphs, choices = render_turn(
        [
            {"text": "First?", "buttons": [{"title": "A", "payload": "/a"}]},
            {"text": "Or?", "buttons": [{"title": "B", "payload": "/b"}]},
        ]
    )
    assert paragraphs == ["First?\n1. A", "Or?\n2. B\nReply 1 or 2"]
    assert [payload for _, payload in choices] == ["/a", "/b"]


@pytest.mark.parametrize(
    "text, keyword",
    [
        ("STOP", "stop"),
        ("  stop \n", "stop"),
        ("StopAll", "stop"),
        ("unsubscribe", "stop"),
        ("Cancel", "stop"),
        ("END", "stop"),
        ("quit", "stop"),
        ("Revoke", "stop"),
        ("OPTOUT", "stop"),
        ("START", "start"),
        ("yes", "start"),
        ("Unstop", "start"),
        ("HELP", "help"),
        ("info", "help"),
        ("cancel my appointment", None),
        ("please stop", None),
        ("yes please", None),
        ("helpful", None),
        ("stop.", None),
    ],
)
def test_keywords_match_the_whole_message(text: str, keyword: Optional[str]) -> None:
    assert keyword_of(text) == keyword


@pytest.mark.parametrize(
    "text, number",
    [
        ("2", 2),
        (" 3 ", 3),
        ("#2", 2),
        ("2.", 2),
        ("2)", 2),
        ("option 2", 2),
        ("Option #4", 4),
        ("12", 12),
        ("2 please", None),
        ("2pm", None),
        ("817-555-0100", None),
        ("123", None),
        ("two", None),
        ("", None),
    ],
)
def test_choice_numbers(text: str, number: Optional[int]) -> None:
    assert choice_number(text) == number


async def test_rasa_picks_the_twilio_variant_for_this_output_channel() -> None:
    domain = Domain.from_dict(
        {
            "responses": {
                "utter_hours": [
                    {"text": "See the hours below.", "channel": "socketio"},
                    {"text": "Hours: Mon-Fri 8-5.", "channel": "twilio"},
                ]
            }
        }
    )
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    tracker = DialogueStateTracker("x", domain.slots)
    events = await ActionBotResponse("utter_hours").run(
        TwilioSmsOutput(), nlg, tracker, domain
    )
    assert isinstance(events[0], BotUttered)
    assert events[0].text == "Hours: Mon-Fri 8-5."


# --- The webhook ---------------------------------------------------------------------

GREETING = [
    {
        "text": "What would you like to know?",
        "buttons": [
            {"title": "What is a back spasm?", "payload": '/faq{"faq_topic":"spasm"}'},
            {"title": "Dry needling", "payload": '/faq{"faq_topic":"needling"}'},
            {"title": "Book an appointment", "payload": "/book_appointment"},
        ],
    }
]
LONG_ANSWER = [{"text": paragraph(8, f"p{n}-")} for n in range(4)]


@dataclass
class FakeRasa:
    """Stands in for Rasa's agent: records messages and answers from a script."""

    received: List[UserMessage] = field(default_factory=list)
    script: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    fail: bool = False
    delay: Dict[str, float] = field(default_factory=dict)

    async def handle(self, message: UserMessage) -> None:
        self.received.append(message)
        await asyncio.sleep(self.delay.get(message.text or "", 0))
        if self.fail:
            raise RuntimeError(f"model broke on {message.text}")
        for reply in self.script.get(
            message.text or "", [{"text": f"You said: {message.text}"}]
        ):
            await message.output_channel.send_response(message.sender_id, dict(reply))

    @property
    def texts(self) -> List[str]:
        return [message.text or "" for message in self.received]


@dataclass
class Sms:
    """The running webhook, its fake Twilio API and its fake Rasa."""

    url: str
    channel: TwilioSmsInput
    twilio: FakeTwilioApi
    rasa: FakeRasa
    http: aiohttp.ClientSession

    async def post(
        self,
        form: Dict[str, str],
        *,
        signed_url: Optional[str] = None,
        token: str = TOKEN,
        signature: Optional[str] = None,
        body: Optional[bytes] = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> Tuple[int, str, str]:
        headers = {"Content-Type": content_type}
        if signature is None:
            signature = RequestValidator(token).compute_signature(
                signed_url or self.url, form
            )
        if signature:
            headers["X-Twilio-Signature"] = signature
        data: Any = body if body is not None else form
        async with self.http.post(self.url, data=data, headers=headers) as answer:
            text = await answer.text()
            return answer.status, answer.headers.get("Content-Type", ""), text

    async def send(
        self, text: str, phone: str = PHONE, media: int = 0, **extra: str
    ) -> List[str]:
        """Texts the assistant; returns what it sent back for this message."""
        before = len(self.twilio.sent_to(phone))
        form = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "AccountSid": SID,
            "From": phone,
            "To": FROM,
            "Body": text,
            "NumMedia": str(media),
            **extra,
        }
        if media:
            form["MediaUrl0"] = "https://api.twilio.com/media/ME1"
            form["MediaContentType0"] = "image/jpeg"
        status, content_type, twiml = await self.post(form)
        assert status == 200, twiml
        assert content_type.startswith("text/xml")
        assert twiml == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
        await self.channel.drain()
        return self.twilio.sent_to(phone)[before:]


# Retries in tests: a short window and short waits.
FAST = RetryPolicy(window=1.0, first_delay=0.01, max_delay=0.05, timeout=2.0)


@asynccontextmanager
async def running(
    tmp_path: Path,
    config: TwilioConfig,
    twilio: FakeTwilioApi,
    rasa: FakeRasa,
    retry: RetryPolicy = FAST,
    limits: Optional[RateLimits] = None,
    lease: float = LEASE_SECONDS,
) -> AsyncIterator[Sms]:
    channel = TwilioSmsInput(
        config, ChannelStore(tmp_path / "channels.db"), retry, limits
    )
    channel.inbox.lease, channel.inbox.poll = lease, min(lease / 4, 1.0)
    # Several apps in one process: Sanic's test mode keeps its per-process code
    # rewriting ("touchup") from running twice on the same methods.
    Sanic.test_mode = True
    app = Sanic(f"sms-test-{uuid.uuid4().hex}")
    app.blueprint(channel.blueprint(rasa.handle), url_prefix="/webhooks/twilio")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = await app.create_server(
        sock=sock, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.start_serving()
    await server.after_start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Sms(
                f"http://127.0.0.1:{port}{WEBHOOK_PATH}", channel, twilio, rasa, http
            )
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()
        sock.close()


@pytest.fixture
def twilio() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi(SID, TOKEN) as fake:
        yield fake


def config_for(twilio: FakeTwilioApi, **changes: str) -> TwilioConfig:
    values = {
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_number": FROM,
        "api_base": twilio.base_url,
        **changes,
    }
    return TwilioConfig.from_credentials(values)


@pytest.fixture
async def sms(tmp_path: Path, twilio: FakeTwilioApi) -> AsyncIterator[Sms]:
    rasa = FakeRasa(script={"hello": GREETING, "tell me everything": LONG_ANSWER})
    async with running(tmp_path, config_for(twilio), twilio, rasa) as running_sms:
        yield running_sms


def question_form(text: str = "what is a spasm", phone: str = PHONE) -> Dict[str, str]:
    sid = "SM" + uuid.uuid4().hex
    return {"MessageSid": sid, "From": phone, "To": FROM, "Body": text}


async def test_a_question_is_answered_by_sms(sms: Sms) -> None:
    assert await sms.send("what is a spasm") == ["You said: what is a spasm"]
    (message,) = sms.rasa.received
    assert message.sender_id == PHONE
    assert message.input_channel == "twilio"
    assert message.output_channel.name() == "twilio"
    (sent,) = sms.twilio.messages
    assert (sent.to, sent.from_, sent.messaging_service_sid) == (PHONE, FROM, "")


async def test_a_flooding_number_gets_one_polite_reply_and_rasa_never_its_excess(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    limits = RateLimits(rate=0.01, burst=3, notice_interval=SMS_NOTICE_INTERVAL)
    rasa = FakeRasa()
    async with running(
        tmp_path, config_for(twilio), twilio, rasa, limits=limits
    ) as sms:
        answers = await asyncio.gather(
            *(sms.post(question_form(f"message {n}")) for n in range(12))
        )
        assert {status for status, _, _ in answers} == {200}  # never an error
        await sms.channel.drain()
        assert len(rasa.texts) == 3
        sent = twilio.sent_to(PHONE)
        assert sent.count(POLITE_REPLY) == 1
        assert len(sent) == 4  # three answers, one polite reply, nothing more
        # Over the limit still: a red flag reaches Rasa while no model is loaded
        # (tests/channels/test_rate_limit.py: the guidance once one is), STOP works,
        # and another number is not affected.
        await sms.send("I lost control of my bladder")
        assert rasa.texts[-1] == "I lost control of my bladder"
        assert await sms.send("STOP") == []
        assert sms.channel.store.is_opted_out(PHONE)
        other = "+18175550999"
        assert await sms.send("hi", phone=other) == ["You said: hi"]


@pytest.mark.parametrize(
    "how",
    ["missing", "wrong token", "tampered body", "other url", "garbage"],
)
async def test_bad_or_missing_signature_is_refused(sms: Sms, how: str) -> None:
    form = question_form()
    if how == "missing":
        status, _, _ = await sms.post(form, signature="")
    elif how == "wrong token":
        status, _, _ = await sms.post(form, token="not-the-token")
    elif how == "tampered body":
        signature = RequestValidator(TOKEN).compute_signature(sms.url, form)
        status, _, _ = await sms.post({**form, "Body": "/restart"}, signature=signature)
    elif how == "other url":
        status, _, _ = await sms.post(form, signed_url=sms.url + "?x=1")
    else:
        status, _, _ = await sms.post(form, signature="bm90IGEgc2lnbmF0dXJl")
    assert status == 403
    await sms.channel.drain()
    assert sms.rasa.received == []
    assert sms.twilio.attempts == 0


@pytest.mark.parametrize(
    "form, body, content_type, reason",
    [
        (
            {},
            b'{"From": "+18175550123", "Body": "hi"}',
            "application/json",
            "form-encoded",
        ),
        ({}, b"From=%2B1817&Body=%ff", None, "UTF-8"),
        ({}, b"From=%2B18175550123&Body=a&Body=b", None, "only once"),
        ({"To": FROM, "Body": "hi"}, None, None, "'From' is required"),
        ({"From": PHONE, "To": FROM}, None, None, "'Body' is required"),
        ({"From": PHONE, "Body": "hi", "NumMedia": "lots"}, None, None, "NumMedia"),
        ({"From": PHONE, "Body": "hi", "MessageSid": "S" * 65}, None, None, "SID"),
    ],
    ids=["json", "not-utf8", "repeated", "no-from", "no-body", "media-type", "sid"],
)
async def test_malformed_requests_get_400_with_a_short_reason(
    sms: Sms,
    form: Dict[str, str],
    body: Optional[bytes],
    content_type: Optional[str],
    reason: str,
) -> None:
    # Signed over the parsed form (an unparseable body: over no parameters).
    status, _, answer = await sms.post(
        form,
        body=body,
        content_type=content_type or "application/x-www-form-urlencoded",
    )
    assert status == 400, answer
    assert reason in answer
    assert PHONE not in answer
    await sms.channel.drain()
    assert sms.rasa.received == [] and sms.twilio.attempts == 0


async def test_not_configured_answers_503_and_sends_nothing(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    config = config_for(twilio, auth_token="")
    async with running(tmp_path, config, twilio, FakeRasa()) as sms:
        status, _, answer = await sms.post(question_form(), signature="x")
        assert (status, answer) == (503, '{"error":"SMS is not configured."}')
        async with sms.http.get(sms.url.rsplit("/", 1)[0] + "/") as health:
            assert await health.json() == {"status": "ok", "configured": False}
        assert sms.rasa.received == [] and twilio.attempts == 0


async def test_the_public_webhook_url_is_what_twilio_signs(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    public = "https://sms.clinic.example/webhooks/twilio/webhook"
    rasa = FakeRasa()
    async with running(
        tmp_path, config_for(twilio, webhook_url=public), twilio, rasa
    ) as sms:
        status, _, _ = await sms.post(question_form())  # signed for the local URL
        assert status == 403
        status, _, _ = await sms.post(question_form(), signed_url=public)
        assert status == 200
        await sms.channel.drain()
        assert rasa.texts == ["what is a spasm"]


async def test_a_messaging_service_sends_instead_of_a_number(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    config = config_for(twilio, from_number="", messaging_service_sid="MG" + "2" * 32)
    async with running(tmp_path, config, twilio, FakeRasa()) as sms:
        assert await sms.send("hi") == ["You said: hi"]
    (sent,) = twilio.messages
    assert (sent.from_, sent.messaging_service_sid) == ("", "MG" + "2" * 32)


async def test_buttons_become_numbered_choices_and_a_number_picks_one(
    sms: Sms,
) -> None:
    (menu,) = await sms.send("hello")
    assert menu == (
        "What would you like to know?\n"
        "1. What is a back spasm?\n"
        "2. Dry needling\n"
        "3. Book an appointment\n"
        "Reply 1, 2 or 3"
    )
    await sms.send("2")
    assert sms.rasa.texts[-1] == '/faq{"faq_topic":"needling"}'
    # The answer had no list, so a number is now just text.
    await sms.send("2")
    assert sms.rasa.texts[-1] == "2"


@pytest.mark.parametrize("reply", ["#3", "3.", "option 3", " 3 "])
async def test_number_forms_pick_a_choice(sms: Sms, reply: str) -> None:
    await sms.send("hello")
    await sms.send(reply)
    assert sms.rasa.texts[-1] == "/book_appointment"


async def test_a_number_out_of_range_is_asked_again_without_rasa(sms: Sms) -> None:
    await sms.send("hello")
    assert await sms.send("7") == ["Please reply with a number from 1 to 3."]
    assert sms.rasa.texts == ["hello"]
    await sms.send("1")  # the list still stands
    assert sms.rasa.texts[-1] == '/faq{"faq_topic":"spasm"}'


async def test_typed_commands_are_read_as_words_but_offered_ones_pass(
    sms: Sms,
) -> None:
    await sms.send("/restart")
    assert sms.rasa.texts[-1] == "restart"
    await sms.send("hello")
    await sms.send("/book_appointment")
    assert sms.rasa.texts[-1] == "/book_appointment"


async def test_stop_silences_everything_until_start(tmp_path: Path, sms: Sms) -> None:
    assert await sms.send("STOP") == []
    assert await sms.send("what is a spasm") == []
    assert await sms.send("help") == []
    assert await sms.send("2") == []
    assert sms.rasa.received == [] and sms.twilio.attempts == 0

    # The opt-out is in the store's file: a new store and channel still know it.
    rasa = FakeRasa()
    async with running(tmp_path, config_for(sms.twilio), sms.twilio, rasa) as again:
        assert await again.send("what is a spasm") == []
        assert rasa.received == []
        (welcome,) = await again.send("Start")
        assert welcome.startswith(f"Welcome back to {clinic().name}.")
        assert await again.send("what is a spasm") == ["You said: what is a spasm"]
        assert rasa.texts == ["what is a spasm"]


async def test_bare_cancel_opts_out_but_cancel_my_appointment_is_a_message(
    sms: Sms,
) -> None:
    assert await sms.send("cancel my appointment") == [
        "You said: cancel my appointment"
    ]
    assert await sms.send(" Cancel ") == []
    assert sms.channel.store.is_opted_out(PHONE)
    assert sms.rasa.texts == ["cancel my appointment"]


async def test_twilio_s_opt_out_type_is_followed_for_custom_keywords(
    sms: Sms,
) -> None:
    # Advanced Opt-Out with Spanish keywords: Twilio names the matched type.
    assert await sms.send("PARAR", OptOutType="STOP") == []
    assert sms.channel.store.is_opted_out(PHONE)
    (welcome,) = await sms.send("SEGUIR", OptOutType="START")
    assert "Welcome back" in welcome
    assert sms.rasa.received == []


async def test_yes_is_an_answer_unless_opted_out(sms: Sms) -> None:
    assert await sms.send("yes") == ["You said: yes"]
    assert not sms.channel.store.is_opted_out(PHONE)
    await sms.send("stop")
    (welcome,) = await sms.send("YES")
    assert "Welcome back" in welcome
    assert sms.rasa.texts == ["yes"]


async def test_help_names_the_clinic_and_how_to_opt_out(sms: Sms) -> None:
    (answer,) = await sms.send(" Help ")
    assert clinic().name in answer
    assert "Reply STOP to opt out" in answer
    assert sms.rasa.received == []


async def test_a_picture_alone_is_acknowledged_without_rasa(sms: Sms) -> None:
    assert await sms.send("", media=1) == [MEDIA_NOTE]
    assert sms.rasa.received == []


async def test_a_picture_with_text_answers_the_text_and_mentions_it(
    sms: Sms,
) -> None:
    (answer,) = await sms.send("is this swelling normal?", media=2)
    assert answer == f"{MEDIA_NOTE}\n\nYou said: is this swelling normal?"
    assert sms.rasa.texts == ["is this swelling normal?"]


async def test_a_long_turn_goes_out_in_order_in_few_messages(sms: Sms) -> None:
    sent = await sms.send("tell me everything")
    assert len(sent) == 2
    assert all(len(body) <= MAX_SMS_CHARS for body in sent)
    assert "\n\n".join(sent) == "\n\n".join(part["text"] for part in LONG_ANSWER)


async def test_messages_of_one_number_are_answered_in_order(sms: Sms) -> None:
    sms.rasa.delay = {"first": 0.3}
    form = question_form
    for text in ("first", "second"):
        status, _, _ = await sms.post(form(text))
        assert status == 200
    await sms.channel.drain()
    assert sms.rasa.texts == ["first", "second"]
    assert sms.twilio.sent_to(PHONE) == ["You said: first", "You said: second"]


async def test_429_then_success_sends_once_after_a_retry(sms: Sms) -> None:
    sms.twilio.fail_next(1, status=429)
    assert await sms.send("what is a spasm") == ["You said: what is a spasm"]
    assert sms.twilio.attempts == 2
    assert len(sms.twilio.messages) == 1


async def test_500_until_the_window_ends_fails_and_logs_no_number_or_text(
    sms: Sms, caplog: pytest.LogCaptureFixture
) -> None:
    sms.twilio.fail_for(60, status=500)
    with caplog.at_level(logging.DEBUG, logger="channels"):
        assert await sms.send("my back hurts") == []
    (failure,) = sms.channel.store.failed_sms(since=0)
    # Tried again and again for the test's one-second window, then given up.
    assert failure.attempts == sms.twilio.attempts >= 4
    assert (failure.reason, failure.http_status, failure.error_code) == (
        "retry window over",
        500,
        20500,
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"SMS {failure.id} to {sms.channel.log_id(PHONE)} not sent after "
        f"{failure.attempts} attempt(s) (retry window over): Twilio status 500, "
        "error code 20500."
    ]
    for secret in (PHONE, PHONE[1:], "0123", "my back hurts"):
        assert secret not in caplog.text


async def test_a_rasa_failure_gets_an_apology_and_logs_no_number_or_text(
    sms: Sms, caplog: pytest.LogCaptureFixture
) -> None:
    sms.rasa.fail = True
    with caplog.at_level(logging.INFO, logger="channels"):
        (answer,) = await sms.send("my back hurts")
    assert answer.startswith("Sorry, something went wrong")
    assert PHONE not in caplog.text and "my back hurts" not in caplog.text
    assert re.search(
        r"Rasa failed on an SMS from [0-9a-f]{12} \(RuntimeError\)", caplog.text
    )


# --- Nothing the patient typed is lost ------------------------------------------------

PHONE2 = "+18175550456"


def outbox_rows(sms: Sms) -> List[Tuple[Any, ...]]:
    """The outbox table as it is on disk: (state, phone, body, message_sid)."""
    with sqlite3.connect(sms.channel.store.path) as db:
        return db.execute(
            "SELECT state, phone, body, message_sid FROM sms_outbox ORDER BY id"
        ).fetchall()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_sent_replies_keep_twilio_s_sid_but_no_number_or_text(sms: Sms) -> None:
    assert await sms.send("tell me everything") == [
        "\n\n".join(part["text"] for part in LONG_ANSWER[:2]),
        "\n\n".join(part["text"] for part in LONG_ANSWER[2:]),
    ]
    assert outbox_rows(sms) == [
        ("sent", None, None, message.sid) for message in sms.twilio.messages
    ]


def test_outbox_order_claims_and_what_is_kept(tmp_path: Path) -> None:
    store = ChannelStore(tmp_path / "channels.db")
    store.queue_sms(PHONE, ["a", "b"], "key1", "c-1", now=100.0)
    store.queue_sms(PHONE2, ["c"], "key2", "c-2", now=100.0)
    # One reply per number at a time: "b" waits for "a".
    assert [sms.body for sms in store.due_sms(now=100.0)] == ["a", "c"]
    a, c = store.due_sms(now=100.0)
    assert store.claim_sms(a.id, now=100.0, until=115.0)
    assert not store.claim_sms(a.id, now=100.0, until=115.0)  # a second sender
    assert [sms.body for sms in store.due_sms(now=101.0)] == ["c"]
    store.sms_sent(a.id, now=101.0, http_status=201, message_sid="SM1")
    store.sms_failed(c.id, now=101.0, reason="refused by Twilio", http_status=400)
    assert [sms.body for sms in store.due_sms(now=101.0)] == ["b"]
    assert store.pending_sms() == 1 and store.next_sms_due() == 100.0
    assert [f.phone_key for f in store.failed_sms(since=0)] == ["key2"]


@pytest.mark.parametrize("fault", ["503 for 20 s", "no connection for 30 s"])
async def test_an_outage_within_the_window_loses_no_reply(
    tmp_path: Path, twilio: FakeTwilioApi, fault: str
) -> None:
    # The default one-hour window; short waits, so that the test ends soon after
    # Twilio is back.
    retry = RetryPolicy(first_delay=0.2, max_delay=1.0, timeout=2.0)
    rasa = FakeRasa(script={"tell me everything": LONG_ANSWER})
    async with running(tmp_path, config_for(twilio), twilio, rasa, retry) as sms:
        began = time.monotonic()
        if fault == "503 for 20 s":
            twilio.fail_for(20, status=503)
        else:
            twilio.refuse_connections_for(30)
        for text, phone in [
            ("first", PHONE),
            ("tell me everything", PHONE),
            ("hello there", PHONE2),
            ("last", PHONE),
        ]:
            status, _, _ = await sms.post(question_form(text, phone))
            assert status == 200
        await sms.channel.drain()
        took = time.monotonic() - began
    assert twilio.sent_to(PHONE) == [
        "You said: first",
        "\n\n".join(part["text"] for part in LONG_ANSWER[:2]),
        "\n\n".join(part["text"] for part in LONG_ANSWER[2:]),
        "You said: last",
    ]
    assert twilio.sent_to(PHONE2) == ["You said: hello there"]
    assert (20 if fault.startswith("503") else 30) <= took < 45


async def test_a_timeout_is_retried(tmp_path: Path, twilio: FakeTwilioApi) -> None:
    retry = RetryPolicy(window=10.0, first_delay=0.01, max_delay=0.05, timeout=0.3)
    async with running(tmp_path, config_for(twilio), twilio, FakeRasa(), retry) as sms:
        twilio.slow_next(1, seconds=1.0)  # dropped after the client gave up
        assert await sms.send("what is a spasm") == ["You said: what is a spasm"]
    assert twilio.attempts == 2


async def test_a_timeout_after_twilio_accepted_sends_twice_rather_than_never(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    # Twilio's Messages API has no idempotency key: a reply is better twice than
    # lost.
    retry = RetryPolicy(window=10.0, first_delay=0.01, max_delay=0.05, timeout=0.3)
    async with running(tmp_path, config_for(twilio), twilio, FakeRasa(), retry) as sms:
        twilio.slow_next(1, seconds=1.0, accept=True)
        await sms.send("what is a spasm")
        assert twilio.wait_for_messages(PHONE, 2, timeout=5) == [
            "You said: what is a spasm",
            "You said: what is a spasm",
        ]


async def test_a_pending_reply_survives_a_restart(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    twilio.fail_for(3600, status=503)
    retry = RetryPolicy(first_delay=0.05, max_delay=0.2)
    first = FakeRasa()
    async with running(tmp_path, config_for(twilio), twilio, first, retry) as sms:
        status, _, _ = await sms.post(question_form("what is a spasm"))
        assert status == 200
        await wait_until(lambda: twilio.attempts >= 2)
    assert twilio.messages == []
    assert ChannelStore(tmp_path / "channels.db").pending_sms() == 1

    twilio.fail_for(0)  # Twilio is back; so is the assistant, on the same file
    second = FakeRasa()
    async with running(tmp_path, config_for(twilio), twilio, second, retry) as sms:
        await sms.channel.drain()
    assert twilio.sent_to(PHONE) == ["You said: what is a spasm"]
    assert first.texts == ["what is a spasm"] and second.received == []


async def test_nothing_pending_is_sent_after_stop(
    sms: Sms, caplog: pytest.LogCaptureFixture
) -> None:
    sms.twilio.fail_for(3600, status=503)
    status, _, _ = await sms.post(question_form("what is a spasm"))
    assert status == 200
    await wait_until(lambda: sms.twilio.attempts >= 1)
    assert await sms.send("STOP") == []
    sms.twilio.fail_for(0)
    await sms.channel.drain()
    assert sms.twilio.messages == []
    (failure,) = sms.channel.store.failed_sms(since=0)
    assert failure.reason == "opted out"
    assert outbox_rows(sms) == [("failed", None, None, None)]


async def test_the_same_message_sid_is_answered_once(tmp_path: Path, sms: Sms) -> None:
    form = question_form("what is a spasm")
    for _ in range(2):  # Twilio's retry of the webhook
        status, content_type, twiml = await sms.post(form)
        assert (status, content_type, twiml) == (
            200,
            "text/xml",
            '<?xml version="1.0" encoding="UTF-8"?><Response/>',
        )
    await sms.channel.drain()
    assert sms.rasa.texts == ["what is a spasm"]
    assert sms.twilio.sent_to(PHONE) == ["You said: what is a spasm"]

    # Still once after a restart: the SID is on disk.
    rasa = FakeRasa()
    async with running(tmp_path, config_for(sms.twilio), sms.twilio, rasa) as again:
        status, _, _ = await again.post(form)
        assert status == 200
        await again.channel.drain()
    assert rasa.received == []
    assert sms.twilio.sent_to(PHONE) == ["You said: what is a spasm"]


def held(phone: str, text: str) -> ReceivedSms:
    return ReceivedSms(0, "SM" + uuid.uuid4().hex, phone, text, 0, "")


async def test_texts_a_stopped_server_left_are_answered_once_in_order(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    """A server killed after answering Twilio: another one answers its texts."""
    store = ChannelStore(tmp_path / "channels.db")
    expired = time.time() - 1  # the killed server stopped renewing its lease
    first = held(PHONE, "hello")
    store.receive_sms(first, "killed", expired)
    store.receive_sms(held(PHONE, "what is a spasm"), "killed", expired)
    store.receive_sms(held(PHONE2, "still held"), "alive", time.time() + 60)
    rasa = FakeRasa()
    async with running(tmp_path, config_for(twilio), twilio, rasa) as sms:
        await wait_until(lambda: len(twilio.sent_to(PHONE)) == 2)
        # Twilio's retry of a text the killed server had acknowledged.
        form = {"MessageSid": str(first.message_sid), "From": PHONE, "Body": "hello"}
        status, _, _ = await sms.post(form)
        assert status == 200
        await sms.channel.drain()
    assert rasa.texts == ["hello", "what is a spasm"]
    assert twilio.sent_to(PHONE) == ["You said: hello", "You said: what is a spasm"]
    assert twilio.sent_to(PHONE2) == []  # its server is alive: not taken
    assert store.unhandled_sms() == 1


async def test_a_text_read_before_its_server_died_is_answered_from_its_turn() -> None:
    """Killed after Rasa saved the turn, before the replies reached the outbox."""
    trackers = InMemoryTrackerStore(Domain.empty())
    buttons = [{"title": "Yes", "payload": "/affirm"}]
    events = [
        UserUttered("hi", message_id="SM1"),
        ActionExecuted("utter_greet"),
        BotUttered("Hello!"),
        BotUttered("Book now?", {"buttons": buttons}),
        ActionExecuted("action_listen"),
        UserUttered("next", message_id="SM2"),
        BotUttered("Next answer."),
    ]
    await trackers.save(DialogueStateTracker.from_events(PHONE, events))

    replies = await earlier_turn(trackers, InboundSms(PHONE, "hi", 0, "", "SM1"))
    assert replies is not None
    assert render_turn(replies) == (
        ["Hello!", "Book now?\n1. Yes\nReply 1"],
        [("Yes", "/affirm")],
    )
    assert await earlier_turn(trackers, InboundSms(PHONE, "x", 0, "", "SM3")) is None
    assert await earlier_turn(None, InboundSms(PHONE, "hi", 0, "", "SM1")) is None


async def test_a_slow_turn_keeps_its_text_from_another_server(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    """The lease is renewed while a turn runs, however long it is."""
    slow, other = FakeRasa(delay={"slow": 1.0}), FakeRasa()
    config = config_for(twilio)
    async with (
        running(tmp_path, config, twilio, slow, lease=0.2) as first,
        running(tmp_path, config, twilio, other, lease=0.2),
    ):
        status, _, _ = await first.post(question_form("slow"))
        assert status == 200
        await first.channel.drain()
    assert slow.texts == ["slow"] and other.received == []
    assert twilio.sent_to(PHONE) == ["You said: slow"]
    assert ChannelStore(tmp_path / "channels.db").unhandled_sms() == 0


@pytest.mark.parametrize("length", [3_000, 20_000])
async def test_a_very_long_text_is_answered(
    tmp_path: Path, twilio: FakeTwilioApi, length: int
) -> None:
    text = (paragraph(300, "q") + " My back hurts.")[-length:]
    assert len(text) == length
    read = text[:MAX_INBOUND_CHARS]
    rasa = FakeRasa(script={read: [{"text": "Thanks, I read your message."}]})
    async with running(tmp_path, config_for(twilio), twilio, rasa) as sms:
        assert await sms.send(text) == ["Thanks, I read your message."]
    assert rasa.texts == [read]


async def test_a_refused_reply_is_listed_for_staff_without_text_or_number(
    sms: Sms,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sms.twilio.opt_out(PHONE)  # at Twilio only: it answers 400, error 21610
    assert await sms.send("my back hurts") == []
    assert sms.twilio.attempts == 1  # a 4xx other than 429 is not tried again
    (failure,) = sms.channel.store.failed_sms(since=0)

    monkeypatch.setenv("CHANNEL_DB", str(sms.channel.store.path))
    assert staff_main(["sms-failures"]) == 0
    out = capsys.readouterr().out
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(failure.created_at))
    last = time.strftime("%Y-%m-%d %H:%M", time.localtime(failure.last_attempt_at))
    assert out.splitlines() == [
        f"{when}  text {failure.id}  number {sms.channel.log_id(PHONE)}  "
        f"conversation {conversation_key(PHONE)}",
        f"    refused by Twilio: 1 attempt(s), last {last}, Twilio status 400, "
        "error code 21610 (the number has unsubscribed (STOP) at Twilio)",
        "1 text(s) not delivered in the last 7 days, newest first. Their text and "
        "number are not kept; the number and conversation keys are those of the "
        "logs.",
    ]
    assert outbox_rows(sms) == [("failed", None, None, None)]


def test_sms_failures_with_no_database_yet(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "channels.db"
    monkeypatch.setenv("CHANNEL_DB", str(path))
    assert staff_main(["sms-failures", "--since", "2"]) == 0
    assert capsys.readouterr().out == (
        f"No texts were sent yet ({path} does not exist).\n"
    )
    assert not path.exists()


def test_the_retry_window_is_one_hour_unless_set(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = {"account_sid": SID, "auth_token": TOKEN, "from_number": FROM}

    def window() -> float:
        channel = TwilioSmsInput.from_credentials(credentials)
        assert isinstance(channel, TwilioSmsInput)
        return channel.outbox.policy.window

    monkeypatch.delenv("SMS_RETRY_WINDOW_SECONDS", raising=False)
    assert window() == DEFAULT_RETRY_WINDOW == 3600
    monkeypatch.setenv("SMS_RETRY_WINDOW_SECONDS", "7200")
    assert window() == 7200
    for bad in ("soon", "0", "-5", "inf"):
        monkeypatch.setenv("SMS_RETRY_WINDOW_SECONDS", bad)
        with caplog.at_level(logging.ERROR, logger="channels"):
            assert window() == 3600
        assert caplog.messages[-1] == (
            "SMS_RETRY_WINDOW_SECONDS must be a positive number of seconds; using 3600."
        )


def test_waits_double_from_one_second_to_a_minute_with_jitter() -> None:
    policy = RetryPolicy()
    for failed, longest in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (500, 60)]:
        waits = [policy.delay(failed) for _ in range(200)]
        assert all(longest / 2 <= wait <= longest for wait in waits)
        assert len(set(waits)) > 100  # spread, not in step
