"""The session start runs in the Rasa server: facts, introduction, no action server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from rasa.core.actions.action import action_for_name_or_text
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
)
from rasa.shared.core.trackers import DialogueStateTracker
from testkit import (
    FILLED_CONTACT,
    TEST_CLINIC,
    ClinicConfigFactory,
    extension_on,
)

from clinic_common.clinic_config import clinic
from clinic_core.session import ClinicSessionStart

pytestmark = pytest.mark.usefixtures("clinic_config")

CONTACT_LABELS = {"phone": "Phone:", "address": "Address:", "website": "Website:"}
FACT_SLOTS = {
    "clinic_name",
    "clinic_city",
    "clinic_state",
    "clinic_contact_sentence",
    "clinic_facts_loaded",
}


@pytest.fixture(scope="module", autouse=True)
def session_start_on() -> Iterator[None]:
    with extension_on("session_start"):
        yield


def start_session(
    domain: Domain, tracker: DialogueStateTracker, channel: str = "rest"
) -> List[Event]:
    output = CollectingOutputChannel()
    output.name = lambda: channel  # type: ignore[method-assign]
    action = action_for_name_or_text("action_session_start", domain, None)
    return asyncio.run(
        action.run(
            output, TemplatedNaturalLanguageGenerator(domain.responses), tracker, domain
        )
    )


def new_tracker(domain: Domain) -> DialogueStateTracker:
    return DialogueStateTracker("patient", domain.slots)


def location_answer(domain: Domain, events: List[Event], loaded: bool = True) -> str:
    """utter_faq/clinic_location as Rasa renders it after the session start."""
    tracker = new_tracker(domain)
    for event in events:
        if isinstance(event, SlotSet) and (
            loaded or event.key != "clinic_facts_loaded"
        ):
            tracker.update(event)
    generator = TemplatedNaturalLanguageGenerator(domain.responses)
    message = asyncio.run(
        generator.generate("utter_faq/clinic_location", tracker, "rest")
    )
    assert message is not None
    return str(message["text"])


def test_the_domain_leaves_session_start_to_the_rasa_server(
    rasa_domain: Domain,
) -> None:
    assert "action_session_start" not in rasa_domain.user_actions
    action = action_for_name_or_text("action_session_start", rasa_domain, None)
    assert type(action) is ClinicSessionStart


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        (
            "rest",
            "Hi, I'm the virtual assistant of Test Spine Clinic. I can share general "
            "information about back spasms and their treatment, and help you get an "
            "appointment. I'm not a doctor and this isn't medical advice. In an "
            "emergency, call 911.",
        ),
        (
            "twilio",
            "Hi, this is the virtual assistant of Test Spine Clinic: general "
            "information on back spasms and their treatment, and appointments. Not "
            "medical advice. Emergency: call 911. Reply STOP to opt out.",
        ),
    ],
)
def test_session_start_sets_the_facts_and_introduces_once(
    rasa_domain: Domain, channel: str, expected: str
) -> None:
    events = start_session(rasa_domain, new_tracker(rasa_domain), channel)

    assert isinstance(events[0], SessionStarted)
    assert events[-1] == ActionExecuted("action_listen")
    said = [event for event in events if isinstance(event, BotUttered)]
    assert [(event.text, event.metadata.get("utter_action")) for event in said] == [
        (expected, "utter_intro")
    ]
    slots = {event.key: event.value for event in events if isinstance(event, SlotSet)}
    assert slots == {
        "clinic_name": TEST_CLINIC["name"],
        "clinic_city": TEST_CLINIC["city"],
        "clinic_state": TEST_CLINIC["state"],
        "clinic_contact_sentence": "",
        "clinic_facts_loaded": True,
    }
    assert set(slots) <= set(rasa_domain.as_dict()["slots"])


def test_session_start_carries_set_slots_over(rasa_domain: Domain) -> None:
    tracker = new_tracker(rasa_domain)
    tracker.update(SlotSet("patient_name", "Ana Lopez"))

    events = start_session(rasa_domain, tracker)

    carried = [
        (event.key, event.value)
        for event in events
        if isinstance(event, SlotSet) and event.key not in FACT_SLOTS
    ]
    assert ("patient_name", "Ana Lopez") in carried


def test_clinic_location_without_contact_details_shows_none(
    rasa_domain: Domain,
) -> None:
    events = start_session(rasa_domain, new_tracker(rasa_domain))

    assert location_answer(rasa_domain, events) == (
        "Test Spine Clinic is in Springfield, Illinois."
    )


@pytest.mark.parametrize(
    "filled",
    [("phone",), ("address",), ("website",), ("phone", "address", "website")],
    ids="+".join,
)
def test_clinic_location_shows_exactly_the_filled_contact_fields(
    filled: Tuple[str, ...],
    clinic_config: ClinicConfigFactory,
    rasa_domain: Domain,
) -> None:
    clinic_config(**{field: FILLED_CONTACT[field] for field in filled})
    events = start_session(rasa_domain, new_tracker(rasa_domain))

    details = "; ".join(
        f"{label} {FILLED_CONTACT[field]}"
        for field, label in CONTACT_LABELS.items()
        if field in filled
    )
    assert location_answer(rasa_domain, events) == (
        "Test Spine Clinic is in Springfield, Illinois. You can reach us here: "
        f"{details}"
    )


def test_clinic_location_without_loaded_facts_guesses_nothing(
    clinic_config: ClinicConfigFactory, rasa_domain: Domain
) -> None:
    clinic_config(**FILLED_CONTACT)
    events = start_session(rasa_domain, new_tracker(rasa_domain))

    text = location_answer(rasa_domain, events, loaded=False)

    assert "Springfield" not in text and "None" not in text
    assert "ask our staff" in text


def test_a_broken_clinic_file_never_stops_the_session(
    rasa_domain: Domain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CLINIC_CONFIG", str(tmp_path / "missing.yml"))
    clinic.cache_clear()

    events = start_session(rasa_domain, new_tracker(rasa_domain))

    assert isinstance(events[0], SessionStarted)
    assert events[-1] == ActionExecuted("action_listen")
    assert not [e for e in events if isinstance(e, SlotSet) and e.key in FACT_SLOTS]
    said = [event.text for event in events if isinstance(event, BotUttered)]
    assert said == [
        "Hi, I'm the virtual assistant of our clinic. I can share general "
        "information about back spasms and their treatment, and help you get an "
        "appointment. I'm not a doctor and this isn't medical advice. In an "
        "emergency, call 911."
    ]
    assert "Clinic facts not loaded" in caplog.text
