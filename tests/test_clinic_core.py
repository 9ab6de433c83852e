"""The Rasa server's safety extensions: failing custom actions and SafetyPolicy.

The action server is a real HTTP server on loopback (aiohttp) that refuses, fails
with a body full of patient data, hangs, or rejects; Rasa's own ``RemoteAction``
calls it through ``clinic_core.action_guard``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import pytest
import yaml
from aiohttp import web
from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
from rasa.core.actions.forms import FormAction
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.engine.graph import ExecutionContext, GraphNode, GraphSchema, SchemaNode
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.shared.core.constants import REQUESTED_SLOT
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActionExecutionRejected,
    ActiveLoop,
    BotUttered,
    Event,
    FollowupAction,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.exceptions import InvalidConfigException
from rasa.utils.endpoints import EndpointConfig
from rasa_sdk import Action
from rasa_sdk.executor import ActionExecutor
from testkit import PROJECT_ROOT, extension_on

from actions import failures
from clinic_common.privacy import conversation_key
from clinic_core import action_guard, extensions
from clinic_core.action_guard import FAILED_TURNS, guarded_run
from clinic_core.policy import ANSWERED_FIRST, next_action

NAME = "Marisol Quintanilla"
PHONE = "+18175550188"
UNAVAILABLE = (
    "Sorry, this part of the assistant is unavailable right now. Please try again "
    "later, or contact Valliant Life Medical in Fort Worth, Texas."
)


@pytest.fixture(scope="module", autouse=True)
def guard_on() -> Iterator[None]:
    with extension_on("action_guard"):
        yield


@pytest.fixture
def domain(rasa_domain: Domain) -> Domain:
    """These tests' name for the Rasa domain (conftest's ``domain`` is a dict)."""
    return rasa_domain


def tracker_in_form(domain: Domain, sender: str, text: str = "tomorrow at 3") -> Any:
    tracker = DialogueStateTracker(sender, domain.slots)
    for event in (
        SlotSet("clinic_name", "Valliant Life Medical"),
        SlotSet("clinic_city", "Fort Worth"),
        SlotSet("clinic_state", "Texas"),
        SlotSet("clinic_contact_sentence", ""),
        SlotSet("patient_name", NAME),
        SlotSet("patient_phone", PHONE),
        ActiveLoop("booking_form"),
        SlotSet(REQUESTED_SLOT, "time_preference"),
        ActionExecuted("action_listen"),
        UserUttered(text, {"name": "inform", "confidence": 0.9}),
    ):
        tracker.update(event)
    return tracker


class FakeActionServer:
    """An action server on loopback that answers as the test says."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0
        self.runner: Optional[web.AppRunner] = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.json()
        if self.mode == "fail":  # what rasa_sdk does when an action raises
            text = json.dumps({"error": f"{NAME} {PHONE}", "request_body": body})
            return web.Response(status=500, text=text)
        if self.mode == "hang":
            await asyncio.sleep(30)
        if self.mode == "reject":
            text = json.dumps({"action_name": body["next_action"], "error": "no"})
            return web.Response(status=400, text=text)
        return web.json_response({"events": [], "responses": []})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/webhook"


@pytest.fixture
async def server() -> AsyncIterator[FakeActionServer]:
    fake = FakeActionServer()
    await fake.start()
    yield fake
    assert fake.runner is not None
    await fake.runner.cleanup()


async def run_remote(name: str, url: str, domain: Domain, tracker: Any) -> List[Event]:
    output = CollectingOutputChannel()
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    action = RemoteAction(name, EndpointConfig(url))
    return await action.run(output, nlg, tracker, domain)


def unavailable_in_form() -> List[Event]:
    return [
        ActiveLoop(None),
        SlotSet(REQUESTED_SLOT, None),
        FollowupAction("action_listen"),
    ]


# --- Rasa internals this relies on ---------------------------------------------------


def test_rasa_calls_custom_actions_and_form_validation_through_remote_action() -> None:
    assert RemoteAction.run is guarded_run
    original = action_guard._RASAS_RUN
    assert original is not None
    assert list(inspect.signature(original).parameters) == [
        "self",
        "output_channel",
        "nlg",
        "tracker",
        "domain",
    ]
    # The form's validation is a RemoteAction built inside FormAction.
    assert "RemoteAction(" in inspect.getsource(FormAction.validate_slots)


# --- action_guard -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("fail", "the action server answered HTTP 500"),
        ("hang", "the action server did not answer in time"),
        ("refuse", "no connection to the action server"),
    ],
)
async def test_a_failing_action_says_unavailable_and_logs_no_patient_data(
    domain: Domain,
    server: FakeActionServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    reason: str,
) -> None:
    monkeypatch.setenv("ACTION_SERVER_TIMEOUT", "0.5")
    server.mode = mode
    url = "http://127.0.0.1:9/webhook" if mode == "refuse" else server.url
    tracker = tracker_in_form(domain, f"{PHONE}-{mode}")
    caplog.set_level(logging.DEBUG)

    events = await run_remote("action_ask_visit_type", url, domain, tracker)

    said = [e for e in events if isinstance(e, BotUttered)]
    assert [e.text for e in said] == [UNAVAILABLE]
    assert [e for e in events if not isinstance(e, BotUttered)] == (
        unavailable_in_form()
    )
    assert tracker in FAILED_TURNS
    key = conversation_key(tracker.sender_id)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR][
        -1
    ] == (
        f"Custom action action_ask_visit_type failed in conversation {key}: {reason}."
    )
    for secret in (NAME, "Quintanilla", PHONE, "8175550188", "tomorrow at 3"):
        assert secret not in caplog.text


async def test_later_actions_of_a_failed_turn_are_not_even_called(
    domain: Domain, server: FakeActionServer
) -> None:
    server.mode = "fail"
    tracker = tracker_in_form(domain, "turn-once")
    for event in await run_remote("action_ask_visit_type", server.url, domain, tracker):
        tracker.update(event)  # as Rasa's processor does
    calls = server.calls
    server.mode = "ok"

    events = await run_remote("action_stop_booking", server.url, domain, tracker)

    assert server.calls == calls
    assert events == [FollowupAction("action_listen")]  # "unavailable" said once
    tracker.update(UserUttered("next message", {"name": "greet"}))
    await run_remote("action_stop_booking", server.url, domain, tracker)
    assert server.calls == calls + 1  # a new turn tries again


@pytest.mark.parametrize(
    ("mode", "failed"),
    [
        # A failed validation rejects the form so that the rules can answer.
        pytest.param("fail", True, id="failed-validation"),
        # A rejection by the action server is Rasa's, as before.
        pytest.param("reject", False, id="rejected-by-the-action-server"),
    ],
)
async def test_validation_that_does_not_run_rejects_the_form(
    domain: Domain, server: FakeActionServer, mode: str, failed: bool
) -> None:
    server.mode = mode
    tracker = tracker_in_form(domain, mode)

    with pytest.raises(ActionExecutionRejection):
        await run_remote("validate_booking_form", server.url, domain, tracker)
    assert (tracker in FAILED_TURNS) is failed


async def test_no_unavailable_message_after_red_flag_guidance(
    domain: Domain, server: FakeActionServer
) -> None:
    server.mode = "fail"
    tracker = tracker_in_form(domain, "red-flag", "I have chest pain")
    tracker.update(ActionExecuted("utter_emergency"))
    tracker.update(BotUttered("Call 911", metadata={"utter_action": "utter_emergency"}))

    events = await run_remote("action_stop_booking", server.url, domain, tracker)

    assert events == unavailable_in_form()


# --- SafetyPolicy -----------------------------------------------------------------


def turn(domain: Domain, intent: str, *after: Event, loop: bool = True) -> Any:
    tracker = DialogueStateTracker("policy", domain.slots)
    if loop:
        tracker.update(ActiveLoop("booking_form"))
    tracker.update(ActionExecuted("action_listen"))
    tracker.update(UserUttered("text", {"name": intent, "confidence": 1.0}))
    for event in after:
        tracker.update(event)
    return tracker


@pytest.mark.parametrize(
    ("intent", "guidance"),
    [("emergency", "utter_emergency"), ("crisis", "utter_crisis")],
)
@pytest.mark.parametrize("loop", [True, False])
def test_red_flags_come_before_any_form(
    domain: Domain, intent: str, guidance: str, loop: bool
) -> None:
    assert next_action(turn(domain, intent, loop=loop), False) == (guidance, 1.0, True)
    after = turn(domain, intent, ActionExecuted(guidance), loop=loop)
    expected = ("action_deactivate_loop", 1.0, True) if loop else None
    assert next_action(after, False) == expected


def test_without_a_red_flag_or_a_failure_the_rules_decide(domain: Domain) -> None:
    assert next_action(turn(domain, "inform"), False) is None
    assert next_action(turn(domain, "faq", ActionExecuted("utter_faq")), False) is None


def test_a_failed_turn_in_a_form_ends_with_unavailable(domain: Domain) -> None:
    rejected = ActionExecutionRejected("booking_form")
    # A question the Rasa server can answer: the rules go first (0.5 < 1.0).
    assert next_action(turn(domain, "faq", rejected), True) == (
        "utter_action_unavailable",
        0.5,
        False,
    )
    # An answer the form cannot check: unavailable, above every rule.
    assert next_action(turn(domain, "inform", rejected), True) == (
        "utter_action_unavailable",
        1.0,
        False,
    )
    # After the rule's answer, instead of asking the form's question again.
    answered = turn(domain, "faq", rejected, ActionExecuted("utter_faq"))
    assert next_action(answered, True) == ("utter_action_unavailable", 1.0, True)
    said = turn(domain, "inform", rejected, ActionExecuted("utter_action_unavailable"))
    assert next_action(said, True) == ("action_deactivate_loop", 1.0, True)
    stopped = turn(
        domain,
        "inform",
        rejected,
        ActionExecuted("utter_action_unavailable"),
        ActionExecuted("action_deactivate_loop"),
        ActiveLoop(None),
    )
    assert next_action(stopped, True) == ("action_listen", 1.0, True)
    assert "faq" in ANSWERED_FIRST


# --- the action server's side -------------------------------------------------------


async def test_an_action_that_raises_is_logged_without_patient_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Raising(Action):
        def name(self) -> str:
            return "action_raising"

        async def run(
            self, dispatcher: Any, tracker: Any, domain: Any
        ) -> List[Dict[str, Any]]:
            raise ValueError(f"cannot read {NAME} at {PHONE}")

    executor = ActionExecutor()
    executor.register_action(Raising())
    call = {
        "next_action": "action_raising",
        "sender_id": PHONE,
        "tracker": {"sender_id": PHONE, "events": [], "slots": {}},
        "domain": {},
    }
    caplog.set_level(logging.DEBUG)

    with pytest.raises(failures.ActionFailed) as raised:
        await executor.run(call)  # type: ignore[arg-type]

    assert str(raised.value) == "Action action_raising failed."
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert caplog.records[-1].getMessage() == (
        f"Action action_raising failed in conversation {conversation_key(PHONE)} "
        "(ValueError)."
    )
    for secret in (NAME, PHONE, "8175550188"):
        assert secret not in caplog.text


def test_conversation_keys_are_stable_and_reveal_nothing() -> None:
    key = conversation_key(PHONE)
    assert key == conversation_key(PHONE) != conversation_key("+18175550189")
    assert key.startswith("c-") and len(key) == 14
    assert "8175550188" not in key


# --- the switch: config.yml, read by Rasa's own graph -------------------------------

CONFIG = PROJECT_ROOT / "config.yml"


@pytest.fixture
def all_off() -> Iterator[None]:
    """Every extension off for the test, then as it was."""
    before = extensions.switched_on()
    extensions.switch_off(list(extensions.EXTENSIONS))
    yield
    extensions.switch_off(list(extensions.EXTENSIONS))
    if before:
        extensions.switch_on(before)


def predict_nodes(config: Dict[str, Any]) -> Dict[str, SchemaNode]:
    """The RasaExtensions nodes of the graph Rasa loads a model of ``config`` as."""
    graphs = DefaultV1Recipe().graph_config_for_recipe(config, {})
    return {
        name: node
        for name, node in graphs.predict_schema.nodes.items()
        if node.uses is extensions.RasaExtensions
    }


def built_as_rasa_loads_it(
    tmp_path: Path, config: Dict[str, Any]
) -> extensions.RasaExtensions:
    """Rasa's GraphNode for the policy, built as at model load (eager)."""
    (name, node), *others = predict_nodes(config).items()
    assert not others
    graph_node = GraphNode.from_schema_node(
        name,
        node,
        LocalModelStorage(tmp_path),
        ExecutionContext(GraphSchema({}), "test-model"),
    )
    component = graph_node._component  # built in __init__, since the node is eager
    assert isinstance(component, extensions.RasaExtensions)
    return component


def test_importing_clinic_core_changes_nothing_in_rasa() -> None:
    script = (
        "import clinic_core, clinic_core.extensions, clinic_core.policy, "
        "clinic_core.tracker_store, clinic_core.session\n"
        "from rasa.core.actions import action\n"
        "from clinic_core import extensions, action_guard, action_replies, session\n"
        "assert action.RemoteAction.run is not action_guard.guarded_run\n"
        "assert action.RemoteAction._validate_action_result is not "
        "action_replies.validate_action_result\n"
        "assert action.default_actions is not session._default_actions\n"
        "print(extensions.switched_on())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr[-2000:]


def test_config_yml_switches_every_extension_on() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    entries = [
        policy
        for policy in config["policies"]
        if policy["name"] == "clinic_core.extensions.RasaExtensions"
    ]
    assert len(entries) == 1
    assert sorted(entries[0]["switch_on"]) == sorted(extensions.EXTENSIONS)


def test_rasa_builds_the_switch_when_it_loads_the_model(
    tmp_path: Path, all_off: None
) -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    (node,) = predict_nodes(config).values()
    assert node.eager and node.constructor_name == "load"

    policy = built_as_rasa_loads_it(tmp_path, config)

    assert extensions.switched_on() == list(extensions.EXTENSIONS)
    assert RemoteAction.run is guarded_run
    assert policy.priority == 0  # below every other policy: never wins a tie


def test_the_switch_predicts_nothing(tmp_path: Path, domain: Domain) -> None:
    config = {"policies": [{"name": "clinic_core.extensions.RasaExtensions"}]}
    config["policies"][0]["switch_on"] = ["action_guard"]
    policy = built_as_rasa_loads_it(tmp_path, config)
    tracker = tracker_in_form(domain, "switch")

    prediction = policy.predict_action_probabilities(tracker, domain)

    assert prediction.max_confidence == 0.0
    assert not prediction.is_no_user_prediction


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "RasaExtensions needs 'switch_on', a list of the extensions"),
        ({"switch_on": []}, "RasaExtensions needs 'switch_on', a list of the"),
        ({"switch_on": "action_guard"}, "RasaExtensions needs 'switch_on', a list"),
        (
            {"switch_on": ["action_guard", "session_starts"]},
            "cannot switch on ['session_starts']: no such extension (known: "
            "session_start, action_guard, action_replies)",
        ),
    ],
)
def test_a_wrong_switch_stops_loading_with_a_clear_error(
    tmp_path: Path, all_off: None, entry: Dict[str, Any], message: str
) -> None:
    config = {"policies": [{"name": "clinic_core.extensions.RasaExtensions", **entry}]}

    with pytest.raises(InvalidConfigException) as raised:
        built_as_rasa_loads_it(tmp_path, config)

    assert message in str(raised.value)
    assert extensions.switched_on() == []  # nothing half switched on
