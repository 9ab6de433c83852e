"""spaCy's DATE/TIME/PERSON hints for the booking actions (clinic_nlu/entities.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message

from clinic_nlu.entities import SPACY_ENTITIES_KEY, SpacyEntityTagger, may_hold_entity


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> SpacyEntityTagger:
    created = SpacyEntityTagger.create(
        SpacyEntityTagger.get_default_config(),
        LocalModelStorage(tmp_path_factory.mktemp("model")),
        Resource("spacy"),
        ExecutionContext(GraphSchema({}), "test"),
    )
    assert isinstance(created, SpacyEntityTagger)
    return created


def hints(tagger: SpacyEntityTagger, text: str) -> list[tuple[str, str]]:
    message = Message(data={TEXT: text})
    tagger.process([message])
    assert message.get(ENTITIES) in (None, [])  # kept apart from Rasa's entities
    return [(e["entity"], e["value"]) for e in message.get(SPACY_ENTITIES_KEY) or []]


def test_dates_times_and_names_are_found(tagger: SpacyEntityTagger) -> None:
    assert hints(tagger, "tomorrow at 3pm, Maria Lopez") == [
        ("DATE", "tomorrow"),
        ("TIME", "3pm"),
        ("PERSON", "Maria Lopez"),
    ]


def test_spans_point_into_the_text(tagger: SpacyEntityTagger) -> None:
    message = Message(data={TEXT: "could we do next tuesday afternoon"})
    tagger.process([message])
    for entity in message.get(SPACY_ENTITIES_KEY):
        assert message.get(TEXT)[entity["start"] : entity["end"]] == entity["value"]


def test_other_labels_are_left_out(tagger: SpacyEntityTagger) -> None:
    labels = {label for label, _ in hints(tagger, "I paid $200 in Texas on Monday")}
    assert labels <= {"DATE", "TIME", "PERSON"}
    assert "DATE" in labels


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_gets_no_hints(tagger: SpacyEntityTagger, text: str) -> None:
    assert hints(tagger, text) == []


def test_the_component_needs_no_training(tmp_path: Path) -> None:
    message = Message(data={"intent": "greet"})  # no text at all
    SpacyEntityTagger({"dimensions": ["DATE"]}).process([message])
    assert message.get(SPACY_ENTITIES_KEY) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is a back spasm", False),
        ("how soon will the shot work", False),
        ("does dry needling hurt", False),
        ("what is the best approach to take", False),
        ("tomorrow at 3", True),
        ("could we do next tuesday afternoon", True),
        ("friday morning please", True),
        ("the 14th", True),
        ("march 10", True),
        ("my name is Maria Lopez", True),
        ("817-555-0100", True),
        ("asap", True),
    ],
)
def test_ner_runs_only_where_it_may_find_something(text: str, expected: bool) -> None:
    assert may_hold_entity(text) is expected


def test_a_plain_question_skips_ner(
    tagger: SpacyEntityTagger, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = tagger._nlp
    monkeypatch.setattr(tagger, "_nlp", lambda text: calls.append(text) or real(text))
    assert hints(tagger, "what is a back spasm") == []
    assert calls == []
    assert hints(tagger, "friday at 10") == [("DATE", "friday")]
    assert calls == ["friday at 10"]
