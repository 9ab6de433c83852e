"""One conversation design, two channels: SMS gets its own wording where needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load([str(ROOT / "domain.yml"), str(ROOT / "data/responses/faq.yml")])


async def render(
    domain: Domain, response: str, channel: str
) -> Optional[Dict[str, Any]]:
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    tracker = DialogueStateTracker.from_events("patient", [], slots=domain.slots)
    return await nlg.generate(response, tracker, channel, clinic_name="Test Clinic")


@pytest.mark.parametrize(
    "response",
    [
        "utter_intro",
        "utter_clarify",
        "utter_slot_not_understood",
        "utter_visit_type_not_understood",
    ],
)
async def test_sms_and_web_get_their_own_wording(domain: Domain, response: str) -> None:
    sms = await render(domain, response, "twilio")
    web = await render(domain, response, "socketio")
    assert sms and web
    assert sms["text"] != web["text"]
    assert len(sms["text"]) <= len(web["text"])
    assert "pick one of the options" not in sms["text"]


async def test_sms_intro_says_how_to_opt_out(domain: Domain) -> None:
    sms = await render(domain, "utter_intro", "twilio")
    assert sms and "Reply STOP" in sms["text"] and "Test Clinic" in sms["text"]
    web = await render(domain, "utter_intro", "rest")
    assert web and "STOP" not in web["text"]


async def test_buttons_reach_both_channels(domain: Domain) -> None:
    # The SMS channel numbers the same buttons: the response keeps them for both.
    for channel in ("twilio", "socketio"):
        rendered = await render(domain, "utter_what_to_change", channel)
        assert rendered and len(rendered.get("buttons") or []) == 4
