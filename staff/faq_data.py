"""Reading and editing the FAQ: examples, answers and button titles.

A topic lives in three files: its examples under ``faq/<topic>`` in ``data/nlu/``,
its answer ``utter_faq/<topic>`` in ``data/responses/faq.yml`` and its "Did you mean"
button title in ``actions/faq_titles.yml``. Each edit checks everything first and
either writes all it has to or nothing (``Refused`` says why, in plain language).

The files are edited with ruamel.yaml's round-trip mode, so their comments, order
and quoting stay as the engineers wrote them; each file is replaced atomically, and
edits are serialised with a lock file so two staff members cannot lose each other's.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from staff import content_rules, history
from staff.project import RETRIEVAL_INTENT, Project

# tests/test_data.py asks every topic for this many examples.
SUITE_MIN_EXAMPLES = 15
_PREFIX = f"{RETRIEVAL_INTENT}/"
_RESPONSE_PREFIX = f"utter_{RETRIEVAL_INTENT}/"


class Refused(Exception):
    """An edit that was not made, with every reason why (one sentence each)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("\n".join(reasons))
        self.reasons = list(reasons)


@dataclass(frozen=True)
class Answer:
    """One variation of a topic's answer."""

    text: str
    condition: str = ""  # e.g. "clinic_facts_loaded = True"; empty: always


@dataclass(frozen=True)
class Topic:
    """An FAQ topic as the three files describe it."""

    name: str
    title: Optional[str]
    answers: Tuple[Answer, ...]
    examples: Tuple[str, ...]


@dataclass
class EditResult:
    """What an edit wrote, and what staff should know about it."""

    written: List[Path] = field(default_factory=list)
    added: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class KnownText:
    """Where a text already is: an intent or topic, or a test set."""

    label: str
    path: Path


# --- reading ---------------------------------------------------------------------


def _safe_load(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)


def _lines(examples: Any) -> List[str]:
    """The examples of a Rasa ``examples: |`` block."""
    texts = []
    for line in str(examples or "").splitlines():
        line = line.strip()
        if line.startswith("- "):
            texts.append(line[2:].strip())
    return texts


def nlu_blocks(path: Path) -> List[Tuple[str, List[str]]]:
    """(intent, examples) of each intent block of a Rasa NLU file."""
    document = _safe_load(path) or {}
    return [
        (str(block["intent"]), _lines(block.get("examples")))
        for block in document.get("nlu") or []
        if isinstance(block, dict) and "intent" in block
    ]


def _story_messages(path: Path) -> List[str]:
    document = _safe_load(path) or {}
    return [
        str(step["user"]).strip()
        for story in document.get("stories") or []
        for step in story.get("steps") or []
        if isinstance(step, dict) and "user" in step
    ]


def known_texts(project: Project) -> Dict[str, List[KnownText]]:
    """Every training example and test message, by normalised text.

    Training examples are labelled with their intent (``faq/<topic>`` for FAQ
    questions); test messages with the test set they belong to, because training on
    one would make that test meaningless.
    """
    known: Dict[str, List[KnownText]] = {}

    def add(text: str, label: str, path: Path) -> None:
        known.setdefault(content_rules.normalise(text), []).append(
            KnownText(label, path)
        )

    for path in sorted(project.nlu_dir.glob("*.yml")):
        for intent, examples in nlu_blocks(path):
            for text in examples:
                add(text, intent, path)
    test_sets = [(project.heldout, "the held-out test set")] + [
        (path, "the validation set the thresholds are tuned on")
        for path in project.validation_sets
    ]
    for path, label in test_sets:
        if path.is_file():
            for _, examples in nlu_blocks(path):
                for text in examples:
                    add(text, label, path)
    for folder in project.story_dirs:
        for path in sorted(folder.glob("*.yml")):
            for text in _story_messages(path):
                add(text, "a conversation test", path)
    return known


def _titles(project: Project) -> Dict[str, str]:
    if not project.faq_titles.is_file():
        return {}
    document = _safe_load(project.faq_titles) or {}
    return {str(topic): str(title) for topic, title in document.items()}


def _condition(variation: Mapping[str, Any]) -> str:
    parts = [
        f"{item.get('name')} = {item.get('value')}"
        for item in variation.get("condition") or []
    ]
    return ", ".join(parts)


def list_topics(project: Project) -> List[Topic]:
    """Every FAQ topic, in the order of the answers file."""
    responses = (_safe_load(project.faq_responses) or {}).get("responses") or {}
    examples: Dict[str, List[str]] = {}
    for path in sorted(project.nlu_dir.glob("*.yml")):
        for intent, texts in nlu_blocks(path):
            if intent.startswith(_PREFIX):
                examples.setdefault(intent[len(_PREFIX) :], []).extend(texts)
    titles = _titles(project)
    names = [name[len(_RESPONSE_PREFIX) :] for name in responses]
    names += [name for name in examples if f"{_RESPONSE_PREFIX}{name}" not in responses]
    return [
        Topic(
            name=name,
            title=titles.get(name),
            answers=tuple(
                Answer(str(variation.get("text") or ""), _condition(variation))
                for variation in responses.get(f"{_RESPONSE_PREFIX}{name}") or []
            ),
            examples=tuple(examples.get(name, [])),
        )
        for name in names
    ]


def get_topic(project: Project, name: str) -> Topic:
    """The topic called ``name``; ``Refused`` (with close matches) if unknown."""
    topics = {topic.name: topic for topic in list_topics(project)}
    if name in topics:
        return topics[name]
    close = difflib.get_close_matches(name, list(topics), n=3, cutoff=0.5)
    hint = (
        f" Did you mean {' or '.join(close)}?"
        if close
        else " See them with: clinicbot faq list"
    )
    raise Refused([f"There is no FAQ topic called '{name}'.{hint}"])


# --- checking --------------------------------------------------------------------


def _relative(project: Project, path: Path) -> str:
    try:
        return str(path.relative_to(project.root))
    except ValueError:
        return str(path)


def check_examples(
    project: Project, topic: str, texts: Sequence[str]
) -> Tuple[List[str], List[str]]:
    """Cleans the examples for ``topic`` and says what is wrong with them.

    Returns the cleaned examples and the problems; nothing may be written unless the
    problems are empty. An example is refused when it is malformed, already an
    example of any intent or topic (the model cannot learn one text two ways, and a
    second copy under the same topic adds nothing), in a test set, or given twice.
    """
    if not texts:
        return [], ["Give at least one example."]
    label = f"{_PREFIX}{topic}"
    known = known_texts(project)
    cleaned: List[str] = []
    problems: List[str] = []
    seen: Dict[str, str] = {}
    for text in texts:
        found = content_rules.example_problems(text)
        if found:
            problems.extend(found)
            continue
        example = content_rules.clean_example(text)
        key = content_rules.normalise(example)
        if key in seen:
            problems.append(f"{example!r} is given twice (as {seen[key]!r}).")
            continue
        seen[key] = example
        for place in known.get(key, []):
            where = _relative(project, place.path)
            if place.label == label:
                problems.append(f"{example!r} is already an example of {label}.")
            elif place.path.parent == project.nlu_dir:
                problems.append(
                    f"{example!r} is already an example of {place.label} ({where}); "
                    "one text cannot teach the model two answers."
                )
            else:
                problems.append(
                    f"{example!r} is in {place.label} ({where}); training on it "
                    "would make that test meaningless. Use another phrasing."
                )
            break
        cleaned.append(example)
    return cleaned, problems


def _suite_note(topic: str, count: int) -> List[str]:
    if count >= SUITE_MIN_EXAMPLES:
        return []
    return [
        f"faq/{topic} has {count} examples; the test suite (make test) asks for "
        f"{SUITE_MIN_EXAMPLES}. Add {SUITE_MIN_EXAMPLES - count} more when you can."
    ]


def _answer_notes(answer: str) -> List[str]:
    if len(answer) <= content_rules.SMS_FAQ_ANSWER:
        return []
    return [
        f"The answer has {len(answer)} characters: more than two text messages "
        f"(about {content_rules.SMS_FAQ_ANSWER}). Shorter is better for SMS."
    ]


# --- writing ---------------------------------------------------------------------


def _round_trip() -> YAML:
    """ruamel.yaml set up to write the data files back exactly as they are styled."""
    handler = YAML()
    # ruamel.yaml 0.17 annotates these attributes as None.
    handler.preserve_quotes = True  # type: ignore[assignment]
    handler.width = 4096  # type: ignore[assignment]  # never re-wrap long answers
    handler.indent(mapping=2, sequence=2, offset=0)
    return handler


def _load_rt(path: Path) -> Any:
    return _round_trip().load(path.read_text(encoding="utf-8"))


def _dump_rt(document: Any) -> str:
    out = io.StringIO()
    _round_trip().dump(document, out)
    return out.getvalue()


@contextlib.contextmanager
def edit_lock(project: Project) -> Iterator[None]:
    """Serialises edits of the data files: read, check and write as one step."""
    project.models_dir.mkdir(parents=True, exist_ok=True)
    with open(project.models_dir / ".faq-edit.lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_all(changes: Mapping[Path, str]) -> List[Path]:
    """Replaces each file atomically, after checking every new text is valid YAML."""
    for text in changes.values():
        yaml.safe_load(text)  # a YAMLError here leaves every file untouched
    staged: List[Tuple[Path, str]] = []
    try:
        for path, text in changes.items():
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temporary, mode)
            staged.append((path, temporary))
        for path, temporary in staged:
            os.replace(temporary, path)
    finally:
        for _, temporary in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return list(changes)


def _nlu_file_of(project: Project, topic: str) -> Path:
    label = f"{_PREFIX}{topic}"
    for path in sorted(project.nlu_dir.glob("*.yml")):
        if any(intent == label for intent, _ in nlu_blocks(path)):
            return path
    return project.faq_nlu


def _append_examples(document: Any, label: str, examples: Sequence[str]) -> bool:
    """Appends to the ``label`` block of a round-trip NLU document; False if none."""
    for block in document.get("nlu") or []:
        if block.get("intent") == label:
            lines = str(block.get("examples") or "").rstrip("\n")
            lines += "".join(f"\n- {example}" for example in examples)
            block["examples"] = LiteralScalarString(lines.lstrip("\n") + "\n")
            return True
    return False


def add_examples(project: Project, topic: str, texts: Sequence[str]) -> EditResult:
    """Adds training examples to an existing topic (all of them, or none)."""
    with edit_lock(project):
        current = get_topic(project, topic)
        examples, problems = check_examples(project, topic, texts)
        if problems:
            raise Refused(problems)
        path = _nlu_file_of(project, topic)
        document = _load_rt(path)
        if not _append_examples(document, f"{_PREFIX}{topic}", examples):
            raise Refused([f"faq/{topic} has no examples block in {path.name} yet."])
        written = _write_all({path: _dump_rt(document)})
    count = len(current.examples) + len(examples)
    return EditResult(written, examples, _suite_note(topic, count))


def new_topic(
    project: Project, topic: str, title: str, answer: str, texts: Sequence[str]
) -> EditResult:
    """Creates a topic: examples, answer and button title, in their three files."""
    with edit_lock(project):
        problems = content_rules.topic_name_problems(topic)
        if not problems and topic in {t.name for t in list_topics(project)}:
            problems.append(
                f"The topic '{topic}' already exists. Add examples with "
                f"'clinicbot faq add-example {topic} ...' or change its answer with "
                f"'clinicbot faq set-answer {topic} ...'."
            )
        problems += content_rules.title_problems(title)
        problems += content_rules.answer_problems(answer)
        examples, example_problems = check_examples(project, topic, texts)
        problems += example_problems
        if len(texts) < content_rules.MIN_NEW_TOPIC_EXAMPLES:
            problems.append(
                f"A new topic needs at least {content_rules.MIN_NEW_TOPIC_EXAMPLES} "
                f"examples (you gave {len(texts)}): ways patients might ask it, "
                "each with --example."
            )
        if problems:
            raise Refused(problems)

        nlu = _load_rt(project.faq_nlu)
        block = CommentedMap()
        block["intent"] = f"{_PREFIX}{topic}"
        block["examples"] = LiteralScalarString("".join(f"- {e}\n" for e in examples))
        nlu["nlu"].append(block)
        nlu["nlu"].yaml_set_comment_before_after_key(len(nlu["nlu"]) - 1, before="\n")

        responses = _load_rt(project.faq_responses)
        variation = CommentedMap()
        variation["text"] = DoubleQuotedScalarString(answer)
        responses["responses"][f"{_RESPONSE_PREFIX}{topic}"] = CommentedSeq([variation])

        if project.faq_titles.is_file():
            titles = _load_rt(project.faq_titles) or CommentedMap()
        else:
            titles = CommentedMap()
        titles[topic] = title

        written = _write_all(
            {
                project.faq_nlu: _dump_rt(nlu),
                project.faq_responses: _dump_rt(responses),
                project.faq_titles: _dump_rt(titles),
            }
        )
    notes = _suite_note(topic, len(examples)) + _answer_notes(answer)
    notes.append(
        "Add a conversation test for it in tests/stories/ (make test checks every "
        "topic has one), with a phrasing that is not an example."
    )
    return EditResult(written, examples, notes)


def set_answer(project: Project, topic: str, answer: str) -> EditResult:
    """Replaces a topic's answer."""
    with edit_lock(project):
        current = get_topic(project, topic)
        if len(current.answers) != 1 or current.answers[0].condition:
            raise Refused(
                [
                    f"The answer to {topic} has {len(current.answers)} versions that "
                    "depend on clinic.yml; change clinic.yml, or ask an engineer to "
                    "edit data/responses/faq.yml."
                ]
            )
        problems = content_rules.answer_problems(answer)
        if problems:
            raise Refused(problems)
        responses = _load_rt(project.faq_responses)
        variations = responses["responses"][f"{_RESPONSE_PREFIX}{topic}"]
        variations[0]["text"] = DoubleQuotedScalarString(answer)
        if current.answers[0].text != answer:
            history.remember_answer(project.models_dir, topic, current.answers[0].text)
        written = _write_all({project.faq_responses: _dump_rt(responses)})
    return EditResult(written, [], _answer_notes(answer))


def remove_example(project: Project, topic: str, text: str) -> EditResult:
    """Removes one training example from a topic (e.g. to undo an edit)."""
    with edit_lock(project):
        current = get_topic(project, topic)
        key = content_rules.normalise(text)
        if key not in {
            content_rules.normalise(example) for example in current.examples
        }:
            raise Refused([f"{text!r} is not an example of faq/{topic}."])
        if len(current.examples) == 1:
            raise Refused(
                [f"{text!r} is the last example of faq/{topic}; a topic needs one."]
            )
        path = _nlu_file_of(project, topic)
        document = _load_rt(path)
        for block in document.get("nlu") or []:
            if block.get("intent") == f"{_PREFIX}{topic}":
                kept = [
                    line
                    for line in str(block.get("examples") or "").splitlines()
                    if not line.strip().startswith("- ")
                    or content_rules.normalise(line.strip()[2:].strip()) != key
                ]
                block["examples"] = LiteralScalarString("\n".join(kept) + "\n")
        written = _write_all({path: _dump_rt(document)})
    return EditResult(written, [], _suite_note(topic, len(current.examples) - 1))


def earlier_answers(project: Project, name: str) -> List[Dict[str, str]]:
    """Answers ``name`` had before and could get back, newest first.

    Each is ``{"at": when it was replaced, "text": ...}``; the current answer is not
    among them, and a topic whose answer depends on clinic.yml has none to restore.
    """
    topic = get_topic(project, name)
    if len(topic.answers) != 1 or topic.answers[0].condition:
        return []
    current = topic.answers[0].text
    return [
        entry
        for entry in history.earlier_answers(project.models_dir, name)
        if entry.get("text") != current
    ]


def restore_answer(project: Project, topic: str, text: str) -> EditResult:
    """Makes an earlier answer of ``topic`` (see :func:`earlier_answers`) its answer.

    The same checks as a new answer; ``Refused`` if ``text`` is not an earlier one.
    """
    if text not in {entry["text"] for entry in earlier_answers(project, topic)}:
        raise Refused([f"That is not an earlier answer of faq/{topic}."])
    return set_answer(project, topic, text)


def data_problems(project: Project) -> List[str]:
    """Content-rule problems anywhere in the FAQ, e.g. after a hand edit.

    ``clinicbot retrain`` runs this next to ``rasa data validate``: Rasa checks the
    structure, this checks what the rules of ``staff.content_rules`` ask for.
    """
    problems: List[str] = []
    for topic in list_topics(project):
        if not topic.answers:
            problems.append(f"faq/{topic.name} has examples but no answer.")
        if not topic.examples:
            problems.append(f"faq/{topic.name} has an answer but no examples.")
        if topic.title is None:
            problems.append(f"faq/{topic.name} has no button title.")
        for answer in topic.answers:
            if answer.condition:
                continue  # filled in from clinic.yml: checked by tests/test_data.py
            problems.extend(
                f"faq/{topic.name}: {problem}"
                for problem in content_rules.answer_problems(answer.text)
            )
    return problems
