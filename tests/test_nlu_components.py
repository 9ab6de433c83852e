"""Unit tests of the custom NLU components and the red-flag patterns."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import pytest
import yaml
from rasa.engine.graph import ExecutionContext, GraphComponent, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from testkit import (
    HELDOUT_FILE,
    PROJECT_ROOT,
    nlu_examples,
    selector,
    training_examples,
)

from clinic_nlu.components import (
    FaqConfidenceGate,
    RedFlagDetector,
    TextCleaner,
    WordlessMessageGate,
)
from clinic_nlu.red_flags import match_red_flag
from clinic_nlu.text import clean_text, has_words

ComponentT = TypeVar("ComponentT", bound=GraphComponent)


def create(component: Type[ComponentT], tmp_path: Path, **config: Any) -> ComponentT:
    """Creates a component the way the Rasa graph does: defaults plus config.yml."""
    created = component.create(
        {**component.get_default_config(), **config},
        LocalModelStorage(tmp_path),
        Resource(component.__name__),
        ExecutionContext(GraphSchema({}), "test-model"),
    )
    assert isinstance(created, component)
    return created


def parsed(
    text: str,
    intent_ranking: Sequence[Tuple[str, float]] = (),
    topics: Optional[Sequence[Tuple[str, float]]] = None,
) -> Message:
    """A message as the classifiers leave it: intent, ranking and FAQ selection."""
    ranking = [
        {"name": name, "confidence": confidence} for name, confidence in intent_ranking
    ]
    data: Dict[str, Any] = {TEXT: text, INTENT_RANKING_KEY: ranking}
    if ranking:
        data[INTENT] = dict(ranking[0])
    if topics is not None:
        data["response_selector"] = selector(topics)
    return Message(data=data)


def intent_of(message: Message) -> Tuple[Optional[str], Optional[float]]:
    intent = message.get(INTENT) or {}
    return intent.get("name"), intent.get("confidence")


def ranking_names(message: Message) -> List[str]:
    return [entry["name"] for entry in message.get(INTENT_RANKING_KEY)]


# --- clean_text and TextCleaner -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("back\x00 pain\x07\x1b", "back pain", id="control-characters"),
        pytest.param("what\x7f is\x9f tpi", "what is tpi", id="delete-and-c1"),
        pytest.param("dry\u200bneedling\u200d", "dryneedling", id="zero-width"),
        pytest.param("\u202eabc\u200f", "abc", id="bidi-controls"),
        pytest.param(
            "  what   is\tdry\n\nneedling \r\n", "what is dry needling", id="whitespace"
        ),
        pytest.param("a\u00a0\u00a0b\u3000c", "a b c", id="unicode-spaces"),
        pytest.param(
            "\uff57\uff48\uff41\uff54 \uff49\uff53 \uff34\uff30\uff29",
            "what is TPI",
            id="nfkc-fullwidth",
        ),
        pytest.param("\ufb01ne \u2460", "fine 1", id="nfkc-ligature-and-circled-digit"),
        pytest.param("e\u0301", "\u00e9", id="nfkc-composes"),
        pytest.param(
            "<b>what</b> is <script>x</script>dry needling",
            "what is x dry needling",
            id="markup-tags",
        ),
        pytest.param("pain <3 days", "pain <3 days", id="not-a-tag"),
        pytest.param("", "", id="empty"),
    ],
)
def test_clean_text(raw: str, expected: str) -> None:
    assert clean_text(raw, 1000) == expected


@pytest.mark.parametrize(
    "separator", ["\u2028", "\u2029", "\x0c", "\x0b", "\x85"], ids=repr
)
def test_clean_text_keeps_words_apart_at_line_separators(separator: str) -> None:
    assert clean_text(f"back{separator}pain", 1000) == "back pain"


@pytest.mark.parametrize("invisible", ["\ufeff", "\u2060"], ids=repr)
def test_clean_text_drops_other_zero_width_characters(invisible: str) -> None:
    assert clean_text(f"{invisible}dry{invisible}needling", 1000) == "dryneedling"


def test_clean_text_truncates_after_collapsing_whitespace() -> None:
    assert clean_text("a" * 1500, 1000) == "a" * 1000
    assert clean_text("ab    cd   ef", 5) == "ab cd"
    assert clean_text("   abc", 2) == "ab"


def test_text_cleaner_processes_messages_in_place(tmp_path: Path) -> None:
    cleaner = create(TextCleaner, tmp_path, max_characters=12)
    noisy = Message(data={TEXT: "  what\u200b is \t dry needling?  "})
    no_text = Message(data={INTENT: {"name": "greet", "confidence": 1.0}})

    result = cleaner.process([noisy, no_text])

    assert result == [noisy, no_text]
    assert noisy.get(TEXT) == "what is dry "
    assert no_text.get(TEXT) is None
    assert intent_of(no_text) == ("greet", 1.0)


def test_text_cleaner_default_keeps_1000_characters(tmp_path: Path) -> None:
    message = Message(data={TEXT: "x" * 1200})
    create(TextCleaner, tmp_path).process([message])
    assert len(message.get(TEXT)) == 1000


def test_text_cleaner_cleans_training_examples(tmp_path: Path) -> None:
    examples = [
        Message(data={TEXT: "what\u00a0is  a\u200b spasm", INTENT: "faq"}),
        Message(data={TEXT: "\uff48\uff49", INTENT: "greet"}),
    ]
    training_data = TrainingData(training_examples=examples)

    result = create(TextCleaner, tmp_path).process_training_data(training_data)

    assert result is training_data
    assert [message.get(TEXT) for message in result.training_examples] == [
        "what is a spasm",
        "hi",
    ]


# --- FaqConfidenceGate --------------------------------------------------------------

# Explicit thresholds: the tuned values in config.yml and the defaults may change.
GATE = {"retrieval_intent": "faq", "threshold": 0.5, "ambiguity_threshold": 0.1}


def test_confident_faq_prediction_is_unchanged(tmp_path: Path) -> None:
    message = parsed(
        "what is dry needling",
        [("faq", 0.97), ("book_appointment", 0.02)],
        [("dry_needling", 0.88), ("injection_contents", 0.07)],
    )
    before = copy.deepcopy(message.data)

    create(FaqConfidenceGate, tmp_path, **GATE).process([message])

    assert message.data == before


@pytest.mark.parametrize(
    ("topics", "case"),
    [
        ([("soreness_after", 0.45), ("relief_timing", 0.2)], "low top confidence"),
        ([("soreness_after", 0.52), ("relief_timing", 0.45)], "ambiguous top two"),
        ([("soreness_after", 0.3)], "single low topic"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_unsure_faq_answer_falls_back(
    topics: List[Tuple[str, float]], case: str, tmp_path: Path
) -> None:
    message = parsed(
        "is it normal to still hurt",
        [("faq", 0.96), ("ask_medication_advice", 0.03)],
        topics,
    )

    create(FaqConfidenceGate, tmp_path, **GATE).process([message])

    assert intent_of(message) == ("nlu_fallback", topics[0][1]), case
    assert message.get(INTENT_RANKING_KEY) == [
        {"name": "nlu_fallback", "confidence": topics[0][1]},
        {"name": "faq", "confidence": 0.96},
        {"name": "ask_medication_advice", "confidence": 0.03},
    ]
    # The clarification action needs the FAQ ranking afterwards.
    assert (
        message.get("response_selector")["faq"]["ranking"][0]["confidence"]
        == topics[0][1]
    )


def test_faq_answer_exactly_at_the_thresholds_passes(tmp_path: Path) -> None:
    message = parsed(
        "x", [("faq", 0.9)], [("what_is_spasm", 0.5), ("dry_needling", 0.25)]
    )

    create(
        FaqConfidenceGate, tmp_path, **{**GATE, "ambiguity_threshold": 0.25}
    ).process([message])

    assert intent_of(message) == ("faq", 0.9)


def test_faq_gate_uses_configured_thresholds(tmp_path: Path) -> None:
    strict = create(FaqConfidenceGate, tmp_path, threshold=0.9, ambiguity_threshold=0.5)
    lenient = create(
        FaqConfidenceGate, tmp_path, threshold=0.2, ambiguity_threshold=0.05
    )
    no_ambiguity_check = create(
        FaqConfidenceGate, tmp_path, threshold=0.5, ambiguity_threshold=0.0
    )
    strict_message = parsed(
        "x", [("faq", 0.9)], [("what_is_spasm", 0.8), ("dry_needling", 0.1)]
    )
    lenient_message = parsed(
        "x", [("faq", 0.9)], [("what_is_spasm", 0.3), ("dry_needling", 0.2)]
    )

    tie = parsed("x", [("faq", 0.9)], [("what_is_spasm", 0.5), ("dry_needling", 0.5)])

    strict.process([strict_message])
    lenient.process([lenient_message])
    no_ambiguity_check.process([tie])

    assert intent_of(strict_message)[0] == "nlu_fallback"
    assert intent_of(lenient_message)[0] == "faq"
    assert intent_of(tie)[0] == "faq"


@pytest.mark.parametrize(
    ("intent_ranking", "topics"),
    [
        pytest.param(
            [("ask_hours", 0.8), ("faq", 0.15)],
            [("clinic_location", 0.3)],
            id="other-intent",
        ),
        pytest.param(
            [("nlu_fallback", 0.4), ("faq", 0.4)],
            [("clinic_location", 0.3)],
            id="already-fallback",
        ),
        pytest.param([("faq", 0.9)], [], id="no-faq-ranking"),
        pytest.param([("faq", 0.9)], None, id="no-response-selector"),
    ],
)
def test_faq_gate_leaves_other_predictions_alone(
    intent_ranking: List[Tuple[str, float]],
    topics: Optional[List[Tuple[str, float]]],
    tmp_path: Path,
) -> None:
    message = parsed("when are you open", intent_ranking, topics)
    before = copy.deepcopy(message.data)

    create(FaqConfidenceGate, tmp_path, **GATE).process([message])

    assert message.data == before


# --- WordlessMessageGate ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", False),
        ("\U0001f44d\U0001f44d", False),
        ("???", False),
        ("... :-)", False),
        ("ok", True),
        ("2", True),
        ("\u00bfd\u00f3nde?", True),
        ("\u6211\u80cc\u75bc", True),
    ],
    ids=repr,
)
def test_has_words(text: str, expected: bool) -> None:
    assert has_words(text) is expected


def test_wordless_message_falls_back(tmp_path: Path) -> None:
    message = parsed(
        "\U0001f44d\U0001f44d",
        [("faq", 0.7), ("affirm", 0.2)],
        [("what_is_spasm", 0.9)],
    )

    create(WordlessMessageGate, tmp_path).process([message])

    assert intent_of(message) == ("nlu_fallback", 0.0)
    assert ranking_names(message) == ["nlu_fallback", "faq", "affirm"]


def test_message_with_words_passes_the_wordless_gate(tmp_path: Path) -> None:
    message = parsed("thx \U0001f44d", [("thank", 0.9)])
    before = copy.deepcopy(message.data)

    create(WordlessMessageGate, tmp_path).process([message, Message(data={})])

    assert message.data == before


# --- red flags ----------------------------------------------------------------------

EMERGENCIES = [
    # loss of bladder or bowel control
    "I lost control of my bladder this morning and my back is killing me",
    "since last night I can't control my bowels",
    "I had a bladder accident and didn't even feel it",
    "I wet myself without noticing",
    "I can't pee and my lower back is on fire",
    "I've been leaking urine since the spasm started",
    # numbness in legs, groin, saddle area
    "my groin is numb",
    "numbness in both legs since this morning",
    "numbness around my butt and inner thighs",
    "I can't feel my feet",
    "I can\u2019t feel my legs",
    # sudden leg weakness
    "my legs gave out on the stairs",
    "suddenly my right leg went weak",
    "weakness in both my legs",
    "I can't move my legs",
    # fever
    "back pain and a fever since yesterday",
    "I'm running a temperature and my back throbs",
    "temperature of 102 and my back hurts",
    # serious fall or accident
    "I was in a car accident an hour ago",
    "I fell off a ladder at work",
    "fell down the stairs and hit my back hard",
    # chest pain, breathing, stroke
    "I have chest pain",
    "there's pressure in my chest",
    "I'm short of breath",
    "I can't breathe right",
    "could this be a heart attack",
    "my face is drooping, am I having a stroke",
]
CRISES = [
    "I want to kill myself",
    "I've been thinking about suicide",
    "I'm suicidal",
    "I want to end my life",
    "I want to harm myself",
    "I would be better off dead",
    "I don't want to live anymore",
    "I wish I was dead",
    "I just want to die",
    "I can't go on like this",
    "I'm thinking about an overdose",
    # both: the crisis answer also says to call 911
    "I want to kill myself and I can't feel my legs",
]
# Red flags an earlier version of the patterns missed.
FORMERLY_MISSED_RED_FLAGS = [
    ("I'm having trouble breathing", "emergency"),
    ("I can barely breathe", "emergency"),
    ("I lost feeling in my legs", "emergency"),
    ("I have no feeling in my private area", "emergency"),
    ("both my legs feel weak", "emergency"),
    ("I was rear-ended on the freeway this morning", "emergency"),
    ("I slipped on ice and landed hard on my back", "emergency"),
    ("I took a bad spill off my roof", "emergency"),
    ("I feel like ending it all", "crisis"),
    ("I'm thinking about ending my life", "crisis"),
    ("I've been cutting myself", "crisis"),
    ("I've thought about taking my own life", "crisis"),
    ("I'd rather be dead", "crisis"),
    ("I'm going to take all my pills", "crisis"),
    # missed by the patterns in 2026-11-26's new training examples
    ("tight crushing feeling in my chest", "emergency"),
    ("I've had accidents with my bowels since yesterday", "emergency"),
    ("my bladder stopped working this morning", "emergency"),
    ("my legs are getting weaker and weaker", "emergency"),
    ("I can't feel anything in my groin", "emergency"),
    ("wrecked my car and my back's killing me", "emergency"),
    ("I've been saving up pills to end it", "crisis"),
    ("i don't wanna be here no more", "crisis"),
    ("everyone'd be better off if i was gone", "crisis"),
    ("no point going on anymore", "crisis"),
    ("been having thoughts of hurting myself", "crisis"),
]
ORDINARY = [
    "my back hurts, will injections help",
    "how long until the shot works",
    "is it normal to be sore for a few days",
    "what is dry needling",
    "I have back spasms after lifting boxes",
    "can I go to work after the injection",
    "my lower back has been tight for a week",
    "does the injection hurt",
    "I pulled a muscle at the gym and it keeps spasming",
    "can I drive home after the shot",
    "I bent down to tie my shoe and my back locked up",
    "can I go down the stairs after the injection",
    "this spasm is killing me",
    "I'm dying to know if dry needling works",
    "my leg feels tight after sitting all day",
    "I cannot control the spasms",
    "will the numbing medicine make my back feel weird",
    "do you take Medicare",
    "how soon will my legs feel less tight",
    "I'm saving up for the injection",
    "is it better to book a morning slot",
    "the shot made my chest feel warm for a minute",
    "I sit at a desk all day and my back is stiff",
    "can I take a hot bath after the injection",
]
# Ordinary messages an earlier version of the patterns flagged.
FORMER_FALSE_ALARMS = [
    "I hurt myself lifting a couch",
    "I hurt myself at the gym yesterday",
    "no fever, just back pain",
]
# Deliberately conservative: any mention of a fever gets emergency guidance, even a
# past one, because the patterns cannot tell when it was.
ACCEPTED_FALSE_ALARMS = [
    ("I had a fever last year, can I still get the injection", "emergency"),
]


@pytest.mark.parametrize("text", EMERGENCIES)
def test_emergency_red_flags_are_detected(text: str) -> None:
    assert match_red_flag(text) == "emergency"


@pytest.mark.parametrize("text", CRISES)
def test_crisis_red_flags_are_detected(text: str) -> None:
    assert match_red_flag(text) == "crisis"


@pytest.mark.parametrize(
    ("text", "expected"), FORMERLY_MISSED_RED_FLAGS + ACCEPTED_FALSE_ALARMS
)
def test_formerly_missed_red_flags_are_detected(text: str, expected: str) -> None:
    assert match_red_flag(text) == expected


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_messages_raise_no_red_flag(text: str) -> None:
    assert match_red_flag(text) is None


@pytest.mark.parametrize("text", FORMER_FALSE_ALARMS)
def test_former_false_alarms_raise_no_red_flag(text: str) -> None:
    assert match_red_flag(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("I LOST CONTROL OF MY BLADDER", "emergency", id="upper-case"),
        pytest.param("I can\u2019t pee", "emergency", id="curly-apostrophe"),
        pytest.param("my back hurts", None, id="no-flag"),
    ],
)
def test_red_flag_matching_ignores_case_and_curly_apostrophes(
    text: str, expected: Optional[str]
) -> None:
    assert match_red_flag(text) == expected


def _labelled_examples() -> List[Tuple[str, str]]:
    return [*training_examples(), *nlu_examples(HELDOUT_FILE)]


def test_red_flag_examples_never_get_the_other_red_flag() -> None:
    # The patterns are a safety net behind the classifier: they need not catch every
    # phrasing, but must never answer an emergency with the crisis line or vice versa.
    examples = [
        (intent, text)
        for intent, text in _labelled_examples()
        if intent in ("emergency", "crisis")
    ]
    assert len(examples) > 40
    wrong = [
        (intent, text)
        for intent, text in examples
        if match_red_flag(text) not in (intent, None)
    ]
    assert wrong == []


def test_no_ordinary_example_raises_a_red_flag() -> None:
    # A pattern firing on a training or held-out example of another intent would
    # hide that intent's answer for good.
    examples = [
        (intent, text)
        for intent, text in _labelled_examples()
        if intent not in ("emergency", "crisis")
    ]
    assert len(examples) > 500
    flagged = [
        (intent, text, match_red_flag(text))
        for intent, text in examples
        if match_red_flag(text)
    ]
    assert flagged == []


# --- RedFlagDetector ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent_ranking", "expected"),
    [
        pytest.param(
            "my groin is numb and my back aches",
            [("faq", 0.8), ("emergency", 0.1)],
            "emergency",
            id="faq-to-emergency",
        ),
        pytest.param(
            "I'm suicidal because of this pain",
            [("ask_other_condition", 0.6)],
            "crisis",
            id="other-to-crisis",
        ),
        pytest.param(
            "I have chest pain",
            [("nlu_fallback", 0.3), ("faq", 0.3)],
            "emergency",
            id="fallback-to-emergency",
        ),
    ],
)
def test_red_flag_overrides_the_prediction(
    text: str, intent_ranking: List[Tuple[str, float]], expected: str, tmp_path: Path
) -> None:
    message = parsed(text, intent_ranking, [("what_is_spasm", 0.9)])
    previous = [name for name, _ in intent_ranking if name != expected]

    create(RedFlagDetector, tmp_path).process([message])

    assert intent_of(message) == (expected, 1.0)
    assert ranking_names(message) == [expected, *previous]
    assert message.get(ENTITIES) == [language_entity("en", text)]


def language_entity(language: str, text: str) -> Dict[str, Any]:
    """The entity that RedFlagDetector adds to a red-flag message."""
    return {
        "entity": "red_flag_language",
        "value": language,
        "start": 0,
        "end": len(text),
        "extractor": "RedFlagDetector",
    }


@pytest.mark.parametrize(
    ("text", "intent_ranking"),
    [
        pytest.param("I have chest pain", [("emergency", 0.7)], id="already-emergency"),
        pytest.param("I want to die", [("crisis", 0.9)], id="already-crisis"),
        pytest.param(
            "the pain is unbearable", [("emergency", 0.6)], id="classifier-only"
        ),
    ],
)
def test_red_flag_detector_keeps_a_red_flag_prediction_and_adds_english(
    text: str, intent_ranking: List[Tuple[str, float]], tmp_path: Path
) -> None:
    message = parsed(text, intent_ranking)
    before = copy.deepcopy(message.data)

    create(RedFlagDetector, tmp_path).process([message])

    assert message.get(ENTITIES) == [language_entity("en", text)]
    del message.data[ENTITIES]
    assert message.data == before


def test_red_flag_detector_replaces_an_earlier_language_entity(tmp_path: Path) -> None:
    chosen_topic = {"entity": "faq_topic", "value": "what_is_spasm"}
    stale = language_entity("es", "x")
    message = parsed("I can't breathe", [("emergency", 0.9)])
    message.set(ENTITIES, [chosen_topic, stale])

    create(RedFlagDetector, tmp_path).process([message])

    assert message.get(ENTITIES) == [
        chosen_topic,
        language_entity("en", "I can't breathe"),
    ]


@pytest.mark.parametrize(
    ("text", "intent_ranking"),
    [
        pytest.param("what is dry needling", [("faq", 0.9)], id="no-red-flag"),
        pytest.param("back spasm", [("nlu_fallback", 0.4)], id="fallback-no-red-flag"),
    ],
)
def test_red_flag_detector_leaves_other_messages_alone(
    text: str, intent_ranking: List[Tuple[str, float]], tmp_path: Path
) -> None:
    message = parsed(text, intent_ranking)
    before = copy.deepcopy(message.data)

    create(RedFlagDetector, tmp_path).process([message, Message(data={INTENT: {}})])

    assert message.data == before


def test_crisis_phrase_wins_over_an_emergency_prediction(tmp_path: Path) -> None:
    message = parsed(
        "I want to kill myself and I can't feel my legs", [("emergency", 0.8)]
    )

    create(RedFlagDetector, tmp_path).process([message])

    assert intent_of(message)[0] == "crisis"


# --- the pipeline in config.yml ------------------------------------------------------


def test_pipeline_runs_the_safety_components_last() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "config.yml").read_text(encoding="utf-8"))
    names = [component["name"] for component in config["pipeline"]]

    assert names[0] == "clinic_nlu.components.TextCleaner"
    assert names[-1] == "clinic_nlu.components.RedFlagDetector"
    classifier = "clinic_nlu.classifier.LinearIntentClassifier"
    assert names.index("clinic_nlu.components.FaqConfidenceGate") > names.index(
        classifier
    )
    gate = next(
        c for c in config["pipeline"] if c["name"].endswith("FaqConfidenceGate")
    )
    # The classifier names the response selection after the retrieval intent.
    assert gate["retrieval_intent"] == "faq"
