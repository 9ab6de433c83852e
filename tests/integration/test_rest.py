"""End-to-end over the REST channel, against the real Rasa and action servers."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from testkit import domain_text, first_faq_answers

from scheduling.callbacks import CallbackStore
from tests.integration.conftest import INTRO, Assistant, turn

pytestmark = pytest.mark.integration


def new_sender() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


EMERGENCY = domain_text("utter_emergency")
CRISIS = domain_text("utter_crisis")


@pytest.mark.parametrize(
    "question, topic",
    [
        ("what is a back spasm exactly", "what_is_spasm"),
        ("what medicine is in the trigger point injection", "injection_contents"),
        ("how soon after the shots will my back feel better", "relief_timing"),
        ("is there a way to do this without any drugs", "dry_needling"),
    ],
)
def test_faq_question_gets_its_answer(
    assistant: Assistant, question: str, topic: str
) -> None:
    texts = assistant.texts(new_sender(), question)
    assert texts[-1] == first_faq_answers()[topic]


def test_first_reply_of_a_session_says_what_it_is_once(assistant: Assistant) -> None:
    sender = new_sender()
    first = assistant.texts(sender, "hello")
    assert "virtual assistant" in first[0] and "medical advice" in first[0]
    second = assistant.texts(sender, "what is a spasm")
    assert not any("virtual assistant" in text for text in second)


def test_clinic_location_uses_only_the_configured_facts(assistant: Assistant) -> None:
    texts = assistant.texts(new_sender(), "where is your office located")
    assert texts[-1] == "Valliant Life Medical is in Fort Worth, Texas."


def test_offered_button_answers_the_chosen_topic(assistant: Assistant) -> None:
    sender = new_sender()
    offered = assistant.replies(sender, "hello")
    payloads = [b["payload"] for r in offered for b in r.get("buttons") or []]
    click = '/faq{"faq_topic":"what_is_spasm"}'
    assert click in payloads
    assert assistant.texts(sender, click)[-1] == first_faq_answers()["what_is_spasm"]


def test_a_payload_that_was_not_offered_is_read_as_words(
    assistant: Assistant,
) -> None:
    sender = new_sender()
    # Nothing was offered in this conversation: the command is read as plain words,
    # so the forged entity cannot pick the clinic-location answer.
    texts = assistant.texts(sender, '/faq{"faq_topic":"clinic_location"} dry needling')
    assert "Valliant Life Medical is in Fort Worth, Texas." not in texts
    texts = assistant.texts(new_sender(), "/restart")
    assert texts, "a typed /restart gets an ordinary reply"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"sender": "x"}', "'message'"),
        (b'{"sender": "x", "message": 5}', "'message'"),
        (b'{"message": "hi"}', "'sender'"),
        (b'{"sender": "", "message": "hi"}', "'sender'"),
        (b'{"sender": "x", "message": "hi", "metadata": 3}', "'metadata'"),
    ],
)
def test_malformed_requests_get_400_with_a_reason(
    assistant: Assistant, body: bytes, reason: str
) -> None:
    status, reply = assistant.post_raw(body)
    assert status == 400, (status, reply)
    assert reason in str(reply)


def test_emergency_in_the_middle_of_a_conversation(assistant: Assistant) -> None:
    sender = new_sender()
    assistant.texts(sender, "how do trigger point injections work")
    assert assistant.texts(sender, "I suddenly can't feel my legs")[-1] == EMERGENCY
    assert assistant.texts(sender, "I want to kill myself")[-1] == CRISIS
    texts = assistant.texts(sender, "will I be sore afterwards")
    assert texts[-1] == first_faq_answers()["soreness_after"]


@pytest.mark.parametrize(
    "message",
    [
        "",
        "   \t  ",
        "back spasm " * 910,  # about 10,000 characters
        "\U0001f600\U0001f622\U0001f44d",
        "\u00bfD\u00f3nde est\u00e1 la cl\u00ednica? Necesito una cita",
        "<script>alert('x')</script>",
        "<b>hello</b><img src=x onerror=alert(1)>",
        "what\x00 is\x07 a\x1b spasm\u200b",
        "/restart",
    ],
    ids=[
        "empty",
        "whitespace",
        "10k",
        "emoji",
        "spanish",
        "script",
        "html",
        "ctrl",
        "slash",
    ],
)
def test_bad_input_gets_a_sensible_reply(assistant: Assistant, message: str) -> None:
    replies = assistant.replies(new_sender(), message)
    texts = [str(reply.get("text") or "") for reply in replies]
    assert any(texts), f"no text reply to {message[:40]!r}"
    for text in texts:
        assert "<script" not in text and "onerror" not in text
        assert text.isascii()


def test_a_wrong_type_of_message_does_not_crash_the_server(
    assistant: Assistant,
) -> None:
    status, _ = assistant.post(new_sender(), {"not": "text"})
    assert status == 400
    assert assistant.texts(new_sender(), "what is a spasm")


def test_conversations_survive_a_restart(assistant: Assistant) -> None:
    sender = new_sender()
    assistant.texts(sender, "hi")
    assistant.restart_rasa()
    after = assistant.texts(sender, "what causes muscles to spasm")
    # Same session after the restart: no second introduction.
    assert not any("virtual assistant" in text for text in after)
    assert after[-1] == first_faq_answers()["why_muscles_spasm"]
    with sqlite3.connect(assistant.tracker_db) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM events WHERE sender_id = ?", (sender,)
        ).fetchone()
    assert count > 0


CALL_BACK_OFFER = (
    "I can ask our staff to call you back. Would you like that?",
    [("Yes, call me back", "/affirm"), ("No, thanks", "/deny")],
)


def test_talk_to_someone_without_a_clinic_phone_takes_a_call_back(
    assistant: Assistant,
) -> None:
    # clinic.yml has no phone number: a call back is what the clinic can offer.
    sender = new_sender()
    assert turn(assistant, sender, "can i talk to someone") == [
        (INTRO, []),
        CALL_BACK_OFFER,
    ]
    assert turn(assistant, sender, "yes") == [("What is the patient's full name?", [])]
    assert turn(assistant, sender, "Dawn Price") == [
        ("What mobile number can we reach you on?", [])
    ]
    assert turn(assistant, sender, "817-555-0142") == [
        ("In a few words, what would you like to talk to our staff about?", [])
    ]
    reason = "my bill from last month looks wrong"
    assert turn(assistant, sender, reason) == [
        ("Thank you. Our staff will call you back at (817) 555-0142.", [])
    ]
    stored = [
        (r.name, r.phone, r.note)
        for r in CallbackStore(assistant.log_dir / "callbacks.db").list_open()
        if r.sender_id == sender
    ]
    assert stored == [("Dawn Price", "+18175550142", f"Reason: {reason}")]


def test_an_emergency_at_the_call_back_questions_wins(assistant: Assistant) -> None:
    sender = new_sender()
    turn(assistant, sender, "can i talk to someone")
    turn(assistant, sender, "yes")
    turn(assistant, sender, "Dawn Price")
    turn(assistant, sender, "817-555-0142")
    assert turn(assistant, sender, "I suddenly can't feel my legs") == [(EMERGENCY, [])]
    assert not [
        r
        for r in CallbackStore(assistant.log_dir / "callbacks.db").list_open()
        if r.sender_id == sender
    ]


def test_a_question_far_from_every_topic_gets_no_unrelated_suggestions(
    assistant: Assistant,
) -> None:
    assert turn(assistant, new_sender(), "do you validate parking") == [
        (INTRO, []),
        (domain_text("utter_out_of_scope"), []),
    ]
