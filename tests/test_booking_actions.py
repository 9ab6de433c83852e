"""Unit tests of the booking validators and actions (actions/booking*.py, callback.py).

They run against the real embedded scheduler (SQLite in a temporary directory) with
the project's own scheduling section of clinic.yml and a fixed clock: Monday
2026-12-07, 8:00 AM in Fort Worth.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from zoneinfo import ZoneInfo

import pytest
from rasa_sdk import FormValidationAction, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from testkit import PROJECT_ROOT, TrackerFactory, render

from actions.booking import callback
from actions.booking import common as booking_common
from actions.booking import form as booking_form
from actions.booking import lookup as booking_lookup
from actions.booking.offers import MAX_OFFERS, OfferFinder, slot_from_entry
from scheduling.base import BackendUnavailable, Patient
from scheduling.callbacks import CallbackStore
from scheduling.config import SchedulingConfig, load_scheduling_config
from scheduling.sqlite_backend import SqliteScheduler
from scheduling.timeparse import TimePreferenceError

CHICAGO = ZoneInfo("America/Chicago")
NOW = datetime(2026, 12, 7, 8, 0, tzinfo=CHICAGO)


@pytest.fixture
def config() -> SchedulingConfig:
    return load_scheduling_config(PROJECT_ROOT / "clinic.yml")


@pytest.fixture
def scheduler(
    tmp_path: Path, config: SchedulingConfig, monkeypatch: pytest.MonkeyPatch
) -> SqliteScheduler:
    real = SqliteScheduler(tmp_path / "scheduler.db", config, clock=lambda: NOW)
    monkeypatch.setattr(booking_common, "get_scheduler", lambda: real)
    monkeypatch.setattr(booking_common, "scheduling_config", lambda: config)
    monkeypatch.setattr(booking_common, "now", lambda: NOW)
    monkeypatch.setenv("CALLBACK_DB", str(tmp_path / "callbacks.db"))
    return real


def responses(dispatcher: CollectingDispatcher) -> List[Optional[str]]:
    return [message.get("response") for message in dispatcher.messages]


def slots_of(events: List[Any]) -> Dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def spacy(*entities: tuple[str, str]) -> List[Dict[str, str]]:
    return [{"entity": label, "value": text} for label, text in entities]


def tracker_with(
    make_tracker: TrackerFactory,
    text: str,
    intent: str = "inform",
    hints: Optional[List[Dict[str, str]]] = None,
    **slots: Any,
) -> Tracker:
    tracker = make_tracker(text=text, intent=intent, slots=slots)
    tracker.latest_message["spacy_entities"] = hints or []
    return tracker


async def offers_for(
    make_tracker: TrackerFactory, text: str = "tomorrow afternoon"
) -> List[Dict[str, Any]]:
    result = await booking_form.ValidateBookingForm().validate_time_preference(
        text,
        CollectingDispatcher(),
        tracker_with(make_tracker, text, visit_type="dry_needling"),
        {},
    )
    offers: List[Dict[str, Any]] = result["offered_slots"]
    return offers


# --- extraction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent", "expected"),
    [
        ("dry needling", "faq", "dry_needling"),  # also an FAQ topic: an answer here
        ("the shots", "inform", "trigger_point_injection"),
        ("what is dry needling?", "faq", None),  # a question: the FAQ rule answers
        ("I need a shot, I can't feel my legs", "emergency", None),
        ("never mind", "stop", None),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_extract_visit_type_when_asked(
    make_tracker: TrackerFactory, text: str, intent: str, expected: Optional[str]
) -> None:
    tracker = tracker_with(make_tracker, text, intent, requested_slot="visit_type")
    extracted = await booking_form.ValidateBookingForm().extract_visit_type(
        CollectingDispatcher(), tracker, {}
    )
    assert extracted.get("visit_type") == expected


@pytest.mark.usefixtures("scheduler")
async def test_a_new_date_later_in_the_form_is_a_new_time_preference(
    make_tracker: TrackerFactory,
) -> None:
    tracker = tracker_with(
        make_tracker,
        "actually make it friday morning",
        hints=spacy(("DATE", "friday"), ("TIME", "morning")),
        requested_slot="patient_name",
        time_preference="tomorrow",
    )
    extracted = await booking_form.ValidateBookingForm().extract_time_preference(
        CollectingDispatcher(), tracker, {}
    )
    assert extracted == {"time_preference": "actually make it friday morning"}


@pytest.mark.usefixtures("scheduler")
async def test_questions_are_not_answers(make_tracker: TrackerFactory) -> None:
    form = booking_form.ValidateBookingForm()
    for requested, extract in [
        ("time_preference", form.extract_time_preference),
        ("patient_name", form.extract_patient_name),
        ("patient_phone", form.extract_patient_phone),
        ("appointment_slot", form.extract_appointment_slot),
    ]:
        tracker = tracker_with(
            make_tracker, "how soon will I feel better", "faq", requested_slot=requested
        )
        assert await extract(CollectingDispatcher(), tracker, {}) == {}


# --- validation ---------------------------------------------------------------------


@pytest.mark.usefixtures("scheduler")
async def test_unknown_visit_type_is_asked_again(make_tracker: TrackerFactory) -> None:
    dispatcher = CollectingDispatcher()
    result = await booking_form.ValidateBookingForm().validate_visit_type(
        "something blue", dispatcher, tracker_with(make_tracker, "something blue"), {}
    )
    assert result == {"visit_type": None}
    assert responses(dispatcher) == ["utter_visit_type_not_understood"]


async def test_time_preference_finds_up_to_five_open_slots_in_the_window(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    offers = await offers_for(make_tracker, "tomorrow afternoon")
    assert 1 <= len(offers) <= 5
    for offer in offers:
        start = datetime.fromisoformat(offer["start"])
        assert start.date() == date(2026, 12, 8)
        assert 12 <= start.hour < 17
        assert offer["label"].startswith("Tue Dec 8, ")
        assert offer["label"].endswith(" CST")


@pytest.mark.parametrize(
    ("text", "said", "first"),
    [
        pytest.param(
            "wednesday at 10",
            [],
            datetime(2026, 12, 9, 10, 0, tzinfo=CHICAGO),
            id="in-the-window",
        ),
        pytest.param(
            # The clinic's example hours have no weekend: Monday's first time.
            "saturday at 3",
            ["utter_nearest_times"],
            datetime(2026, 12, 14, 8, 0, tzinfo=CHICAGO),
            id="closed-then-the-nearest",
        ),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_a_time_gets_its_open_times_or_the_nearest_with_a_note(
    make_tracker: TrackerFactory, text: str, said: List[str], first: datetime
) -> None:
    dispatcher = CollectingDispatcher()
    result = await booking_form.ValidateBookingForm().validate_time_preference(
        text, dispatcher, tracker_with(make_tracker, text, visit_type="evaluation"), {}
    )
    assert responses(dispatcher) == said
    assert datetime.fromisoformat(result["offered_slots"][0]["start"]) == first


@pytest.mark.parametrize(
    ("text", "response"),
    [
        ("yesterday", "utter_time_in_past"),
        ("in 6 months", "utter_time_too_far"),
        ("purple", "utter_time_not_understood"),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_unusable_times_are_explained(
    make_tracker: TrackerFactory, text: str, response: str
) -> None:
    dispatcher = CollectingDispatcher()
    result = await booking_form.ValidateBookingForm().validate_time_preference(
        text, dispatcher, tracker_with(make_tracker, text, visit_type="evaluation"), {}
    )
    assert result == {"time_preference": None}
    assert responses(dispatcher) == [response]


async def test_scheduler_down_while_searching_ends_the_form(
    make_tracker: TrackerFactory,
    tmp_path: Path,
    config: SchedulingConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    broken = SqliteScheduler(blocker / "scheduler.db", config, clock=lambda: NOW)
    monkeypatch.setattr(booking_common, "get_scheduler", lambda: broken)
    monkeypatch.setattr(booking_common, "scheduling_config", lambda: config)
    monkeypatch.setattr(booking_common, "now", lambda: NOW)
    tracker = tracker_with(make_tracker, "asap", visit_type="dry_needling")
    result = await booking_form.ValidateBookingForm().validate_time_preference(
        "asap", CollectingDispatcher(), tracker, {}
    )
    assert result == {"time_preference": "asap", "scheduler_down": True}
    assert (
        await booking_form.ValidateBookingForm().required_slots(
            ["visit_type"],
            CollectingDispatcher(),
            tracker_with(make_tracker, "asap", scheduler_down=True),
            {},
        )
        == []
    )


async def test_picking_an_offer_holds_it(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    offers = await offers_for(make_tracker)
    tracker = tracker_with(
        make_tracker, "", visit_type="dry_needling", offered_slots=offers
    )
    result = await booking_form.ValidateBookingForm().validate_appointment_slot(
        "option:2", CollectingDispatcher(), tracker, {}
    )
    assert result["appointment_slot"] == offers[1]["id"]
    assert result["hold_id"]
    # Held: no longer offered to anyone else.
    again = await offers_for(make_tracker)
    assert offers[1]["id"] not in [offer["id"] for offer in again]


async def test_a_slot_taken_meanwhile_gets_fresh_offers(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    offers = await offers_for(make_tracker)
    taken = slot_from_entry(offers[0])
    scheduler.book(taken, Patient("Sam Rival", "+12145550147"), "rival-key")
    dispatcher = CollectingDispatcher()
    tracker = tracker_with(
        make_tracker,
        "the first one",
        visit_type="dry_needling",
        time_preference="tomorrow afternoon",
        offered_slots=offers,
    )
    result = await booking_form.ValidateBookingForm().validate_appointment_slot(
        "text", dispatcher, tracker, {}
    )
    assert responses(dispatcher) == ["utter_slot_taken"]
    assert result["appointment_slot"] is None
    assert taken.slot_id not in [offer["id"] for offer in result["offered_slots"]]


INVALID_CONTACT = {
    "patient_name": "utter_invalid_name",
    "patient_phone": "utter_invalid_phone",
}


@pytest.mark.parametrize(
    ("slot", "value", "expected"),
    [
        ("patient_name", "Maria Lopez", "Maria Lopez"),
        ("patient_name", "maria", "Maria"),
        ("patient_name", "12345", None),
        ("patient_phone", "(817) 555-0100", "+18175550100"),
        ("patient_phone", "555-0100", None),
        ("patient_phone", "none", None),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_validate_name_and_phone(
    make_tracker: TrackerFactory, slot: str, value: str, expected: Optional[str]
) -> None:
    dispatcher = CollectingDispatcher()
    validate = getattr(booking_form.ValidateBookingForm(), f"validate_{slot}")
    result = await validate(value, dispatcher, tracker_with(make_tracker, value), {})
    assert result == {slot: expected}
    assert responses(dispatcher) == ([] if expected else [INVALID_CONTACT[slot]])


@pytest.mark.parametrize(
    ("text", "intent", "entities", "expected"),
    [
        ("yes", "affirm", [], {"booking_confirmed": True}),
        ("no", "deny", [], {"booking_confirmed": None}),
        (
            "",
            "change_answer",
            [{"entity": "booking_field", "value": "phone"}],
            {"patient_phone": None, "booking_confirmed": None},
        ),
        (
            "my name is spelled wrong",
            "change_answer",
            [],
            {"patient_name": None, "booking_confirmed": None},
        ),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_confirmation_answers(
    make_tracker: TrackerFactory,
    text: str,
    intent: str,
    entities: List[Dict[str, str]],
    expected: Dict[str, Any],
) -> None:
    tracker = make_tracker(
        text=text,
        intent=intent,
        entities=entities,
        slots={"requested_slot": "booking_confirmed", "visit_type": "dry_needling"},
    )
    dispatcher = CollectingDispatcher()
    result = await booking_form.ValidateBookingForm().extract_booking_confirmed(
        dispatcher, tracker, {}
    )
    assert result == expected
    if intent == "deny":
        assert responses(dispatcher) == ["utter_what_to_change"]


# --- names and phone numbers through the whole form validation -----------------------
#
# Intents and spaCy entities are what the trained model gives for each message
# (models/clinic.tar.gz, parsed with rasa.core.agent.Agent.parse_message): many real
# names are classified as another language, off topic, or a fallback.


async def run_form(
    form: booking_common.ContactAnswers,
    domain: Dict[str, Any],
    tracker: Tracker,
) -> Tuple[List[Dict[str, Any]], List[Optional[str]]]:
    """Runs a form's validation action as Rasa does mid-form: (events, responses)."""
    assert isinstance(form, FormValidationAction)
    tracker.active_loop = {"name": form.form_name()}
    dispatcher = CollectingDispatcher()
    events = await form.run(dispatcher, tracker, domain)
    return events, responses(dispatcher)


async def at_name_question(
    make_tracker: TrackerFactory,
    text: str,
    intent: str,
    hints: Optional[List[Dict[str, str]]] = None,
) -> Tracker:
    """The booking form at its name question, a time held: ``text`` is the answer."""
    offers = await offers_for(make_tracker)
    return tracker_with(
        make_tracker,
        text,
        intent,
        hints,
        requested_slot="patient_name",
        visit_type="dry_needling",
        time_preference="tomorrow afternoon",
        offered_slots=offers,
        appointment_slot=offers[0]["id"],
        hold_id="hold-1",
    )


def person(text: str) -> List[Dict[str, str]]:
    return spacy(("PERSON", text))


@pytest.mark.parametrize(
    ("text", "intent", "hints", "expected"),
    [
        # The names once refused in a loop.
        ("Marisol Quintanilla", "other_language", person("Marisol Quintanilla"), None),
        ("Ximena Alvarado", "other_language", person("Ximena Alvarado"), None),
        ("Jesus Quintero", "other_language", person("Jesus Quintero"), None),
        ("Rocio Villalobos", "other_language", person("Rocio Villalobos"), None),
        ("Esperanza Cabrera", "other_language", person("Esperanza Cabrera"), None),
        ("Socorro Delgado", "other_language", [], None),
        ("Oluwaseun Adeyemi", "other_language", [], None),
        # Typed in lower case: the same intents.
        ("marisol quintanilla", "other_language", [], "Marisol Quintanilla"),
        ("juan carlos de la cruz", "other_language", [], "Juan Carlos de la Cruz"),
        ("Carmen Sánchez de la Vega", "other_language", [], None),
        ("Chukwuemeka Okonkwo", "nlu_fallback", person("Chukwuemeka Okonkwo"), None),
        ("Ngozi Eze", "other_language", person("Ngozi Eze"), None),
        ("Trần Thị Hương", "other_language", person("Trần Thị Hương"), None),
        ("Nguyen Van An", "inform", person("Nguyen Van An"), None),
        ("王小明", "nlu_fallback", [], None),
        ("Wang Xiaoming", "nlu_fallback", person("Wang Xiaoming"), None),
        ("Li Na", "other_language", person("Li Na"), None),
        ("محمد عبد الله", "other_language", [], None),
        ("Mohammed bin Abdullah", "inform", person("Mohammed bin Abdullah"), None),
        ("प्रिया शर्मा", "other_language", [], None),
        ("Siobhan O'Sullivan", "inform", person("O'Sullivan"), None),
        ("Aoife Ní Bhriain", "other_language", [], None),
        ("Pieter van der Berg", "inform", person("Pieter van der"), None),
        ("Lotte van den Broek", "other_language", person("Lotte van den"), None),
        ("Kalani Kamakaʻala", "other_language", person("Kalani Kamakaʻala"), None),
        ("Keali‘i Nāone", "nlu_fallback", person("Keali‘i Nāone"), None),
        ("김민준", "other_language", [], None),
        ("Иван Петров", "other_language", [], None),
        ("Γιώργος Παπαδόπουλος", "other_language", [], None),
        ("Suharto", "nlu_fallback", [], None),
        ("Madonna", "inform", [], None),
        ("Esperanza", "other_language", [], None),
        (
            "me llamo Marisol Quintanilla",
            "other_language",
            person("Marisol Quintanilla"),
            "Marisol Quintanilla",
        ),
        # Names with English words the classifier knows: written like names.
        ("Dawn Price", "ask_cost", [], None),
        ("Will Power", "faq", [], None),
        # A month in a name is no new time.
        ("June Carter", "inform", spacy(("DATE", "June"), ("PERSON", "Carter")), None),
    ],
)
async def test_names_are_accepted_whatever_their_intent(
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
    scheduler: SqliteScheduler,
    text: str,
    intent: str,
    hints: List[Dict[str, str]],
    expected: Optional[str],
) -> None:
    tracker = await at_name_question(make_tracker, text, intent, hints)
    events, said = await run_form(booking_form.ValidateBookingForm(), domain, tracker)
    assert events == [SlotSet("patient_name", expected or text)]
    assert said == []


@pytest.mark.parametrize(
    ("text", "intent", "hints"),
    [
        # Left to the rules, which answer and then ask for the name again.
        ("I have crushing chest pain", "emergency", []),
        ("never mind", "stop", []),
        ("what is dry needling?", "faq", []),
        ("how much is it", "ask_cost", []),
        ("do you take medicaid", "ask_insurance", []),
        ("hello", "greet", []),
        ("thank you", "thank", []),
        ("quiero hacer una cita para mañana", "other_language", []),
        # A new time, not a name.
        (
            "actually make it friday morning",
            "inform",
            spacy(("DATE", "friday"), ("TIME", "morning")),
        ),
    ],
)
async def test_what_is_no_name_is_not_taken_for_one(
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
    scheduler: SqliteScheduler,
    text: str,
    intent: str,
    hints: List[Dict[str, str]],
) -> None:
    tracker = await at_name_question(make_tracker, text, intent, hints)
    events, said = await run_form(booking_form.ValidateBookingForm(), domain, tracker)
    assert "patient_name" not in slots_of(events)
    assert said == []


@pytest.mark.parametrize(
    ("text", "intent", "hints"),
    [
        ("yes", "affirm", []),
        ("no", "deny", []),
        ("12345", "inform", spacy(("DATE", "12345"))),
        ("Robert 123", "inform", person("Robert 123")),
        ("x", "nlu_fallback", []),
    ],
)
async def test_an_answer_that_is_no_name_is_asked_again(
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
    scheduler: SqliteScheduler,
    text: str,
    intent: str,
    hints: List[Dict[str, str]],
) -> None:
    tracker = await at_name_question(make_tracker, text, intent, hints)
    events, said = await run_form(booking_form.ValidateBookingForm(), domain, tracker)
    assert events == [SlotSet("patient_name", None)]
    assert said == ["utter_invalid_name"]


# spaCy reads a bare ten-digit number as a DATE; the others it leaves alone.
PHONE_ANSWERS = [
    ("8175550188", spacy(("DATE", "8175550188"))),
    ("817-555-0188", []),
    ("(817) 555-0188", []),
    ("817.555.0188", []),
    ("+1 817 555 0188", []),
    ("1-817-555-0188", []),
    ("my cell is 817 555 0188", []),
]


@pytest.mark.parametrize(
    ("text", "hints", "phone", "said"),
    [(text, hints, "+18175550188", []) for text, hints in PHONE_ANSWERS]
    + [
        pytest.param(
            "at 3pm tomorrow",
            spacy(("TIME", "3pm tomorrow")),
            None,
            ["utter_invalid_phone"],
            id="a-time-is-no-phone-number",
        )
    ],
)
async def test_a_phone_number_in_any_format_keeps_the_chosen_time(
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
    scheduler: SqliteScheduler,
    text: str,
    hints: List[Dict[str, str]],
    phone: Optional[str],
    said: List[str],
) -> None:
    tracker = await at_name_question(make_tracker, text, "inform", hints)
    tracker.slots |= {"requested_slot": "patient_phone", "patient_name": "Ana Ruiz"}
    events, responses_said = await run_form(
        booking_form.ValidateBookingForm(), domain, tracker
    )
    assert events == [SlotSet("patient_phone", phone)]
    assert responses_said == said


@pytest.mark.parametrize(("text", "hints"), PHONE_ANSWERS)
@pytest.mark.parametrize(
    ("form", "slots"),
    [
        (booking_lookup.ValidateLookupForm(), {"booking_reference": "K7PM3Q"}),
        (callback.ValidateCallbackForm(), {"patient_name": "Ana Ruiz"}),
    ],
)
async def test_lookup_and_callback_read_phone_numbers_in_any_format(
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
    scheduler: SqliteScheduler,
    form: booking_common.ContactAnswers,
    slots: Dict[str, Any],
    text: str,
    hints: List[Dict[str, str]],
) -> None:
    tracker = tracker_with(
        make_tracker,
        text,
        "inform",
        hints,
        requested_slot="patient_phone",
        time_preference="tomorrow afternoon",
        **slots,
    )
    events, said = await run_form(form, domain, tracker)
    # The call-back form, its answers complete, also says it asks nothing more.
    asked = [SlotSet("requested_slot", None)] if slots.get("patient_name") else []
    assert events == [SlotSet("patient_phone", "+18175550188"), *asked]
    assert said == []


async def test_a_phone_number_at_the_read_back_is_no_new_time(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    tracker = await at_name_question(
        make_tracker, "8175550188", "inform", spacy(("DATE", "8175550188"))
    )
    tracker.slots["requested_slot"] = "booking_confirmed"
    form = booking_form.ValidateBookingForm()
    extracted = await form.extract_time_preference(CollectingDispatcher(), tracker, {})
    assert extracted == {}


@pytest.mark.usefixtures("scheduler")
async def test_a_new_booking_checks_no_cleared_answer(
    make_tracker: TrackerFactory, domain: Dict[str, Any]
) -> None:
    text = "I'd like to book an appointment"
    tracker = tracker_with(make_tracker, text, "book_appointment")
    start = await booking_form.ActionStartBooking().run(
        CollectingDispatcher(), tracker, {}
    )
    tracker.events = [{"event": "user", "text": text}, *start]
    events, said = await run_form(booking_form.ValidateBookingForm(), domain, tracker)
    assert said == []  # no "didn't catch which visit" for a visit not asked yet
    assert slots_of(events).get("visit_type") is None


# --- booking, lookup, cancel ----------------------------------------------------------


async def confirmed_tracker(
    make_tracker: TrackerFactory, sender: str = "test-patient"
) -> Tracker:
    offers = await offers_for(make_tracker)
    tracker = tracker_with(
        make_tracker,
        "yes",
        "affirm",
        visit_type="dry_needling",
        time_preference="tomorrow afternoon",
        offered_slots=offers,
        appointment_slot=offers[0]["id"],
        patient_name="Maria Lopez",
        patient_phone="+18175550100",
        booking_confirmed=True,
    )
    tracker.sender_id = sender
    return tracker


async def test_book_gives_a_reference_and_a_retry_books_once(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    tracker = await confirmed_tracker(make_tracker)
    first, second = CollectingDispatcher(), CollectingDispatcher()
    await booking_form.ActionBookAppointment().run(first, tracker, {})
    await booking_form.ActionBookAppointment().run(second, tracker, {})
    assert responses(first) == responses(second) == ["utter_booked"]
    assert first.messages[0]["reference"] == second.messages[0]["reference"]
    # The read-back label: the clinic closes for lunch 12-1, so 1:00 PM comes first.
    assert first.messages[0]["when"] == tracker.get_slot("offered_slots")[0]["label"]
    assert first.messages[0]["when"] == "Tue Dec 8, 1:00 PM CST"
    booked = scheduler.bookings_on(date(2026, 12, 8))
    assert [b.reference for b in booked] == [first.messages[0]["reference"]]


async def test_book_of_a_lost_slot_goes_back_to_the_form(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    tracker = await confirmed_tracker(make_tracker)
    chosen = slot_from_entry(tracker.get_slot("offered_slots")[0])
    scheduler.book(chosen, Patient("Sam Rival", "+12145550147"), "rival")
    dispatcher = CollectingDispatcher()
    events = await booking_form.ActionBookAppointment().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_slot_taken"]
    assert events[-1] == FollowupAction("booking_form")
    assert slots_of(events)["appointment_slot"] is None


async def test_a_request_the_scheduler_refuses_offers_a_call_back(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    tracker = await confirmed_tracker(make_tracker)
    tracker.slots["patient_phone"] = "817-555-0100"  # not E.164: InvalidRequest
    dispatcher = CollectingDispatcher()
    events = await booking_form.ActionBookAppointment().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_scheduler_down", "utter_offer_callback"]
    assert slots_of(events) == {"scheduler_down": True, "callback_offered": True}
    assert scheduler.bookings_on(date(2026, 12, 8)) == []


async def test_scheduler_down_offers_a_call_back_that_is_stored(
    make_tracker: TrackerFactory, tmp_path: Path, scheduler: SqliteScheduler
) -> None:
    tracker = tracker_with(make_tracker, "", scheduler_down=True)
    dispatcher = CollectingDispatcher()
    events = await booking_form.ActionBookAppointment().run(dispatcher, tracker, {})
    assert responses(dispatcher)[0] == "utter_scheduler_down"
    assert responses(dispatcher)[-1] == "utter_offer_callback"
    assert SlotSet("callback_offered", True) in events

    tracker = tracker_with(
        make_tracker,
        "",
        patient_name="Maria Lopez",
        patient_phone="+18175550100",
        time_preference="friday morning",
        visit_type="evaluation",
    )
    dispatcher = CollectingDispatcher()
    await callback.ActionRequestCallback().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_callback_stored"]
    stored = CallbackStore(tmp_path / "callbacks.db").list_open()
    assert len(stored) == 1
    assert stored[0].phone == "+18175550100"
    assert stored[0].preferred_time_text == "friday morning"
    assert "Evaluation" in stored[0].note


async def test_a_call_back_that_cannot_be_stored_is_never_said_to_be_taken(
    make_tracker: TrackerFactory,
    tmp_path: Path,
    scheduler: SqliteScheduler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "callbacks.db").mkdir()  # neither the database ...
    (tmp_path / "callbacks.db.spool").mkdir()  # ... nor its spool can be written
    tracker = tracker_with(
        make_tracker, "", patient_name="Maria Lopez", patient_phone="+18175550100"
    )
    dispatcher = CollectingDispatcher()

    events = await callback.ActionRequestCallback().run(dispatcher, tracker, {})

    assert responses(dispatcher) == ["utter_action_unavailable"]
    assert events == [SlotSet("callback_offered", False)]


async def booked_reference(make_tracker: TrackerFactory) -> str:
    dispatcher = CollectingDispatcher()
    tracker = await confirmed_tracker(make_tracker)
    await booking_form.ActionBookAppointment().run(dispatcher, tracker, {})
    return str(dispatcher.messages[0]["reference"])


async def looked_up(
    make_tracker: TrackerFactory, task: str, phone: str, **slots: Any
) -> Tuple[List[Dict[str, Any]], CollectingDispatcher, str]:
    """Books, then looks the booking up by its reference and ``phone``.

    The events and dispatcher of ``action_lookup_booking``, and the reference.
    """
    reference = await booked_reference(make_tracker)
    tracker = tracker_with(
        make_tracker,
        "",
        booking_reference=reference,
        patient_phone=phone,
        booking_task=task,
        **slots,
    )
    dispatcher = CollectingDispatcher()
    events = await booking_lookup.ActionLookupBooking().run(dispatcher, tracker, {})
    return events, dispatcher, reference


@pytest.mark.parametrize(
    ("attempts", "said", "asked_again"),
    [
        (0, ["utter_booking_not_found"], True),
        (1, ["utter_booking_not_found"], True),
        (2, ["utter_booking_not_found_final", "utter_contact_office"], False),
    ],
)
async def test_lookup_needs_reference_and_phone(
    make_tracker: TrackerFactory,
    scheduler: SqliteScheduler,
    attempts: int,
    said: List[str],
    asked_again: bool,
) -> None:
    events, dispatcher, reference = await looked_up(
        make_tracker, "check", "+12145550147", lookup_attempts=attempts
    )
    assert responses(dispatcher) == said
    assert reference not in str(dispatcher.messages)
    assert (events[-1] == FollowupAction("lookup_form")) is asked_again


async def test_lookup_then_cancel(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    events, dispatcher, reference = await looked_up(
        make_tracker, "cancel", "+18175550100"
    )
    assert responses(dispatcher) == ["utter_confirm_cancel"]
    assert slots_of(events) == {"found_booking": reference, "cancel_pending": True}

    dispatcher = CollectingDispatcher()
    tracker = tracker_with(
        make_tracker,
        "yes",
        "affirm",
        found_booking=reference,
        patient_phone="+18175550100",
    )
    await booking_lookup.ActionCancelBooking().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_cancelled"]
    assert scheduler.get_booking(reference, "+18175550100").status == "cancelled"


async def test_reschedule_lookup_starts_the_form_with_known_answers(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    events, _, reference = await looked_up(make_tracker, "reschedule", "+18175550100")
    slots = slots_of(events)
    assert slots["visit_type"] == "dry_needling"
    assert slots["patient_name"] == "Maria Lopez"
    assert slots["found_booking"] == reference
    assert events[-1] == FollowupAction("booking_form")


async def test_never_mind_releases_the_hold(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler
) -> None:
    offers = await offers_for(make_tracker)
    hold = scheduler.hold(slot_from_entry(offers[0]), timedelta(minutes=10))
    tracker = tracker_with(make_tracker, "never mind", "stop", hold_id=hold.hold_id)
    events = await booking_form.ActionStopBooking().run(
        CollectingDispatcher(), tracker, {}
    )
    assert slots_of(events)["hold_id"] is None
    assert offers[0]["id"] in [offer["id"] for offer in await offers_for(make_tracker)]


# --- each question asked once (issue 11) ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I want to reschedule", "reschedule_appointment"),
        ("cancel my appointment", "cancel_appointment"),
        ("when is my appointment", "check_appointment"),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_a_new_lookup_says_nothing_before_the_reference_question(
    make_tracker: TrackerFactory, domain: Dict[str, Any], text: str, intent: str
) -> None:
    # The reference cleared by action_start_lookup is not "checked": the form's own
    # question is then the only one.
    tracker = tracker_with(make_tracker, text, intent)
    start = await booking_lookup.ActionStartLookup().run(
        CollectingDispatcher(), tracker, {}
    )
    tracker.events = [{"event": "user", "text": text}, *start]
    events, said = await run_form(booking_lookup.ValidateLookupForm(), domain, tracker)
    assert said == []
    assert slots_of(events)["booking_reference"] is None


@pytest.mark.usefixtures("scheduler")
async def test_a_wrong_reference_is_asked_again_once(
    make_tracker: TrackerFactory, domain: Dict[str, Any]
) -> None:
    tracker = tracker_with(
        make_tracker,
        "817 555 0142",
        booking_reference="ABC123",
        patient_phone="+18175550142",
        booking_task="reschedule",
    )
    dispatcher = CollectingDispatcher()
    found = await booking_lookup.ActionLookupBooking().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_booking_not_found"]
    tracker.events = [{"event": "user", "text": "817 555 0142"}, *found[:-1]]
    tracker.slots |= slots_of(found)
    _, said = await run_form(booking_lookup.ValidateLookupForm(), domain, tracker)
    assert said == []  # then the form asks for the reference, once


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("817 555 0155", ["utter_reference_not_phone"]),
        ("8175550155", ["utter_reference_not_phone"]),
        ("(817) 555-0155", ["utter_reference_not_phone"]),
        ("12", ["utter_invalid_booking_reference"]),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_a_number_at_the_reference_question_says_why_not_the_question_twice(
    make_tracker: TrackerFactory, domain: Dict[str, Any], text: str, said: List[str]
) -> None:
    tracker = tracker_with(make_tracker, text, requested_slot="booking_reference")
    events, responses_said = await run_form(
        booking_lookup.ValidateLookupForm(), domain, tracker
    )
    assert responses_said == said  # then the form asks for the reference, once
    assert slots_of(events).get("booking_reference") is None


@pytest.mark.parametrize(
    ("text", "intent", "entities"),
    [
        (
            "/change_answer",
            "change_answer",
            [{"entity": "booking_field", "value": "name"}],
        ),
        ("Name", "inform", []),
        ("Name", "change_answer", []),
    ],
)
async def test_changing_the_name_at_the_read_back_only_clears_it(
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
    scheduler: SqliteScheduler,
    text: str,
    intent: str,
    entities: List[Dict[str, str]],
) -> None:
    tracker = await at_name_question(make_tracker, text, intent)
    tracker.latest_message["entities"] = entities
    tracker.slots |= {
        "requested_slot": "booking_confirmed",
        "patient_name": "Dawn Price",
        "patient_phone": "+18175550142",
    }
    events, said = await run_form(booking_form.ValidateBookingForm(), domain, tracker)
    assert said == []  # no "doesn't look like a name": the name question comes next
    assert slots_of(events) == {"patient_name": None, "booking_confirmed": None}


# --- wording: visit types in a sentence, phone numbers as people write them -----------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("trigger_point_injection", "trigger point injection"),
        ("dry_needling", "dry needling"),
        ("evaluation", "evaluation / consultation"),
        ("physical_therapy", "physical therapy"),
        ("chiropractic", "chiropractic care"),
    ],
)
async def test_offered_times_name_the_visit_type_in_plain_english(
    make_tracker: TrackerFactory,
    scheduler: SqliteScheduler,
    domain: Dict[str, Any],
    key: str,
    expected: str,
) -> None:
    offers = await offers_for(make_tracker)
    tracker = tracker_with(make_tracker, "", visit_type=key, offered_slots=offers)
    dispatcher = CollectingDispatcher()
    await booking_form.ActionAskAppointmentSlot().run(dispatcher, tracker, {})
    assert [render(message, domain) for message in dispatcher.messages] == [
        f"Here are the open times for {expected}. Which one suits you?"
        + "".join(
            f'\n{offer["label"]} /inform{{"appointment_option": "{number}"}}'
            for number, offer in enumerate(offers, start=1)
        )
    ]


async def test_times_after_the_window_asked_for_are_called_the_nearest(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler, domain: Dict[str, Any]
) -> None:
    # After "Nothing is open at that time." (one sentence each, no "here are" twice).
    offers = [dict(offer, in_window=False) for offer in await offers_for(make_tracker)]
    tracker = tracker_with(
        make_tracker, "", visit_type="dry_needling", offered_slots=offers
    )
    dispatcher = CollectingDispatcher()
    await booking_form.ActionAskAppointmentSlot().run(dispatcher, tracker, {})
    assert render(dispatcher.messages[0], domain).splitlines()[0] == (
        "Here are the nearest open times for dry needling after that. "
        "Which one suits you?"
    )


async def test_read_back_shows_the_phone_as_people_write_it(
    make_tracker: TrackerFactory, scheduler: SqliteScheduler, domain: Dict[str, Any]
) -> None:
    tracker = await at_name_question(make_tracker, "8175550142", "inform")
    tracker.slots |= {
        "requested_slot": "booking_confirmed",
        "visit_type": "evaluation",
        "patient_name": "Dawn Price",
        "patient_phone": "+18175550142",
    }
    dispatcher = CollectingDispatcher()
    await booking_form.ActionAskBookingConfirmed().run(dispatcher, tracker, {})
    label = tracker.slots["offered_slots"][0]["label"]
    assert [render(message, domain) for message in dispatcher.messages] == [
        f"Please check: evaluation / consultation on {label}, for Dawn Price, "
        "mobile (817) 555-0142. Shall I book it?"
    ]
    assert domain["responses"]["utter_check_booking"][0]["buttons"] == [
        {"title": "Yes, book it", "payload": "/affirm"},
        {"title": "Change something", "payload": "/deny"},
        {"title": "Stop", "payload": "/stop"},
    ]


# --- a call back when the patient asks for a person --------------------------------


async def test_a_call_back_for_a_person_asks_the_reason_and_stores_it(
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
    tmp_path: Path,
    scheduler: SqliteScheduler,
) -> None:
    form = callback.ValidateCallbackForm()
    slots = ["patient_name", "patient_phone", "callback_reason"]
    no_handoff = tracker_with(make_tracker, "")
    handoff = tracker_with(make_tracker, "", handoff_callback=True)
    dispatcher = CollectingDispatcher()
    assert await form.required_slots(slots, dispatcher, no_handoff, domain) == [
        "patient_name",
        "patient_phone",
    ]
    assert await form.required_slots(slots, dispatcher, handoff, domain) == slots

    reason = "my bill from last month looks wrong"
    tracker = tracker_with(
        make_tracker,
        reason,
        "faq",  # whatever the classifier makes of it, it is the reason
        requested_slot="callback_reason",
        handoff_callback=True,
        patient_name="Dawn Price",
        patient_phone="+18175550142",
    )
    events, said = await run_form(form, domain, tracker)
    assert said == []
    assert slots_of(events) == {"callback_reason": reason}

    tracker.slots["callback_reason"] = reason
    dispatcher = CollectingDispatcher()
    events = await callback.ActionRequestCallback().run(dispatcher, tracker, {})
    assert [(m["response"], m["phone"]) for m in dispatcher.messages] == [
        ("utter_callback_stored_handoff", "(817) 555-0142")
    ]
    assert slots_of(events)["handoff_callback"] is False
    assert slots_of(events)["callback_reason"] is None
    stored = CallbackStore(tmp_path / "callbacks.db").list_open()
    assert [(r.name, r.phone, r.note) for r in stored] == [
        ("Dawn Price", "+18175550142", f"Reason: {reason}")
    ]


@pytest.mark.parametrize(("text", "intent"), [("never mind", "stop"), ("", "inform")])
@pytest.mark.usefixtures("scheduler")
async def test_never_mind_or_nothing_is_no_reason(
    make_tracker: TrackerFactory, text: str, intent: str
) -> None:
    tracker = tracker_with(make_tracker, text, intent, requested_slot="callback_reason")
    extracted = await callback.ValidateCallbackForm().extract_callback_reason(
        CollectingDispatcher(), tracker, {}
    )
    assert extracted == {}


# --- a day or time named in the request to book -------------------------------------


async def started(
    make_tracker: TrackerFactory, domain: Dict[str, Any], text: str
) -> Tuple[Dict[str, Any], List[Optional[str]]]:
    """The slots and responses after ``text`` starts a booking (form activation)."""
    tracker = tracker_with(make_tracker, text, "book_appointment")
    start = await booking_form.ActionStartBooking().run(
        CollectingDispatcher(), tracker, {}
    )
    tracker.slots.update(slots_of(start))
    # As Rasa calls it: the slots set before the form starts, again at the end.
    prefilled = [
        SlotSet(name, value)
        for name, value in slots_of(start).items()
        if name in ("visit_type", "time_preference") and value is not None
    ]
    tracker.events = [{"event": "user", "text": text}, *start, *prefilled]
    events, said = await run_form(booking_form.ValidateBookingForm(), domain, tracker)
    return slots_of(start) | slots_of(events), said


@pytest.mark.usefixtures("scheduler")
async def test_a_request_naming_visit_and_time_goes_straight_to_the_offers(
    make_tracker: TrackerFactory, domain: Dict[str, Any]
) -> None:
    text = "book dry needling as soon as possible"
    slots, said = await started(make_tracker, domain, text)
    assert said == []
    assert slots["visit_type"] == "dry_needling"
    assert slots["time_preference"] == text
    first = datetime.fromisoformat(slots["offered_slots"][0]["start"])
    assert first.date() == date(2026, 12, 7)  # today: the soonest open time


@pytest.mark.usefixtures("scheduler")
async def test_a_closed_day_in_the_request_gets_the_nearest_open_times(
    make_tracker: TrackerFactory, domain: Dict[str, Any]
) -> None:
    text = "I want to book a trigger point injection for next Sunday"
    slots, said = await started(make_tracker, domain, text)
    assert said == ["utter_nearest_times"]  # as when typed at the time question
    first = datetime.fromisoformat(slots["offered_slots"][0]["start"])
    assert first.date() == date(2026, 12, 21)  # the Monday after Sunday Dec 20


@pytest.mark.usefixtures("scheduler")
async def test_a_time_named_before_the_visit_type_is_searched_once_it_is_known(
    make_tracker: TrackerFactory, domain: Dict[str, Any]
) -> None:
    slots, said = await started(make_tracker, domain, "any openings Friday?")
    assert said == []
    assert slots["time_preference"] == "any openings Friday?"
    assert slots.get("offered_slots") is None

    tracker = tracker_with(
        make_tracker,
        "Dry needling",
        "faq",
        requested_slot="visit_type",
        time_preference="any openings Friday?",
    )
    events, said = await run_form(booking_form.ValidateBookingForm(), domain, tracker)
    assert said == []
    after = slots_of(events)
    assert after["visit_type"] == "dry_needling"
    days = {datetime.fromisoformat(o["start"]).date() for o in after["offered_slots"]}
    assert days == {date(2026, 12, 11)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("can I get in tomorrow?", True),
        ("when's your next available appointment", True),  # as soon as possible
        ("book an appointment for next year", True),  # too far: the patient is told
        ("I'd like to book an appointment", False),
        ("book physical therapy", False),
        ("I hurt my back yesterday, can I book", False),  # the story, not a wish
    ],
)
@pytest.mark.usefixtures("scheduler")
def test_time_in_request(text: str, expected: bool) -> None:
    assert booking_common.time_in_request(text) is expected


# --- prompts written in the domain ---------------------------------------------------


async def test_the_visit_type_question_offers_the_clinics_visit_types(
    make_tracker: TrackerFactory,
    scheduler: SqliteScheduler,
    config: SchedulingConfig,
    domain: Dict[str, Any],
) -> None:
    dispatcher = CollectingDispatcher()
    tracker = tracker_with(make_tracker, "book please", "book_appointment")
    await booking_form.ActionAskVisitType().run(dispatcher, tracker, {})
    assert [render(message, domain) for message in dispatcher.messages] == [
        "What kind of visit would you like to book?"
        + "".join(
            f'\n{visit.name} /inform{{"visit_type": "{visit.key}"}}'
            for visit in config.visit_types
        )
    ]


async def test_a_reschedule_whose_old_booking_stays_says_so(
    make_tracker: TrackerFactory,
    scheduler: SqliteScheduler,
    domain: Dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = await booked_reference(make_tracker)

    def cancel_fails(*args: Any) -> None:
        raise BackendUnavailable("down")

    monkeypatch.setattr(scheduler, "cancel", cancel_fails)
    tracker = await confirmed_tracker(make_tracker, sender="rescheduling-patient")
    offers = tracker.get_slot("offered_slots")
    tracker.slots |= {
        "appointment_slot": offers[1]["id"],
        "booking_task": "reschedule",
        "found_booking": old,
    }
    dispatcher = CollectingDispatcher()
    await booking_form.ActionBookAppointment().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_booked", "utter_old_booking_not_cancelled"]
    assert render(dispatcher.messages[1], domain) == (
        f"I could not cancel your earlier booking {old}. "
        "Please contact our office to cancel it."
    )


# --- OfferFinder: the scheduler and the clock as parameters ------------------------


def finder_at(
    clock: List[datetime], tmp_path: Path, config: SchedulingConfig
) -> OfferFinder:
    """An OfferFinder on a real SQLite scheduler whose clock reads ``clock[0]``."""
    backend = SqliteScheduler(tmp_path / "offers.db", config, clock=lambda: clock[0])
    return OfferFinder(backend, lambda: clock[0], config)


async def test_offer_finder_offers_open_times_in_the_window(
    tmp_path: Path, config: SchedulingConfig
) -> None:
    offers = await finder_at([NOW], tmp_path, config).find("evaluation", "wednesday")
    assert 0 < len(offers) <= MAX_OFFERS
    for offer in offers:
        start = datetime.fromisoformat(offer["start"])
        assert start.date() == date(2026, 12, 9)
        assert offer["in_window"] is True
        assert slot_from_entry(offer).slot_id == offer["id"]


async def test_offer_finder_offers_the_nearest_times_after_a_closed_one(
    tmp_path: Path, config: SchedulingConfig
) -> None:
    offers = await finder_at([NOW], tmp_path, config).find(
        "evaluation", "saturday at 3"
    )
    assert offers and all(offer["in_window"] is False for offer in offers)
    first = datetime.fromisoformat(offers[0]["start"])
    assert first == datetime(2026, 12, 14, 8, 0, tzinfo=CHICAGO)


async def test_offer_finder_reads_the_clock_at_each_search(
    tmp_path: Path, config: SchedulingConfig
) -> None:
    clock = [NOW]
    finder = finder_at(clock, tmp_path, config)
    monday = await finder.find("evaluation", "tomorrow")
    clock[0] = NOW + timedelta(days=2)
    wednesday = await finder.find("evaluation", "tomorrow")
    assert datetime.fromisoformat(monday[0]["start"]).date() == date(2026, 12, 8)
    assert datetime.fromisoformat(wednesday[0]["start"]).date() == date(2026, 12, 10)


async def test_offer_finder_refuses_a_time_in_the_past(
    tmp_path: Path, config: SchedulingConfig
) -> None:
    with pytest.raises(TimePreferenceError) as refused:
        await finder_at([NOW], tmp_path, config).find("evaluation", "yesterday")
    assert refused.value.reason == "past"
