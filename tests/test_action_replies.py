"""The reply check reused by the server rejects and accepts exactly what Rasa's does."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from testkit import extension_on

from clinic_core import action_replies

REPLIES = [
    {},
    {"events": [], "responses": []},
    {
        "events": [
            {"event": "slot", "name": "patient_name", "value": "Maria"},
            {"event": "active_loop", "name": "booking_form"},
            {"event": "followup", "name": "action_listen"},
        ],
        "responses": [{"response": "utter_greet"}, {"text": "hi", "buttons": []}],
    },
    {"events": "nope"},
    {"events": [{"event": "no_such_event"}]},
    {"events": [{"name": "x"}]},
    {"responses": [1]},
    {"responses": {"text": "not a list"}},
    [],
    "text",
]


@pytest.fixture(scope="module", autouse=True)
def replies_on() -> Iterator[None]:
    with extension_on("action_replies"):
        yield


@pytest.fixture
def rasas_method() -> Iterator[None]:
    action_replies.uninstall()
    yield
    action_replies.install()


def outcome(reply: Any) -> Optional[str]:
    action = RemoteAction("validate_booking_form", None)
    try:
        assert action._validate_action_result(reply) is True
    except ValidationError as error:
        return str(error.message)
    return None


@pytest.mark.parametrize("reply", REPLIES, ids=range(len(REPLIES)))
def test_same_verdict_and_message_as_rasa(reply: Dict[str, Any]) -> None:
    ours = outcome(reply)
    action_replies.uninstall()
    try:
        rasas = outcome(reply)
    finally:
        action_replies.install()
    assert ours == rasas


def test_invalid_replies_are_rejected() -> None:
    assert outcome({"events": "nope"}) is not None
    assert "Failed to validate Action server response" in (outcome([]) or "")


def test_install_is_idempotent_and_uninstall_restores_rasa(rasas_method: None) -> None:
    original = RemoteAction._validate_action_result
    action_replies.install()
    action_replies.install()
    assert RemoteAction._validate_action_result is action_replies.validate_action_result
    action_replies.uninstall()
    assert RemoteAction._validate_action_result is original
