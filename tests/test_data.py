"""Integrity of the training data, responses, rules and test data."""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
import yaml
from rasa.shared.core.domain import Domain
from rasa.shared.core.training_data.story_reader.yaml_story_reader import (
    YAMLStoryReader,
)
from rasa.shared.nlu.constants import ENTITIES, INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message
from testkit import (
    DOMAIN_FILES,
    HELDOUT_FILE,
    KNOWN_MISSES_DIR,
    NLU_DIR,
    PROJECT_ROOT,
    STORIES_DIR,
    nlu_examples,
    normalise,
    training_examples,
)

from actions.faq import faq_topic_titles
from actions.settings import ClinicInfo, parse_clinic_config
from staff.content_rules import (
    FACT_PATTERNS,
    MAX_FAQ_ANSWER,
    SMS_FAQ_ANSWER,
    SMS_SAFE,
    title_problems,
)

MIN_FAQ_EXAMPLES = 15
# Placeholders the actions fill in (actions/settings.py, actions/handoff.py).
ACTION_PLACEHOLDERS = {
    "clinic_name",
    "clinic_city",
    "clinic_state",
    "contact_details",
    "hours",
    # booking (actions/booking/)
    "horizon_days",
    "visit_type_name",
    "time_preference",
    "when",
    "reference",
    "old_reference",
    "patient_name",
    "phone",
    # reminders (actions/reminders.py): clinic.yml's wording, scheduling/reminders.py
    "reminder",
}
# Entities a button may set, and the values each may take (None: any value).
BUTTON_ENTITIES = {
    "faq_topic": None,  # checked against the FAQ topics below
    "booking_field": {"time", "visit_type", "name", "phone"},
    "reminder_consent": {"yes", "no"},
}
# Slots that action_session_start fills from clinic.yml (clinic_core/session.py).
FACT_SLOTS = {
    "clinic_name",
    "clinic_city",
    "clinic_state",
    "clinic_contact_sentence",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rasa_domain() -> Domain:
    return Domain.load([str(path) for path in DOMAIN_FILES])


def all_responses() -> Dict[str, List[Dict[str, Any]]]:
    responses: Dict[str, List[Dict[str, Any]]] = {}
    for path in DOMAIN_FILES:
        responses.update(_load(path).get("responses") or {})
    return responses


def response_texts() -> Iterator[Tuple[str, str]]:
    """(response name, text) of every variation, button title and payload."""
    for name, variations in all_responses().items():
        for variation in variations:
            yield name, str(variation.get("text") or "")
            for button in variation.get("buttons") or []:
                yield name, str(button["title"])
                yield name, str(button["payload"])


def declared_intents() -> Set[str]:
    """The intents listed in domain.yml (Rasa adds its default intents to these)."""
    return {
        entry if isinstance(entry, str) else next(iter(entry))
        for entry in _load(DOMAIN_FILES[0])["intents"]
    }


def faq_answers() -> Dict[str, str]:
    responses = _load(DOMAIN_FILES[1])["responses"]
    return {
        name.split("/", 1)[1]: variation["text"]
        for name, variations in responses.items()
        for variation in variations
    }


def faq_training_topics() -> Dict[str, List[str]]:
    topics: Dict[str, List[str]] = defaultdict(list)
    for intent, text in nlu_examples(NLU_DIR / "faq.yml"):
        if intent.startswith("faq/"):
            topics[intent.split("/", 1)[1]].append(text)
    return dict(topics)


def placeholders(text: str) -> Set[str]:
    """Names of ``{placeholder}``s; ``{{`` escapes do not count."""
    return set(re.findall(r"(?<!\{)\{([^{}\n]+)\}(?!\})", text))


def rule_steps() -> Iterator[Tuple[Path, Dict[str, Any]]]:
    for path in sorted((PROJECT_ROOT / "data" / "rules").glob("*.yml")):
        for rule in _load(path).get("rules") or []:
            for step in rule.get("steps") or []:
                yield path, step


def story_user_steps(*folders: Path) -> List[Tuple[str, str]]:
    """(intent, text) of every user message with text in the test stories."""
    steps: List[Tuple[str, str]] = []
    for path in sorted(path for folder in folders for path in folder.glob("*.yml")):
        for story in _load(path).get("stories") or []:
            for step in story.get("steps") or []:
                if "user" in step:
                    steps.append((str(step.get("intent")), str(step["user"]).strip()))
    return steps


# --- FAQ topics -----------------------------------------------------------------------


def test_every_faq_topic_has_examples_and_an_answer() -> None:
    trained, answered = set(faq_training_topics()), set(faq_answers())
    assert trained, "no faq/<topic> examples in data/nlu/faq.yml"
    assert trained - answered == set(), "topics without utter_faq/<topic> answer"
    assert answered - trained == set(), "answers without faq/<topic> examples"


@pytest.mark.parametrize("topic", sorted(faq_training_topics()))
def test_faq_topic_has_enough_examples(topic: str) -> None:
    assert len(faq_training_topics()[topic]) >= MIN_FAQ_EXAMPLES


def test_every_faq_topic_has_a_button_title() -> None:
    topics, titles = set(faq_answers()), set(faq_topic_titles())
    assert topics - titles == set(), "topics without a title in actions/faq_titles.yml"
    assert titles - topics == set(), "titles of topics that do not exist"


def test_button_titles_are_short_plain_and_state_no_clinic_fact() -> None:
    problems = {
        topic: title_problems(title) for topic, title in faq_topic_titles().items()
    }
    assert {topic: found for topic, found in problems.items() if found} == {}


@pytest.mark.parametrize("topic", sorted(faq_answers()))
def test_faq_answer_fits_in_sms(topic: str) -> None:
    answer = faq_answers()[topic]
    assert 0 < len(answer) <= MAX_FAQ_ANSWER
    if len(answer) > SMS_FAQ_ANSWER:
        warnings.warn(
            f"utter_faq/{topic} has {len(answer)} characters (> {SMS_FAQ_ANSWER}, "
            "more than two SMS segments)",
            stacklevel=1,
        )


# --- responses ------------------------------------------------------------------------


def test_responses_are_sms_safe_ascii() -> None:
    unsafe = [
        (name, text, sorted({c for c in text if c not in SMS_SAFE}))
        for name, text in response_texts()
        if not set(text) <= SMS_SAFE
    ]
    assert unsafe == []


@pytest.mark.parametrize("kind", sorted(FACT_PATTERNS))
def test_responses_state_no_clinic_fact(kind: str) -> None:
    pattern = re.compile(FACT_PATTERNS[kind], re.IGNORECASE)
    stated = [(name, text) for name, text in response_texts() if pattern.search(text)]
    assert stated == [], f"responses state a {kind}; only clinic.yml may"


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("price", "A visit costs $150."),
        ("price", "It is 80 dollars"),
        ("insurance plan", "We take Blue Cross and Aetna."),
        ("time of day", "We open at 8am"),
        ("time of day", "open 8:30 - 17:00"),
        ("weekday", "Open Mon-Fri"),
        ("weekday", "closed on Sundays"),
        ("phone number", "Call (817) 555-0100"),
        ("street address", "We are at 123 Main St"),
        ("web or e-mail address", "write to front@clinic.example"),
        ("web or e-mail address", "see www.example.org"),
    ],
)
def test_fact_patterns_catch_clinic_facts(kind: str, text: str) -> None:
    assert re.search(FACT_PATTERNS[kind], text, re.IGNORECASE)


def test_responses_do_not_hard_code_clinic_yml_values() -> None:
    info = parse_clinic_config(_load(PROJECT_ROOT / "clinic.yml"), "clinic.yml")
    values = [
        value
        for value in (
            info.name,
            info.city,
            info.state,
            info.address,
            info.phone,
            info.hours,
            info.website,
        )
        if value
    ]
    hard_coded = [
        (name, value)
        for name, text in response_texts()
        for value in values
        if value.lower() in text.lower()
    ]
    assert hard_coded == [], "use {clinic_name}, {clinic_city}, ... instead"


def known_actions(domain: Domain) -> Set[str]:
    """Domain actions plus the retrieval actions (utter_faq) Rasa adds itself."""
    return set(domain.action_names_or_texts) | {
        f"utter_{intent}" for intent in domain.retrieval_intents
    }


def test_placeholders_are_filled_by_the_actions_or_fact_slots() -> None:
    unknown = [
        (name, placeholder)
        for name, text in response_texts()
        for placeholder in placeholders(text)
        if placeholder not in ACTION_PLACEHOLDERS | FACT_SLOTS
    ]
    assert unknown == []


def test_fact_slots_are_declared_in_the_domain(rasa_domain: Domain) -> None:
    assert {slot.name for slot in rasa_domain.slots} >= FACT_SLOTS


def test_responses_with_action_values_are_only_uttered_by_actions() -> None:
    with_values = {
        name for name, text in response_texts() if placeholders(text) - FACT_SLOTS
    }
    assert "utter_hours" in with_values  # the check below can see placeholders
    in_rules = {str(step["action"]) for _, step in rule_steps() if "action" in step}
    assert in_rules & with_values == set()


def test_faq_answers_with_fact_slots_need_the_facts_loaded() -> None:
    # utter_faq/* is uttered by Rasa itself; if session start could not load the
    # facts, the unconditioned variation must be used, never "None is in None".
    checked = 0
    loaded = {"type": "slot", "name": "clinic_facts_loaded", "value": True}
    for name, variations in all_responses().items():
        if not name.startswith("utter_faq/"):
            continue
        for variation in variations:
            if placeholders(str(variation.get("text", ""))) & FACT_SLOTS:
                assert loaded in (variation.get("condition") or []), name
                checked += 1
            else:
                assert not placeholders(str(variation.get("text", ""))), name
    assert checked >= 1


def test_responses_used_by_the_actions_exist(rasa_domain: Domain) -> None:
    """Responses the action server and the Rasa server's extensions utter."""
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("actions", "clinic_core")
        for path in (PROJECT_ROOT / folder).glob("*.py")
    )
    used = set(re.findall(r"response=\"(utter_[\w/]+)\"", source))
    used |= set(re.findall(r"_RESPONSES? = \"(utter_[\w/]+)\"", source))
    # the regexes work
    assert {"utter_default", "utter_hours", "utter_intro"} <= used
    assert "utter_action_unavailable" in used
    assert used - set(rasa_domain.responses) == set()


def test_button_payloads_trigger_known_intents_and_topics(rasa_domain: Domain) -> None:
    from rasa.core.nlg.interpolator import interpolate_text

    topics = set(faq_answers())
    checked = 0
    for name, variations in all_responses().items():
        for variation in variations:
            for button in variation.get("buttons") or []:
                payload = interpolate_text(button["payload"], {})  # as Rasa sends it
                parsed = YAMLStoryReader.unpack_regex_message(
                    Message({TEXT: payload}), rasa_domain
                )
                intent = (parsed.get(INTENT) or {}).get("name")
                assert intent in rasa_domain.intents, (name, payload)
                for entity in parsed.get(ENTITIES) or []:
                    assert entity["entity"] in BUTTON_ENTITIES, (name, payload)
                    allowed = BUTTON_ENTITIES[entity["entity"]] or topics
                    assert entity["value"] in allowed, (name, payload)
                checked += 1
    assert checked >= 6


# --- rules and intents ----------------------------------------------------------------


def test_rules_use_only_domain_intents_and_actions(rasa_domain: Domain) -> None:
    actions = known_actions(rasa_domain)
    assert "utter_faq" in actions
    for path, step in rule_steps():
        if "intent" in step:
            assert step["intent"] in rasa_domain.intents, (path.name, step)
        if "action" in step:
            assert step["action"] in actions, (path.name, step)


def test_every_intent_has_a_rule() -> None:
    ruled = {step["intent"] for _, step in rule_steps() if "intent" in step}
    assert declared_intents() - ruled == set()
    assert "nlu_fallback" in ruled


def test_training_intents_match_the_domain() -> None:
    trained = {intent.split("/", 1)[0] for intent, _ in training_examples()}
    # Rasa's external events (trigger_intent) are never predicted from a message.
    external = {
        intent for intent in declared_intents() if intent.startswith("EXTERNAL_")
    }
    assert trained == declared_intents() - external


def test_no_training_example_has_two_intents() -> None:
    seen: Dict[str, Set[str]] = defaultdict(set)
    for intent, text in training_examples():
        seen[normalise(text)].add(intent)
    conflicts = {
        text: sorted(intents) for text, intents in seen.items() if len(intents) > 1
    }
    assert conflicts == {}


# --- held-out examples ----------------------------------------------------------------


def test_heldout_examples_are_not_in_the_training_data() -> None:
    trained = {normalise(text) for _, text in training_examples()}
    heldout = nlu_examples(HELDOUT_FILE)
    assert len(heldout) > 100
    leaked = [(intent, text) for intent, text in heldout if normalise(text) in trained]
    assert leaked == []


@pytest.mark.parametrize(
    "path",
    sorted((PROJECT_ROOT / "data_validation").glob("*.yml")),
    ids=lambda path: path.name,
)
def test_validation_examples_are_not_in_the_training_data(path: Path) -> None:
    trained = {normalise(text) for _, text in training_examples()}
    validation = nlu_examples(path)
    assert len(validation) > 100
    leaked = [
        (intent, text) for intent, text in validation if normalise(text) in trained
    ]
    assert leaked == []


def test_heldout_intents_exist(rasa_domain: Domain) -> None:
    topics = set(faq_answers())
    for intent in {intent for intent, _ in nlu_examples(HELDOUT_FILE)}:
        base, _, topic = intent.partition("/")
        assert base in rasa_domain.intents, intent
        if topic:
            assert base == "faq" and topic in topics, intent


# --- clinic.yml -----------------------------------------------------------------------


def test_clinic_yml_is_valid_and_sms_safe() -> None:
    info = parse_clinic_config(_load(PROJECT_ROOT / "clinic.yml"), "clinic.yml")
    assert isinstance(info, ClinicInfo)
    for field, value in vars(info).items():
        assert set(value) <= SMS_SAFE - {"\n"}, field


# --- test stories ---------------------------------------------------------------------


def test_test_stories_cover_every_faq_topic() -> None:
    covered = {
        intent.split("/", 1)[1]
        for intent, _ in story_user_steps(STORIES_DIR)
        if intent.startswith("faq/")
    }
    assert set(faq_answers()) - covered == set()


def test_test_story_messages_are_new_to_the_model() -> None:
    known = {normalise(text) for _, text in training_examples()}
    known |= {normalise(text) for _, text in nlu_examples(HELDOUT_FILE)}
    typed = [
        (intent, text)
        for intent, text in story_user_steps(STORIES_DIR, KNOWN_MISSES_DIR)
        if not text.startswith("/")
    ]
    assert len(typed) > 30
    reused = [(intent, text) for intent, text in typed if normalise(text) in known]
    assert reused == []


@pytest.mark.parametrize(
    "folder", [STORIES_DIR, KNOWN_MISSES_DIR], ids=lambda p: p.name
)
def test_test_stories_use_domain_intents_and_actions(
    folder: Path, rasa_domain: Domain
) -> None:
    topics = set(faq_answers())
    files = sorted(folder.glob("test_*.yml"))
    assert files, "rasa test only reads conversation tests from files named test_*"
    for path in files:
        for story in _load(path)["stories"]:
            for step in story["steps"]:
                if "intent" in step:
                    base, _, topic = str(step["intent"]).partition("/")
                    assert base in rasa_domain.intents, (story["story"], step)
                    assert not topic or topic in topics, (story["story"], step)
                if "action" in step:
                    assert step["action"] in known_actions(rasa_domain), (
                        story["story"],
                        step,
                    )
