"""The conversation lint catches what patients must never read."""

from __future__ import annotations

from typing import Any, Dict, List

from transcript_lint import problems

WELCOME = {"text": "What kind of visit would you like to book?", "buttons": ["A", "B"]}


def turn(**parts: Any) -> Dict[str, Any]:
    return {"patient": "hi", "web": [], "sms": ["ok"], **parts}


def test_a_clean_transcript_passes() -> None:
    turns = [turn(web=[WELCOME], sms=["What kind?\n1. A\n2. B\nReply 1 or 2"])]
    assert problems(turns) == []


def test_the_two_apologies_every_booking_used_to_start_with() -> None:
    web: List[Dict[str, Any]] = [
        {"text": "Sorry, I didn't catch which visit you need. Please pick one."},
        {"text": "Sorry, which of the times did you mean? Please pick one."},
        WELCOME,
    ]
    found = problems([turn(web=web, sms=["x\n1. A\n2. B"])])
    assert found == ["turn 1 ('hi'): 2 apologies in one reply"]


def test_an_apology_after_a_button_the_assistant_offered() -> None:
    web = [{"text": "Sorry, which of the times did you mean?"}]
    found = problems([{"choose": "Tue 9:00 AM", "web": web, "sms": ["x"]}])
    assert found == [
        "turn 1 ('Tue 9:00 AM'): apologises for input not given: "
        "'Sorry, which of the times did you mean?'"
    ]


def test_a_question_asked_twice_and_the_same_message_twice() -> None:
    question = {"text": "What is your booking reference?"}
    found = problems([turn(web=[question, question])])
    assert found == [
        "turn 1 ('hi'): the same message twice: 'What is your booking reference?'",
        "turn 1 ('hi'): a question asked twice",
    ]


def test_empty_messages_long_or_non_gsm_sms_and_missing_numbers() -> None:
    found = problems(
        [
            turn(web=[{"text": " "}], sms=[""]),
            turn(sms=["x" * 1601]),
            turn(sms=["Llame al 911 \u2014 ahora"]),
            turn(web=[WELCOME], sms=["What kind of visit would you like to book?"]),
        ]
    )
    assert found == [
        "turn 1 ('hi'): an empty message",
        "turn 1 ('hi'): an empty SMS",
        "turn 2 ('hi'): an SMS of 1601 characters",
        "turn 3 ('hi'): SMS characters outside GSM-7: ['\u2014']",
        "turn 4 ('hi'): choices on the web, no numbered list by SMS",
    ]


def test_a_turn_with_each_channel_its_own_answer_may_differ_in_choices() -> None:
    # After the read-back the web asks about reminders with buttons, while SMS
    # answered that question in the read-back itself and is one step further on.
    own_answers = {"web": "Yes, book it", "sms": "1"}
    consent = {"text": "May we text you a reminder?", "buttons": ["Yes", "No"]}
    apart = turn(patient=own_answers, web=[consent], sms=["Done: you're booked."])
    together = turn(web=[consent], sms=["Done: you're booked."])
    assert problems([apart]) == []
    assert problems([together]) == [
        "turn 1 ('hi'): choices on the web, no numbered list by SMS"
    ]
