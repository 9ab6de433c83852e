"""Unit tests of the custom actions, run the way the action server runs them."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo

import pytest
import yaml
from rasa.shared.core.domain import Domain
from rasa.shared.core.training_data.story_reader.yaml_story_reader import (
    YAMLStoryReader,
)
from rasa.shared.nlu.constants import ENTITIES, INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, FollowupAction, SlotSet
from rasa_sdk.executor import ActionExecutor, CollectingDispatcher
from testkit import (
    DOMAIN_FILES,
    FILLED_CONTACT,
    PROJECT_ROOT,
    TEST_CLINIC,
    TEST_HOURS,
    ClinicConfigFactory,
    TrackerFactory,
    render,
    selector,
)

from actions import reminders
from actions.booking import common as booking_common
from actions.booking import form as booking_form
from actions.booking.offers import slot_entry
from actions.faq import (
    INTENT_TITLES,
    ActionAnswerFaq,
    ActionClarify,
    faq_topic_payload,
    faq_topic_titles,
    suggestions,
    topic_title,
)
from actions.handoff import ActionAnswerHours, ActionContactStaff
from actions.settings import (
    SUGGESTION_MIN_CONFIDENCE,
    ClinicConfigError,
    ClinicInfo,
    clinic,
    parse_clinic_config,
)
from scheduling.base import Patient
from scheduling.config import load_scheduling_config
from scheduling.sqlite_backend import SqliteScheduler

# Every test runs against the made-up clinic of testkit.TEST_CLINIC, not clinic.yml.
pytestmark = pytest.mark.usefixtures("clinic_config")

FAQ_TOPICS: List[str] = sorted(
    name.split("/", 1)[1]
    for name in yaml.safe_load(DOMAIN_FILES[1].read_text(encoding="utf-8"))["responses"]
)
CONTACT_LABELS = {"phone": "Phone:", "address": "Address:", "website": "Website:"}
ALL_ACTIONS: Sequence[Action] = (
    ActionAnswerFaq(),
    ActionClarify(),
    ActionContactStaff(),
    ActionAnswerHours(),
)


def responses(dispatcher: CollectingDispatcher) -> List[Optional[str]]:
    return [message["response"] for message in dispatcher.messages]


def rendered(dispatcher: CollectingDispatcher, domain: Dict[str, Any]) -> str:
    return "\n".join(render(message, domain) for message in dispatcher.messages)


def buttons(dispatcher: CollectingDispatcher) -> List[Tuple[str, str]]:
    return [
        (button["title"], button["payload"])
        for message in dispatcher.messages
        for button in message["buttons"]
    ]


def assert_no_unfilled_placeholder(text: str) -> None:
    assert not re.search(r"[{}]|\bNone\b", text), text


def ranking(*entries: Tuple[str, float]) -> List[Dict[str, Any]]:
    return [{"name": name, "confidence": confidence} for name, confidence in entries]


# --- every action -----------------------------------------------------------------


@pytest.mark.parametrize("action", ALL_ACTIONS, ids=lambda action: action.name())
def test_action_is_declared_in_the_domain(
    action: Action, domain: Dict[str, Any]
) -> None:
    assert action.name() in domain["actions"]


# --- action_answer_faq (a "Did you mean" button) ------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("topic", FAQ_TOPICS)
async def test_faq_answer_for_a_clicked_button(
    topic: str,
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    tracker = make_tracker(
        text=faq_topic_payload(topic),
        intent="faq",
        entities=[{"entity": "faq_topic", "value": topic}],
    )

    assert await ActionAnswerFaq().run(dispatcher, tracker, domain) == []

    assert responses(dispatcher) == [f"utter_faq/{topic}"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "entities",
    [
        pytest.param([{"entity": "faq_topic", "value": "parking"}], id="unknown-topic"),
        pytest.param([{"entity": "faq_topic", "value": ""}], id="empty-topic"),
        pytest.param([{"entity": "body_part", "value": "dry_needling"}], id="other"),
        pytest.param([], id="no-entity"),
    ],
)
async def test_faq_answer_without_a_known_topic_gets_default_reply(
    entities: List[Dict[str, Any]],
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    tracker = make_tracker(
        text="where do I park",
        intent="faq",
        entities=entities,
        response_selector=selector([("dry_needling", 0.9)]),
    )

    assert await ActionAnswerFaq().run(dispatcher, tracker, domain) == []

    assert responses(dispatcher) == ["utter_default"]


# --- action_clarify -----------------------------------------------------------------


def clarify_tracker(
    make_tracker: TrackerFactory,
    intent_ranking: List[Dict[str, Any]],
    response_selector: Optional[Dict[str, Any]],
    text: Optional[str] = "blorp the flux",
) -> Tracker:
    """A message the NLU was unsure of (nlu_fallback on top), with its rankings."""
    return make_tracker(
        text=text,
        intent="nlu_fallback",
        confidence=0.4,
        intent_ranking=intent_ranking,
        response_selector=response_selector,
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("intent_ranking", "response_selector", "expected"),
    [
        pytest.param(
            # What the FaqConfidenceGate leaves: nlu_fallback on top, faq
            # confident, its topics not.
            ranking(
                ("nlu_fallback", 0.42),
                ("faq", 0.93),
                ("greet", 0.03),
                ("book_appointment", 0.02),
            ),
            selector(
                [
                    ("what_is_spasm", 0.42),
                    ("why_muscles_spasm", 0.38),
                    ("tpi_how_it_helps", 0.1),
                ]
            ),
            [
                ("What is a back spasm?", '/faq{"faq_topic":"what_is_spasm"}'),
                ("Why do muscles spasm?", '/faq{"faq_topic":"why_muscles_spasm"}'),
            ],
            id="two-likeliest-faq-topics",
        ),
        pytest.param(
            ranking(
                ("nlu_fallback", 0.45),
                ("book_appointment", 0.4),
                ("faq", 0.3),
                ("greet", 0.1),
            ),
            selector([("dry_needling", 0.7), ("relief_timing", 0.2)]),
            [
                ("Book an appointment", "/book_appointment"),
                ("Dry needling (no medication)", '/faq{"faq_topic":"dry_needling"}'),
            ],
            id="a-non-faq-intent",
        ),
        pytest.param(
            # relief_timing: 0.4 * 0.7 = 0.28 < ask_hours 0.3; soreness_after 0.12.
            ranking(("nlu_fallback", 0.5), ("faq", 0.4), ("ask_hours", 0.3)),
            selector([("relief_timing", 0.7), ("soreness_after", 0.3)]),
            [
                ("Office hours", "/ask_hours"),
                ("How soon will I feel better?", '/faq{"faq_topic":"relief_timing"}'),
            ],
            id="topics-weighed-by-the-faq-intent-confidence",
        ),
        pytest.param(
            ranking(("nlu_fallback", 0.4), ("ask_cost", 0.3), ("faq", 0.05)),
            selector([("dry_needling", 0.6), ("injection_contents", 0.4)]),
            [("Prices", "/ask_cost")],
            id="an-implausible-second-suggestion-dropped",
        ),
    ],
)
async def test_clarify_offers_the_likeliest_plausible_options(
    intent_ranking: List[Dict[str, Any]],
    response_selector: Dict[str, Any],
    expected: List[Tuple[str, str]],
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    tracker = clarify_tracker(make_tracker, intent_ranking, response_selector)

    assert await ActionClarify().run(dispatcher, tracker, domain) == []

    assert responses(dispatcher) == ["utter_clarify"]
    assert buttons(dispatcher) == expected


@pytest.mark.parametrize(
    ("payload", "intent", "entities"),
    [
        ('/faq{"faq_topic":"what_is_spasm"}', "faq", [("faq_topic", "what_is_spasm")]),
        ("/book_appointment", "book_appointment", []),
    ],
)
def test_clarify_buttons_send_what_rasa_parses_as_their_choice(
    payload: str, intent: str, entities: List[Tuple[str, str]], rasa_domain: Domain
) -> None:
    parsed = YAMLStoryReader.unpack_regex_message(Message({TEXT: payload}), rasa_domain)
    assert parsed.get(INTENT)["name"] == intent
    assert [(e["entity"], e["value"]) for e in parsed.get(ENTITIES)] == entities


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("intent_ranking", "response_selector"),
    [
        pytest.param(
            ranking(
                ("nlu_fallback", 0.35),
                ("greet", 0.3),
                ("out_of_scope", 0.25),
                ("faq", 0.04),
            ),
            selector([("what_is_spasm", 0.9)]),
            id="faq-too-unlikely",
        ),
        pytest.param(
            ranking(("nlu_fallback", 0.6), ("out_of_scope", 0.3), ("emergency", 0.1)),
            None,
            id="no-suggestible-intent",
        ),
        pytest.param(
            ranking(("nlu_fallback", 0.9), ("book_appointment", 0.04), ("faq", 0.9)),
            selector([("what_is_spasm", 0.05)]),
            id="all-below-minimum",
        ),
        pytest.param(
            # "do you validate parking", as the model parsed it: Insurance at 0.115
            # and Chiropractic care at 0.234 * 0.467 = 0.109, both below the minimum.
            ranking(
                ("nlu_fallback", 0.55),
                ("ask_other_condition", 0.374),
                ("faq", 0.234),
                ("ask_insurance", 0.115),
            ),
            selector([("chiropractic_care", 0.467), ("clinic_location", 0.243)]),
            id="no-unrelated-topics",
        ),
        pytest.param([], None, id="no-ranking"),
    ],
)
async def test_clarify_without_plausible_suggestion_says_what_it_can_do(
    intent_ranking: List[Dict[str, Any]],
    response_selector: Optional[Dict[str, Any]],
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    tracker = clarify_tracker(make_tracker, intent_ranking, response_selector)

    assert await ActionClarify().run(dispatcher, tracker, domain) == []

    assert responses(dispatcher) == ["utter_out_of_scope"]
    assert buttons(dispatcher) == []
    assert rendered(dispatcher, domain) == (
        "Sorry, I can't help with that. I can answer questions about back spasms and "
        "trigger point injections, or help you get an appointment."
    )


WORDLESS = [
    "",
    "   ",
    "\n\t ",
    None,
    "\U0001f44d",
    "\U0001f62d\U0001f62d",
    "?!",
    "... :)",
]
WITH_A_LETTER_OR_DIGIT = ["\U0001f44d 2", "??? x", "\u00bfd\u00f3nde?"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, "utter_empty_message") for text in WORDLESS]
    + [(text, "utter_clarify") for text in WITH_A_LETTER_OR_DIGIT],
    ids=repr,
)
async def test_clarify_asks_for_words_unless_the_message_has_a_letter_or_digit(
    text: Optional[str],
    expected: str,
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    # Even with plausible suggestions: a message without a letter or digit gets no
    # "Did you mean" buttons.
    tracker = clarify_tracker(
        make_tracker,
        ranking(("nlu_fallback", 0.4), ("book_appointment", 0.35), ("faq", 0.3)),
        selector([("dry_needling", 0.8)]),
        text=text,
    )

    assert await ActionClarify().run(dispatcher, tracker, domain) == []

    assert responses(dispatcher) == [expected]
    suggested = [("Book an appointment", "/book_appointment")]
    assert buttons(dispatcher)[:1] == (suggested if expected == "utter_clarify" else [])


def test_suggestions_respect_the_minimum_confidence() -> None:
    just_enough = SUGGESTION_MIN_CONFIDENCE
    too_little = SUGGESTION_MIN_CONFIDENCE / 2
    message = {
        "intent_ranking": ranking(("ask_hours", just_enough), ("ask_cost", too_little)),
    }

    assert suggestions(message) == [("Office hours", "/ask_hours")]


def test_topic_title_falls_back_to_the_topic_name() -> None:
    assert topic_title("dry_needling") == "Dry needling (no medication)"
    assert topic_title("parking_and_transit") == "Parking and transit"


def test_topic_titles_are_read_again_when_the_file_changes(tmp_path: Path) -> None:
    titles = tmp_path / "faq_titles.yml"
    titles.write_text("# a comment\nparking: Parking?\n", encoding="utf-8")
    assert faq_topic_titles(titles) == {"parking": "Parking?"}

    titles.write_text("parking: Parking?\nwifi: Is there wifi?\n", encoding="utf-8")
    os.utime(titles, ns=(1, titles.stat().st_mtime_ns + 1_000_000))

    assert faq_topic_titles(titles) == {"parking": "Parking?", "wifi": "Is there wifi?"}


def test_missing_or_broken_titles_file_gives_no_titles(tmp_path: Path) -> None:
    assert faq_topic_titles(tmp_path / "missing.yml") == {}
    broken = tmp_path / "broken.yml"
    broken.write_text("parking: [unclosed\n", encoding="utf-8")
    assert faq_topic_titles(broken) == {}


def test_suggested_intents_exist_in_the_domain(rasa_domain: Domain) -> None:
    assert set(INTENT_TITLES) <= set(rasa_domain.intents)


# --- action_contact_staff -----------------------------------------------------------


CALL_BACK_OFFER = "I can ask our staff to call you back. Would you like that?"


@pytest.mark.asyncio
async def test_contact_staff_without_contact_details_offers_a_call_back(
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    events = await ActionContactStaff().run(
        dispatcher, make_tracker(text="a person please", intent="request_human"), domain
    )

    assert events == [
        SlotSet("callback_offered", True),
        SlotSet("handoff_callback", True),
    ]
    assert responses(dispatcher) == ["utter_offer_handoff_callback"]
    assert rendered(dispatcher, domain) == CALL_BACK_OFFER
    assert domain["responses"]["utter_offer_handoff_callback"][0]["buttons"] == [
        {"title": "Yes, call me back", "payload": "/affirm"},
        {"title": "No, thanks", "payload": "/deny"},
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["booking_form", "lookup_form"])
async def test_a_person_asked_for_inside_a_booking_stops_it_and_offers_a_call_back(
    form: str,
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    # No clinic phone: the only way to a person is a call back, which needs the
    # booking (or lookup) stopped; the patient is told nothing was booked.
    tracker = make_tracker(text="a person please", intent="request_human")
    tracker.active_loop = {"name": form}
    tracker.slots.update(visit_type="Dry needling", booking_task="book")

    events = await ActionContactStaff().run(dispatcher, tracker, domain)

    assert events[:2] == [ActiveLoop(None), SlotSet("requested_slot", None)]
    assert SlotSet("visit_type", None) in events
    assert SlotSet("booking_task", None) in events
    assert events[-2:] == [
        SlotSet("callback_offered", True),
        SlotSet("handoff_callback", True),
    ]
    assert responses(dispatcher) == [
        "utter_stopped_for_staff",
        "utter_offer_handoff_callback",
    ]
    assert rendered(dispatcher, domain) == (
        "All right, I've stopped here; nothing was booked or changed.\n"
        + CALL_BACK_OFFER
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("form", "contact", "expected"),
    [
        pytest.param(
            # The number is the answer; the booking goes on (the form asks again).
            "booking_form",
            {"phone": FILLED_CONTACT["phone"]},
            "You can reach Test Spine Clinic here: Phone: (555) 010-4477",
            id="a-clinic-phone",
        ),
        pytest.param(
            "callback_form",
            {},
            "This is how to reach our staff: once I have your details, "
            "they will call you back.",
            id="the-call-back-form",
        ),
    ],
)
async def test_a_person_asked_for_inside_a_form_that_goes_on(
    form: str,
    contact: Dict[str, str],
    expected: str,
    clinic_config: ClinicConfigFactory,
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    clinic_config(**contact)
    tracker = make_tracker(text="a person please", intent="request_human")
    tracker.active_loop = {"name": form}

    events = await ActionContactStaff().run(dispatcher, tracker, domain)

    assert events == []
    assert rendered(dispatcher, domain) == expected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("filled", "expected"),
    [
        (("phone",), "Phone: (555) 010-4477"),
        (("website",), "Website: https://spine-clinic.example"),
        (
            ("phone", "address", "website"),
            "Phone: (555) 010-4477; "
            "Address: 42 Elm Street, Suite 7, Springfield, IL 62701; "
            "Website: https://spine-clinic.example",
        ),
    ],
    ids=lambda value: "+".join(value) if isinstance(value, tuple) else None,
)
async def test_contact_staff_gives_exactly_the_filled_contact_details(
    filled: Tuple[str, ...],
    expected: str,
    clinic_config: ClinicConfigFactory,
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    clinic_config(**{field: FILLED_CONTACT[field] for field in filled})

    events = await ActionContactStaff().run(
        dispatcher, make_tracker(text="book me", intent="book_appointment"), domain
    )

    assert dispatcher.messages[0]["contact_details"] == expected
    details = f"You can reach Test Spine Clinic here: {expected}"
    if "phone" in filled:  # a number to call: that is the answer
        assert events == []
        assert responses(dispatcher) == ["utter_contact_details"]
        assert rendered(dispatcher, domain) == details
    else:  # no number to call: a call back is offered too
        assert events == [
            SlotSet("callback_offered", True),
            SlotSet("handoff_callback", True),
        ]
        assert responses(dispatcher) == [
            "utter_contact_details",
            "utter_offer_handoff_callback",
        ]
        assert rendered(dispatcher, domain) == f"{details}\n{CALL_BACK_OFFER}"


# --- action_answer_hours ------------------------------------------------------------


@pytest.mark.asyncio
async def test_hours_are_given_when_configured(
    clinic_config: ClinicConfigFactory,
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    clinic_config(hours=TEST_HOURS)

    events = await ActionAnswerHours().run(
        dispatcher, make_tracker(text="when are you open", intent="ask_hours"), domain
    )

    assert events == []
    assert responses(dispatcher) == ["utter_hours"]
    assert dispatcher.messages[0]["hours"] == TEST_HOURS
    assert rendered(dispatcher, domain) == f"Our office hours: {TEST_HOURS}."


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("contact", "form", "expected"),
    [
        ({}, None, ["utter_hours_unknown", "utter_offer_handoff_callback"]),
        ({}, "booking_form", ["utter_hours_unknown"]),
        (
            {"phone": FILLED_CONTACT["phone"]},
            None,
            ["utter_hours_unknown", "utter_contact_details"],
        ),
    ],
    ids=["no-contact", "no-contact-in-a-form", "phone"],
)
async def test_unknown_hours_are_never_made_up(
    contact: Dict[str, str],
    form: Optional[str],
    expected: List[str],
    clinic_config: ClinicConfigFactory,
    dispatcher: CollectingDispatcher,
    make_tracker: TrackerFactory,
    domain: Dict[str, Any],
) -> None:
    # Who can tell, and how to reach them: the clinic's phone, or a call back
    # (inside a form, the form's question comes next instead).
    clinic_config(**contact)
    tracker = make_tracker(text="when are you open", intent="ask_hours")
    if form:
        tracker.active_loop = {"name": form}

    await ActionAnswerHours().run(dispatcher, tracker, domain)

    assert responses(dispatcher) == expected
    text = rendered(dispatcher, domain)
    assert "Our office hours:" not in text
    assert not re.search(r"\d{1,2}(:\d\d)?\s?(am|pm)", text, re.IGNORECASE)
    assert_no_unfilled_placeholder(text)


# --- settings -----------------------------------------------------------------------


def test_parse_clinic_config_accepts_a_complete_config() -> None:
    info = parse_clinic_config(
        {
            **TEST_CLINIC,
            "phone": 5550104477,
            "hours": None,
            "website": "  https://x.example ",
        },
        "clinic.yml",
    )

    assert info == ClinicInfo(
        name="Test Spine Clinic",
        city="Springfield",
        state="Illinois",
        phone="5550104477",
        hours="",
        website="https://x.example",
    )
    assert info.template_values() == {
        "clinic_name": "Test Spine Clinic",
        "clinic_city": "Springfield",
        "clinic_state": "Illinois",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            {**TEST_CLINIC, "fax": "555"}, r"unknown field\(s\) fax", id="unknown-field"
        ),
        pytest.param(
            {key: value for key, value in TEST_CLINIC.items() if key != "name"},
            r"field\(s\) name must be filled in",
            id="missing-name",
        ),
        pytest.param(
            {**TEST_CLINIC, "name": "   "}, "name must be filled in", id="blank-name"
        ),
        pytest.param(
            {"name": "Clinic"},
            r"field\(s\) city, state must be filled in",
            id="missing-city",
        ),
        pytest.param(["name", "city"], "expected a mapping", id="list"),
        pytest.param("Valliant Life Medical", "expected a mapping", id="string"),
        pytest.param(None, "expected a mapping", id="empty-file"),
        pytest.param(
            {**TEST_CLINIC, "phone": ["1", "2"]},
            "'phone' must be text",
            id="list-value",
        ),
    ],
)
def test_parse_clinic_config_rejects_bad_configs(raw: object, message: str) -> None:
    with pytest.raises(ClinicConfigError, match=message) as error:
        parse_clinic_config(raw, "some/clinic.yml")
    assert str(error.value).startswith("some/clinic.yml")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ""),
        ({"phone": "555-0100"}, "Phone: 555-0100"),
        ({"address": "1 Main St"}, "Address: 1 Main St"),
        (
            {"phone": "555-0100", "website": "https://a.example"},
            "Phone: 555-0100; Website: https://a.example",
        ),
        (
            {
                "phone": "555-0100",
                "address": "1 Main St",
                "website": "https://a.example",
            },
            "Phone: 555-0100; Address: 1 Main St; Website: https://a.example",
        ),
        ({"hours": "Mon-Fri 9-5"}, ""),
    ],
)
def test_contact_details_join_only_filled_fields(
    fields: Dict[str, str], expected: str
) -> None:
    info = ClinicInfo(name="Clinic", city="City", state="State", **fields)
    assert info.contact_details() == expected


def test_clinic_reads_clinic_config_once_until_cache_cleared(
    clinic_config: ClinicConfigFactory,
) -> None:
    path = clinic_config(phone="555-0100")
    assert clinic().phone == "555-0100"

    path.write_text(
        yaml.safe_dump({**TEST_CLINIC, "phone": "555-0199"}), encoding="utf-8"
    )
    assert clinic().phone == "555-0100"  # cached

    clinic.cache_clear()
    assert clinic().phone == "555-0199"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "Cannot read clinic config"), ("name: [unclosed", "is not valid YAML")],
    ids=["missing-file", "invalid-yaml"],
)
def test_clinic_reports_unreadable_config(
    content: Optional[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "broken.yml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    monkeypatch.setenv("CLINIC_CONFIG", str(path))
    clinic.cache_clear()

    with pytest.raises(ClinicConfigError, match=message):
        clinic()


def test_the_action_server_registers_every_custom_action_of_the_domain(
    domain: Dict[str, Any],
) -> None:
    # As ``rasa run actions --actions actions`` does (scripts/launcher.py): the
    # package and its subpackages (actions/booking/) are imported and every Action
    # subclass is registered; the mixins and bases must not be.
    executor = ActionExecutor()
    executor.register_package("actions")
    assert set(executor.actions) == set(domain["actions"])


# --- appointment reminders and consent (actions/reminders.py, booking/form.py) ------

REMINDED_PHONE = "+18175550188"
# Monday 2026-12-07, 8:00 AM in Fort Worth: the reminded visit is the next day.
REMINDER_NOW = datetime(2026, 12, 7, 8, 0, tzinfo=ZoneInfo("America/Chicago"))


@pytest.fixture
def reminded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Tuple[SqliteScheduler, str]:
    """The embedded scheduler with one booking that agreed to reminders."""
    config = load_scheduling_config(PROJECT_ROOT / "clinic.yml")
    real = SqliteScheduler(
        tmp_path / "scheduler.db", config, clock=lambda: REMINDER_NOW
    )
    monkeypatch.setattr(booking_common, "get_scheduler", lambda: real)
    monkeypatch.setattr(booking_common, "scheduling_config", lambda: config)
    monkeypatch.setattr(booking_common, "now", lambda: REMINDER_NOW)
    monkeypatch.setattr(reminders, "reminder_text", lambda b: f"Visit {b.reference}")
    slot = real.find_slots(
        "dry_needling",
        REMINDER_NOW + timedelta(days=1),
        REMINDER_NOW + timedelta(days=2),
    )[0]
    booking = real.book(
        slot, Patient("Marisol Quintanilla", REMINDED_PHONE), "k1", None, True
    )
    return real, booking.reference


def reminder_tracker(
    make_tracker: TrackerFactory,
    text: str,
    intent: str,
    reference: str,
    hints: Sequence[str] = (),
) -> Tracker:
    """A reply in the patient's SMS conversation, whose id is the phone number."""
    tracker = make_tracker(
        text=text, intent=intent, slots={"reminder_reference": reference}
    )
    tracker.sender_id = REMINDED_PHONE
    tracker.latest_message["spacy_entities"] = [
        {"entity": "DATE", "value": hint} for hint in hints
    ]
    return tracker


def slots_set(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


async def test_the_reminder_is_said_and_remembered(
    make_tracker: TrackerFactory, reminded: Tuple[SqliteScheduler, str]
) -> None:
    _, reference = reminded
    tracker = make_tracker(
        intent="EXTERNAL_appointment_reminder",
        entities=[{"entity": "booking_reference", "value": reference}],
    )
    tracker.sender_id = REMINDED_PHONE
    dispatcher = CollectingDispatcher()
    events = await reminders.ActionSendReminder().run(dispatcher, tracker, {})
    assert dispatcher.messages[0]["response"] == "utter_reminder"
    assert dispatcher.messages[0]["reminder"] == f"Visit {reference}"
    assert events == [SlotSet("reminder_reference", reference)]


@pytest.mark.parametrize("gone", ["cancelled", "other number"])
async def test_no_reminder_for_a_booking_cancelled_or_not_this_numbers(
    make_tracker: TrackerFactory, reminded: Tuple[SqliteScheduler, str], gone: str
) -> None:
    scheduler, reference = reminded
    tracker = make_tracker(
        intent="EXTERNAL_appointment_reminder",
        entities=[{"entity": "booking_reference", "value": reference}],
    )
    tracker.sender_id = REMINDED_PHONE
    if gone == "cancelled":
        scheduler.cancel(reference, REMINDED_PHONE, "c1")
    else:
        tracker.sender_id = "+12145550147"
    dispatcher = CollectingDispatcher()
    assert await reminders.ActionSendReminder().run(dispatcher, tracker, {}) == []
    assert dispatcher.messages == []


@pytest.mark.parametrize(
    ("text", "intent", "reply"),
    [
        ("1", "inform", "confirm"),
        ("#1", "inform", "confirm"),
        ("I'll be there", "affirm", "confirm"),
        ("2", "inform", "reschedule"),
        ("option 2", "inform", "reschedule"),
        ("can we do Thursday instead", "reschedule_appointment", "reschedule"),
        ("3 please", "inform", "cancel"),
        ("I can't make it", "cancel_appointment", "cancel"),
        ("4", "inform", None),
        ("physical therapy", "inform", None),
        # A number first: "1" is never a yes to something else.
        ("1 but can I move it", "reschedule_appointment", "confirm"),
    ],
)
def test_what_a_reply_to_a_reminder_asks_for(
    make_tracker: TrackerFactory, text: str, intent: str, reply: Optional[str]
) -> None:
    tracker = reminder_tracker(make_tracker, text, intent, "K7PM3Q")
    assert reminders.reminder_reply(tracker) == reply


async def test_1_confirms_the_reminded_booking(
    make_tracker: TrackerFactory, reminded: Tuple[SqliteScheduler, str]
) -> None:
    scheduler, reference = reminded
    tracker = reminder_tracker(make_tracker, "1", "inform", reference)
    dispatcher = CollectingDispatcher()
    events = await reminders.ActionAnswerReminder().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_reminder_confirmed"]
    assert events == []  # the reminder still stands: a later 3 cancels it
    assert scheduler.get_booking(reference, REMINDED_PHONE).confirmed


async def test_a_new_day_starts_moving_the_reminded_booking(
    make_tracker: TrackerFactory, reminded: Tuple[SqliteScheduler, str]
) -> None:
    scheduler, reference = reminded
    text = "can we do Thursday instead"
    tracker = reminder_tracker(
        make_tracker, text, "reschedule_appointment", reference, ["Thursday"]
    )
    dispatcher = CollectingDispatcher()
    events = await reminders.ActionAnswerReminder().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_booking_details"]
    assert slots_set(events) | {"time_preference": text} == slots_set(events)
    assert slots_set(events)["found_booking"] == reference
    assert slots_set(events)["booking_task"] == "reschedule"
    assert slots_set(events)["patient_phone"] == REMINDED_PHONE
    assert slots_set(events)["reminder_reference"] is None
    assert events[-1] == FollowupAction("booking_form")
    booking = scheduler.get_booking(reference, REMINDED_PHONE)
    assert booking.reschedule_requested and booking.status == "booked"


async def test_3_asks_before_cancelling_the_reminded_booking(
    make_tracker: TrackerFactory, reminded: Tuple[SqliteScheduler, str]
) -> None:
    scheduler, reference = reminded
    tracker = reminder_tracker(make_tracker, "3", "inform", reference)
    dispatcher = CollectingDispatcher()
    events = await reminders.ActionAnswerReminder().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_confirm_cancel"]
    assert slots_set(events) == {
        "reminder_reference": None,
        "booking_task": "cancel",
        "patient_phone": REMINDED_PHONE,
        "found_booking": reference,
        "cancel_pending": True,
    }
    assert scheduler.get_booking(reference, REMINDED_PHONE).status == "booked"


async def test_an_unclear_reply_gets_the_choices_again(
    make_tracker: TrackerFactory, reminded: Tuple[SqliteScheduler, str]
) -> None:
    _, reference = reminded
    tracker = reminder_tracker(make_tracker, "5", "inform", reference)
    dispatcher = CollectingDispatcher()
    assert await reminders.ActionAnswerReminder().run(dispatcher, tracker, {}) == []
    assert responses(dispatcher) == ["utter_reminder_reply_unclear"]


async def test_a_reply_about_a_booking_cancelled_meanwhile_says_so(
    make_tracker: TrackerFactory, reminded: Tuple[SqliteScheduler, str]
) -> None:
    scheduler, reference = reminded
    scheduler.cancel(reference, REMINDED_PHONE, "c1")
    tracker = reminder_tracker(make_tracker, "1", "inform", reference)
    dispatcher = CollectingDispatcher()
    events = await reminders.ActionAnswerReminder().run(dispatcher, tracker, {})
    assert responses(dispatcher) == ["utter_booking_already_cancelled"]
    assert events == [SlotSet("reminder_reference", None)]
    assert not scheduler.get_booking(reference, REMINDED_PHONE).confirmed


@pytest.mark.parametrize(
    ("intent", "entities", "expected"),
    [
        # SMS: the read-back's "1. Yes, book it and text me a reminder".
        ("affirm", [{"entity": "reminder_consent", "value": "yes"}], True),
        ("affirm", [{"entity": "reminder_consent", "value": "no"}], False),
        # Web, or a typed "yes" by SMS: the question comes next.
        ("affirm", [], None),
    ],
)
async def test_the_read_back_may_answer_the_reminder_question_too(
    make_tracker: TrackerFactory,
    intent: str,
    entities: List[Dict[str, Any]],
    expected: Optional[bool],
) -> None:
    tracker = make_tracker(
        text="1",
        intent=intent,
        entities=entities,
        slots={"requested_slot": "booking_confirmed"},
    )
    extracted = await booking_form.ValidateBookingForm().extract_booking_confirmed(
        CollectingDispatcher(), tracker, {}
    )
    assert extracted["booking_confirmed"] is True
    assert extracted.get("reminder_consent") is expected


@pytest.mark.parametrize(
    ("intent", "entities", "expected"),
    [
        ("affirm", [{"entity": "reminder_consent", "value": "yes"}], True),
        ("deny", [{"entity": "reminder_consent", "value": "no"}], False),
        ("affirm", [], True),
        ("deny", [], False),
        ("faq", [], None),  # a question: the rules answer it, the form asks again
    ],
)
async def test_the_reminder_question_takes_a_yes_or_a_no(
    make_tracker: TrackerFactory,
    intent: str,
    entities: List[Dict[str, Any]],
    expected: Optional[bool],
) -> None:
    tracker = make_tracker(
        text="yes",
        intent=intent,
        entities=entities,
        slots={"requested_slot": "reminder_consent"},
    )
    extracted = await booking_form.ValidateBookingForm().extract_reminder_consent(
        CollectingDispatcher(), tracker, {}
    )
    assert extracted.get("reminder_consent") is expected


@pytest.mark.parametrize("consent", [True, False, None])
async def test_the_booking_stores_the_answer_to_the_reminder_question(
    make_tracker: TrackerFactory,
    reminded: Tuple[SqliteScheduler, str],
    consent: Optional[bool],
) -> None:
    scheduler, _ = reminded
    start = REMINDER_NOW + timedelta(days=2)
    slot = scheduler.find_slots("dry_needling", start, start + timedelta(days=1))[0]
    offer = slot_entry(slot, ZoneInfo("America/Chicago"))
    tracker = make_tracker(
        text="yes",
        intent="affirm",
        slots={
            "visit_type": "dry_needling",
            "offered_slots": [offer],
            "appointment_slot": slot.slot_id,
            "patient_name": "Maria Lopez",
            "patient_phone": "+18175550100",
            "booking_confirmed": True,
            "reminder_consent": consent,
        },
    )
    dispatcher = CollectingDispatcher()
    await booking_form.ActionBookAppointment().run(dispatcher, tracker, {})
    reference = dispatcher.messages[0]["reference"]
    stored = scheduler.get_booking(reference, "+18175550100")
    assert stored.reminder_consent is (consent is True)
    promised = ["utter_reminder_promised"] if consent else []
    assert responses(dispatcher) == ["utter_booked", *promised]
