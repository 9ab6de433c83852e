"""The booking tables kept in step with domain.yml and data/rules/*.yml.

``actions/booking/refused.py`` says, for each intent a form never takes as an
answer, what handles it instead; ``actions/booking/slots.py`` puts every booking
slot in a group with its cleared value. These tests fail when a rule, a slot or an
intent is added on one side only.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, Set

import pytest
import yaml
from testkit import DOMAIN_FILES, PROJECT_ROOT

from actions.booking.refused import (
    CLARIFIED_IN_FORM,
    GENERAL_RULE,
    IN_FORM_RULE,
    NEW_TASK,
    NOT_AN_ANSWER,
    REFUSED_INTENTS,
)
from actions.booking.slots import GROUPS
from clinic_common.clinic_config import clinic
from clinic_core.session import fact_slots

DOMAIN: Dict[str, Any] = yaml.safe_load(DOMAIN_FILES[0].read_text(encoding="utf-8"))
FORMS = sorted(DOMAIN["forms"])
INTENTS = {
    intent if isinstance(intent, str) else next(iter(intent))
    for intent in DOMAIN["intents"]
}
# The actions that start a new task (a booking, a lookup) when asked for.
STARTS_A_TASK = {"action_start_booking", "action_start_lookup"}
# Slots that are not the booking's: the clinic's facts (set at every session start)
# and the language of the latest red flag.
NOT_BOOKING_SLOTS = set(fact_slots(clinic())) | {"red_flag_language"}


def rules() -> Iterator[Dict[str, Any]]:
    """Every rule of data/rules/*.yml."""
    for path in sorted((PROJECT_ROOT / "data" / "rules").glob("*.yml")):
        yield from yaml.safe_load(path.read_text(encoding="utf-8"))["rules"]


def first_intent(rule: Dict[str, Any]) -> str:
    return str(rule["steps"][0].get("intent"))


def in_form_intents(form: str) -> Set[str]:
    """The intents a rule handles while ``form`` is active."""
    return {
        first_intent(rule)
        for rule in rules()
        if {"active_loop": form} in rule.get("condition", [])
        and "intent" in rule["steps"][0]
    }


def general_actions(intent: str) -> List[str]:
    """The first action of each rule without conditions that starts with ``intent``."""
    return [
        rule["steps"][1]["action"]
        for rule in rules()
        if not rule.get("condition")
        and first_intent(rule) == intent
        and not rule["steps"][0].get("entities")
    ]


def test_the_table_names_domain_intents_and_known_handlings() -> None:
    assert set(REFUSED_INTENTS) <= INTENTS
    assert set(REFUSED_INTENTS.values()) <= {IN_FORM_RULE, GENERAL_RULE, NEW_TASK}
    assert CLARIFIED_IN_FORM.isdisjoint(NOT_AN_ANSWER)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("intent", sorted(REFUSED_INTENTS))
def test_each_refused_intent_is_handled_as_the_table_says(
    form: str, intent: str
) -> None:
    handling = REFUSED_INTENTS[intent]
    handled_in_form = intent in in_form_intents(form)
    assert handled_in_form is (handling == IN_FORM_RULE), (
        f"{intent} in {form}: the table says {handling!r}"
    )
    if handling == GENERAL_RULE:
        assert general_actions(intent), f"no rule answers {intent} outside a form"
        assert not set(general_actions(intent)) & STARTS_A_TASK
    if handling == NEW_TASK:
        assert set(general_actions(intent)) <= STARTS_A_TASK
        assert general_actions(intent), f"no rule starts a task for {intent}"


@pytest.mark.parametrize("form", FORMS)
def test_in_form_rules_are_for_refused_or_clarified_intents_only(form: str) -> None:
    expected = {i for i, how in REFUSED_INTENTS.items() if how == IN_FORM_RULE}
    assert in_form_intents(form) - {"nlu_fallback"} == expected
    assert in_form_intents(form) - expected == set(CLARIFIED_IN_FORM)


def test_every_grouped_slot_is_a_domain_slot() -> None:
    for name, group in GROUPS.items():
        unknown = set(group.names) - set(DOMAIN["slots"])
        assert not unknown, f"{name} names slots not in domain.yml: {unknown}"


def test_every_booking_slot_is_in_a_group() -> None:
    grouped = {slot for group in GROUPS.values() for slot in group.names}
    assert set(DOMAIN["slots"]) - NOT_BOOKING_SLOTS == grouped


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_slot_is_cleared_to_its_initial_value(group: str) -> None:
    for slot, value in GROUPS[group].cleared_values().items():
        assert DOMAIN["slots"][slot].get("initial_value") == value, slot


def test_no_action_clears_a_booking_slot_by_hand() -> None:
    # Every reset goes through a group (slots.py), so a slot's cleared value is
    # written once: no SlotSet(<name>, None or False) elsewhere.
    grouped = {slot for group in GROUPS.values() for slot in group.names}
    by_hand = re.compile(r"SlotSet\(\s*\"(\w+)\",\s*(?:None|False|0)\s*\)")
    for path in sorted((PROJECT_ROOT / "actions").rglob("*.py")):
        if path.name != "slots.py":
            found = set(by_hand.findall(path.read_text(encoding="utf-8")))
            assert not found & grouped, path
