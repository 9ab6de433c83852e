"""Booking conversations end to end: REST -> Rasa -> action server -> SQLite scheduler.

Everything real runs: the trained model, both servers, the embedded scheduler in the
test's own state directory. Times are asked for "as soon as possible" or on a weekday
near today, so the tests do not depend on the day they run.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from typing import Any, Dict, List, Tuple

import pytest
from testkit import domain_text

from tests.integration.conftest import INTRO, Assistant, Turn, turn

pytestmark = pytest.mark.integration

REFERENCE = re.compile(r"Your reference is ([A-Z0-9]{5,12})\.")


def new_sender() -> str:
    return f"booking-{uuid.uuid4().hex[:10]}"


def say(assistant: Assistant, sender: str, message: str) -> List[Dict[str, Any]]:
    replies = assistant.replies(sender, message)
    assert replies, f"no reply to {message!r}"
    return replies


def joined(replies: List[Dict[str, Any]]) -> str:
    return " ".join(str(reply.get("text", "")) for reply in replies)


def buttons(replies: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    return [button for reply in replies for button in reply.get("buttons") or []]


def start_booking(assistant: Assistant, sender: str) -> List[Dict[str, str]]:
    """Books dry needling as soon as possible, up to the offered times."""
    replies = say(assistant, sender, "I'd like to book an appointment")
    assert "What kind of visit" in joined(replies)
    titles = [button["title"] for button in buttons(replies)]
    assert "Dry needling" in titles
    replies = say(assistant, sender, "dry needling")
    assert "What day and time" in joined(replies)
    replies = say(assistant, sender, "as soon as possible")
    assert "open times" in joined(replies), joined(replies)
    offers = buttons(replies)
    assert 1 <= len(offers) <= 5
    return offers


def finish_booking(
    assistant: Assistant, sender: str, choice: str, name: str, phone: str
) -> Tuple[str, str]:
    """Picks an offer, gives name and phone, confirms: (read-back, reference)."""
    replies = say(assistant, sender, choice)
    assert "full name" in joined(replies), joined(replies)
    say(assistant, sender, name)
    readback = joined(say(assistant, sender, phone))
    assert "Shall I book it?" in readback, readback
    confirmation = joined(agree_without_reminder(assistant, sender, "yes"))
    match = REFERENCE.search(confirmation)
    assert match, confirmation
    return readback, match.group(1)


def agree_without_reminder(
    assistant: Assistant, sender: str, yes: str
) -> List[Dict[str, Any]]:
    """Says ``yes`` at the read-back, then no to the reminder question; the replies.

    On the web the reminder question comes after the read-back, on its own.
    """
    asked = say(assistant, sender, yes)
    assert len(asked) == 1, joined(asked)
    assert str(asked[0]["text"]).startswith("May we text you a reminder at"), asked
    choices = {button["title"]: button["payload"] for button in buttons(asked)}
    assert list(choices) == ["Yes, text me a reminder", "No reminder"]
    return say(assistant, sender, choices["No reminder"])


def bookings(assistant: Assistant) -> List[Tuple[str, str, str]]:
    with sqlite3.connect(assistant.scheduler_db) as connection:
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table'"
            )
        }
        assert "bookings" in tables, tables
        return list(
            connection.execute("SELECT reference, patient_phone, status FROM bookings")
        )


def test_book_end_to_end(assistant: Assistant) -> None:
    sender = new_sender()
    offers = start_booking(assistant, sender)
    readback, reference = finish_booking(
        assistant, sender, offers[0]["payload"], "Maria Lopez", "817-555-0100"
    )
    # The read-back names weekday, date, time and zone, exactly as offered.
    assert offers[0]["title"] in readback
    assert re.search(r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3} \d{1,2}, ", readback)
    assert re.search(r"\d{1,2}:\d{2} (AM|PM) C[SD]T", readback)
    assert "mobile (817) 555-0100." in readback  # as people write it
    assert (reference, "+18175550100", "booked") in bookings(assistant)


def test_typed_choice_and_changed_phone_before_confirming(
    assistant: Assistant,
) -> None:
    sender = new_sender()
    start_booking(assistant, sender)
    say(assistant, sender, "the second one")
    say(assistant, sender, "John Carter")
    readback = joined(say(assistant, sender, "817 555 0199"))
    assert "(817) 555-0199" in readback
    what = joined(say(assistant, sender, "no"))
    assert "What would you like to change?" in what
    asked = joined(say(assistant, sender, '/change_answer{"booking_field": "phone"}'))
    assert "mobile number" in asked
    readback = joined(say(assistant, sender, "682-555-0111"))
    assert "(682) 555-0111" in readback and "(817) 555-0199" not in readback
    confirmation = joined(agree_without_reminder(assistant, sender, "yes, book it"))
    assert REFERENCE.search(confirmation), confirmation


def test_faq_in_the_middle_then_back_to_the_form(assistant: Assistant) -> None:
    sender = new_sender()
    say(assistant, sender, "can I book a visit")
    replies = say(assistant, sender, "what is in the injection")
    text = joined(replies)
    assert "local anesthetic" in text.lower()
    assert "What kind of visit" in text  # the form asks again


def test_never_mind_stops_and_books_nothing(assistant: Assistant) -> None:
    sender = new_sender()
    offers = start_booking(assistant, sender)
    say(assistant, sender, offers[0]["payload"])
    before = len(bookings(assistant))
    reply = joined(say(assistant, sender, "never mind"))
    assert reply == domain_text("utter_booking_stopped")
    assert len(bookings(assistant)) == before
    # The stopped conversation is not stuck in the form.
    assert "virtual assistant" not in joined(say(assistant, sender, "hi"))


def test_emergency_wins_in_the_middle_of_booking(assistant: Assistant) -> None:
    sender = new_sender()
    start_booking(assistant, sender)
    replies = joined(
        say(
            assistant,
            sender,
            "I suddenly can't control my bladder and my legs are numb",
        )
    )
    assert "911" in replies


def test_slot_taken_by_someone_else_offers_the_next(assistant: Assistant) -> None:
    first, second = new_sender(), new_sender()
    offers = start_booking(assistant, first)
    # Another patient books the first offered time before this patient picks it.
    rival_offers = start_booking(assistant, second)
    assert rival_offers[0]["title"] == offers[0]["title"]
    finish_booking(
        assistant, second, rival_offers[0]["payload"], "Sam Rival", "214-555-0147"
    )
    replies = joined(say(assistant, first, offers[0]["payload"]))
    assert "just taken" in replies, replies
    assert offers[0]["title"] not in replies.split("just taken", 1)[1]


def test_check_reschedule_and_cancel_need_reference_and_phone(
    assistant: Assistant,
) -> None:
    sender = new_sender()
    offers = start_booking(assistant, sender)
    _, reference = finish_booking(
        assistant, sender, offers[0]["payload"], "Ana Garcia", "469-555-0182"
    )

    # Wrong phone: nothing about the booking is revealed.
    other = new_sender()
    say(assistant, other, "when is my appointment")
    say(assistant, other, reference)
    reply = joined(say(assistant, other, "817-555-0123"))
    assert reply.startswith(domain_text("utter_booking_not_found"))
    assert reference not in reply and "needling" not in reply.lower()

    # Right reference and phone: the details.
    checker = new_sender()
    say(assistant, checker, "when is my appointment")
    say(assistant, checker, reference.lower())
    details = joined(say(assistant, checker, "469 555 0182"))
    assert reference in details and offers[0]["title"] in details

    # Reschedule: a new booking, the old one cancelled.
    mover = new_sender()
    say(assistant, mover, "I need to reschedule")
    say(assistant, mover, reference)
    asked = joined(say(assistant, mover, "4695550182"))
    assert "What day and time" in asked, asked  # visit type, name, phone are known
    new_offers = buttons(say(assistant, mover, "as soon as possible"))
    readback = joined(say(assistant, mover, new_offers[-1]["payload"]))
    assert "Shall I book it?" in readback and "Ana Garcia" in readback
    done = joined(agree_without_reminder(assistant, mover, "yes"))
    assert "moved to" in done, done
    new_reference = re.search(r"new reference is ([A-Z0-9]+)", done)
    assert new_reference
    rows = {row[0]: row[2] for row in bookings(assistant)}
    assert rows[reference] == "cancelled"
    assert rows[new_reference.group(1)] == "booked"

    # Cancel the new one.
    canceller = new_sender()
    say(assistant, canceller, "cancel my appointment")
    say(assistant, canceller, new_reference.group(1))
    confirm = joined(say(assistant, canceller, "469-555-0182"))
    assert "Cancel your" in confirm
    cancelled = joined(say(assistant, canceller, "yes"))
    assert "is cancelled" in cancelled
    rows = {row[0]: row[2] for row in bookings(assistant)}
    assert rows[new_reference.group(1)] == "cancelled"


def test_invalid_phone_and_name_are_asked_again(assistant: Assistant) -> None:
    sender = new_sender()
    offers = start_booking(assistant, sender)
    say(assistant, sender, offers[0]["payload"])
    assert domain_text("utter_invalid_name") in joined(say(assistant, sender, "x"))
    say(assistant, sender, "Linda Carter")
    reply = joined(say(assistant, sender, "555-12"))
    assert domain_text("utter_invalid_phone") in reply


def test_lookup_asks_each_question_once(assistant: Assistant) -> None:
    reference_question = (domain_text("utter_ask_booking_reference"), [])
    for opening in ("I want to reschedule", "when is my appointment"):
        sender = new_sender()
        assert turn(assistant, sender, opening) == [(INTRO, []), reference_question]
        assert turn(assistant, sender, "ABC123") == [
            ("What mobile number can we reach you on?", [])
        ]
        assert turn(assistant, sender, "817 555 0142") == [
            (
                "I couldn't find a booking with that reference and phone number. "
                "Please check both and try again.",
                [],
            ),
            reference_question,
        ]


def test_changing_the_name_at_the_read_back_asks_only_for_the_name(
    assistant: Assistant,
) -> None:
    sender = new_sender()
    offers = start_booking(assistant, sender)
    say(assistant, sender, offers[0]["payload"])
    say(assistant, sender, "Dawn Price")
    confirm = [
        ("Yes, book it", "/affirm"),
        ("Change something", "/deny"),
        ("Stop", "/stop"),
    ]

    def readback(name: str) -> Turn:
        return [
            (
                f"Please check: dry needling on {offers[0]['title']}, for {name}, "
                "mobile (817) 555-0142. Shall I book it?",
                confirm,
            )
        ]

    assert turn(assistant, sender, "8175550142") == readback("Dawn Price")
    assert turn(assistant, sender, "/deny") == [
        (
            "What would you like to change?",
            [
                ("Day or time", '/change_answer{"booking_field": "time"}'),
                ("Visit type", '/change_answer{"booking_field": "visit_type"}'),
                ("Name", '/change_answer{"booking_field": "name"}'),
                ("Phone number", '/change_answer{"booking_field": "phone"}'),
            ],
        )
    ]
    assert turn(assistant, sender, "Name") == [("What is the patient's full name?", [])]
    assert turn(assistant, sender, "Dana Price") == readback("Dana Price")
