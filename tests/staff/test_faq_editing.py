"""Editing the FAQ through staff.faq_data, on a temporary copy of the data files."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Callable, List

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.nlu.constants import INTENT_RESPONSE_KEY, TEXT
from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader
from staffkit import comment_lines, copy_project, snapshot

from actions.faq import faq_topic_titles
from staff import faq_data, history
from staff.faq_data import Refused
from staff.project import Project

NEW_EXAMPLES = [
    "where do i park",
    "is there parking at your building",
    "can I leave my car in your lot",
    "parking near the office?",
    "is the parking free",
]
NEW_ANSWER = "There is parking right outside the building, with accessible spaces."


@pytest.fixture
def project(tmp_path: Path) -> Project:
    copy = copy_project(tmp_path / "project")
    # data/nlu/faq.yml has no comments today: give it some, in every kind of place.
    text = copy.faq_nlu.read_text(encoding="utf-8")
    text = text.replace(
        "nlu:\n", "# Staff edit this file with scripts/clinicbot.\nnlu:\n"
    )
    text = text.replace(
        "- intent: faq/dry_needling\n",
        "# Dry needling: no medication.\n- intent: faq/dry_needling  # keep\n",
    )
    copy.faq_nlu.write_text(text + "# the end\n", encoding="utf-8")
    return copy


def added_lines(before: str, after: str) -> List[str]:
    return [
        line[1:]
        for line in difflib.ndiff(before.splitlines(), after.splitlines())
        if line.startswith("+ ")
    ]


def removed_lines(before: str, after: str) -> List[str]:
    return [
        line[2:]
        for line in difflib.ndiff(before.splitlines(), after.splitlines())
        if line.startswith("- ")
    ]


def rasa_examples(path: Path, label: str) -> List[str]:
    """The examples Rasa itself reads for ``label`` (``faq/<topic>``)."""
    data = RasaYAMLReader().read(str(path))
    return [
        message.get(TEXT)
        for message in data.training_examples
        if message.get(INTENT_RESPONSE_KEY) == label
    ]


# --- what an edit writes --------------------------------------------------------


def test_add_example_appends_lines_and_changes_nothing_else(project: Project) -> None:
    before = project.faq_nlu.read_text(encoding="utf-8")
    comments = comment_lines(project.faq_nlu)
    others = snapshot(project)

    result = faq_data.add_examples(
        project, "dry_needling", ["  Can I have the needle  without any meds? "]
    )

    after = project.faq_nlu.read_text(encoding="utf-8")
    assert result.added == ["Can I have the needle without any meds?"]
    assert added_lines(before, after) == [
        "     - Can I have the needle without any meds?"
    ]
    assert removed_lines(before, after) == []
    assert len(comments) == 3 and comment_lines(project.faq_nlu) == comments
    assert "- intent: faq/dry_needling  # keep" in after
    changed = {k for k, v in snapshot(project).items() if others.get(k) != v}
    assert changed == {"data/nlu/faq.yml"}
    assert "Can I have the needle without any meds?" in rasa_examples(
        project.faq_nlu, "faq/dry_needling"
    )


def test_new_topic_writes_three_files_keeping_comments_and_order(
    project: Project,
) -> None:
    files = (project.faq_nlu, project.faq_responses, project.faq_titles)
    before = {path: path.read_text(encoding="utf-8") for path in files}
    comments = {path: comment_lines(path) for path in files}
    assert all(comments.values()), "the copies have comments to lose"
    old_topics = [topic.name for topic in faq_data.list_topics(project)]

    faq_data.new_topic(
        project, "parking_info", "Where can I park?", NEW_ANSWER, NEW_EXAMPLES
    )

    for path in files:
        after = path.read_text(encoding="utf-8")
        assert removed_lines(before[path], after) == [], path.name
        assert comment_lines(path) == comments[path], path.name
    assert [t.name for t in faq_data.list_topics(project)] == [
        *old_topics,
        "parking_info",
    ]
    assert rasa_examples(project.faq_nlu, "faq/parking_info") == NEW_EXAMPLES
    domain = Domain.load([str(project.domain), str(project.faq_responses)])
    assert domain.responses["utter_faq/parking_info"] == [{"text": NEW_ANSWER}]
    assert faq_topic_titles(project.faq_titles)["parking_info"] == "Where can I park?"
    # a blank line separates the new block, as between the others
    assert "\n\n- intent: faq/parking_info\n" in project.faq_nlu.read_text()


def test_set_answer_replaces_one_line_and_keeps_the_comments(
    project: Project,
) -> None:
    before = project.faq_responses.read_text(encoding="utf-8")
    new = 'Chiropractic care can fix "misalignments" in your spine.'

    faq_data.set_answer(project, "chiropractic_care", new)

    after = project.faq_responses.read_text(encoding="utf-8")
    assert added_lines(before, after) == [
        '   - text: "Chiropractic care can fix \\"misalignments\\" in your spine."'
    ]
    assert len(removed_lines(before, after)) == 1
    assert comment_lines(project.faq_responses) == [
        line for line in before.splitlines() if line.lstrip().startswith("#")
    ]
    topic = faq_data.get_topic(project, "chiropractic_care")
    assert [answer.text for answer in topic.answers] == [new]


def test_list_and_show_read_every_topic(project: Project) -> None:
    topics = {topic.name: topic for topic in faq_data.list_topics(project)}
    assert len(topics) == 12
    assert topics["dry_needling"].title == "Dry needling (no medication)"
    assert len(topics["dry_needling"].examples) >= 15
    location = topics["clinic_location"]
    assert [bool(answer.condition) for answer in location.answers] == [True, False]


def test_data_problems_finds_a_hand_edited_fact(project: Project) -> None:
    assert faq_data.data_problems(project) == []
    text = project.faq_responses.read_text(encoding="utf-8")
    project.faq_responses.write_text(
        text.replace("in the first place.", "in the first place. Only $40."),
        encoding="utf-8",
    )
    problems = faq_data.data_problems(project)
    assert len(problems) == 1 and "chiropractic_care" in problems[0]
    assert "price" in problems[0]


# --- refusals: a reason each, and nothing written ----------------------------------

Edit = Callable[[Project], object]


def add(*texts: str, topic: str = "dry_needling") -> Edit:
    return lambda project: faq_data.add_examples(project, topic, list(texts))


def new(
    topic: str = "parking_info",
    title: str = "Where can I park?",
    answer: str = NEW_ANSWER,
    examples: List[str] = NEW_EXAMPLES,
) -> Edit:
    return lambda project: faq_data.new_topic(project, topic, title, answer, examples)


def set_answer(answer: str, topic: str = "chiropractic_care") -> Edit:
    return lambda project: faq_data.set_answer(project, topic, answer)


REFUSALS = [
    # examples
    ("under another topic", add("is back pain common"), "faq/back_pain_prevalence"),
    ("under another intent", add("Hi there!"), "already an example of greet"),
    ("already in this topic", add("tell me about dry needling"), "already an"),
    (
        "in the held-out set",
        add("can u do the needle w nothing in it"),
        "held-out test set",
    ),
    (
        "in the validation set",
        add("is low back pain one of the most common things ppl see a doctor for"),
        "validation set",
    ),
    (
        "in a conversation test",
        add("what medication is actually in a trigger point shot"),
        "conversation test",
    ),
    ("given twice", add("needle, no meds", "Needle,  no meds!"), "given twice"),
    ("entity syntax", add("is [dry needling](treatment) ok"), "entity annotation"),
    ("a red flag", add("I can't feel my legs"), "red flag"),
    ("a command", add("/faq"), "button command"),
    ("no words", add("?!"), "no words"),
    ("several lines", add("one\ntwo"), "several lines"),
    ("no example", add(), "at least one example"),
    ("unknown topic", add("hello", topic="dry_needles"), "Did you mean dry_needling"),
    # answers
    ("empty answer", set_answer("  "), "empty"),
    ("answer too long", set_answer("a" * 601), "601 characters"),
    ("curly quote", set_answer("It\u2019s fine."), "cannot carry"),
    ("accented letter", set_answer("Cr\u00e8me"), "cannot carry"),
    ("a price", set_answer("It costs $90."), "price"),
    ("a phone number", set_answer("Call 817-555-0100."), "phone number"),
    ("office hours", set_answer("We open at 8am."), "time of day"),
    ("a placeholder", set_answer("We are {clinic_name}."), "placeholder"),
    ("conditioned answer", set_answer("Hi", topic="clinic_location"), "clinic.yml"),
    ("unknown topic's answer", set_answer("Hi", topic="parking"), "no FAQ topic"),
    # new topics
    ("name with capitals", new(topic="Parking"), "cannot be a topic name"),
    ("name with a dash", new(topic="parking-info"), "cannot be a topic name"),
    ("name too short", new(topic="pk"), "cannot be a topic name"),
    ("name starts with digit", new(topic="1parking"), "cannot be a topic name"),
    ("existing topic", new(topic="dry_needling"), "already exists"),
    ("four examples", new(examples=NEW_EXAMPLES[:4]), "at least 5"),
    ("empty title", new(title=""), "title is empty"),
    ("title too long", new(title="x" * 61), "61 characters"),
    ("answer with a fact", new(answer="Parking is $5."), "price"),
    ("duplicate example", new(examples=[*NEW_EXAMPLES, "hi"]), "greet"),
]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [(edit, reason) for _, edit, reason in REFUSALS],
    ids=[case for case, _, _ in REFUSALS],
)
def test_mistakes_are_refused_and_nothing_is_written(
    project: Project, edit: Edit, reason: str
) -> None:
    before = snapshot(project)

    with pytest.raises(Refused) as refused:
        edit(project)

    assert any(reason in line for line in refused.value.reasons), refused.value
    assert snapshot(project) == before


def test_one_bad_example_refuses_the_whole_batch(project: Project) -> None:
    before = snapshot(project)
    with pytest.raises(Refused) as refused:
        faq_data.add_examples(
            project, "dry_needling", ["needle without medicine ok?", "hi there"]
        )
    assert len(refused.value.reasons) == 1
    assert snapshot(project) == before


def test_every_problem_is_listed_at_once(project: Project) -> None:
    with pytest.raises(Refused) as refused:
        faq_data.new_topic(project, "Bad-Name", "", "Costs $5 \u2013 cash", ["hi"])
    text = "\n".join(refused.value.reasons)
    for expected in ("topic name", "title is empty", "cannot carry", "price", "greet"):
        assert expected in text


def test_remove_example_undoes_an_add_and_keeps_the_comments(
    project: Project,
) -> None:
    before = project.faq_nlu.read_text(encoding="utf-8")
    faq_data.add_examples(project, "dry_needling", ["does needling leave bruises"])

    faq_data.remove_example(project, "dry_needling", "does needling leave bruises")

    assert project.faq_nlu.read_text(encoding="utf-8") == before
    with pytest.raises(Refused) as refused:
        faq_data.remove_example(project, "dry_needling", "does needling leave bruises")
    assert refused.value.reasons == [
        "'does needling leave bruises' is not an example of faq/dry_needling."
    ]


def test_an_earlier_answer_can_be_restored(project: Project) -> None:
    before = project.faq_responses.read_text(encoding="utf-8")
    original = faq_data.get_topic(project, "chiropractic_care").answers[0].text
    faq_data.set_answer(project, "chiropractic_care", "A first new answer, short.")
    faq_data.set_answer(project, "chiropractic_care", "A second new answer, short.")

    earlier = history.earlier_answers(project.models_dir, "chiropractic_care")
    assert [entry["text"] for entry in earlier] == [
        "A first new answer, short.",
        original,
    ]
    faq_data.set_answer(project, "chiropractic_care", original)
    assert project.faq_responses.read_text(encoding="utf-8") == before
    earlier = history.earlier_answers(project.models_dir, "chiropractic_care")
    assert [entry["text"] for entry in earlier] == [
        "A second new answer, short.",
        "A first new answer, short.",
        original,  # the staff page hides the one that is live again
    ]
