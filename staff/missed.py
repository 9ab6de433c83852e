"""Patient messages the assistant missed, read from the tracker store.

A message counts as missed when its parse ended in ``nlu_fallback``, when it was
answered from the FAQ with low confidence, or when the next action was
``action_clarify`` ("Did you mean") or ``action_contact_staff`` (the patient asked
for a person), and when the model was sure the question is out of scope (the patient
read "Sorry, I can't help with that"): counted, those show which new topics a clinic
might add. These are the phrasings worth teaching the model.

Personal details never leave this module: e-mail addresses, phone numbers, booking
references and names (the conversation's own name slots, spaCy's PERSON hints and
"my name is ..." phrases) are masked, and nothing typed while a booking, look-up or
call-back form was open is listed at all, since those are answers to "what is your
name / phone / reference", not questions.

Messages are grouped by their masked, normalised text; a group's id is a hash of that
text, so it stays the same as new messages arrive. Staff decisions (dismissed, added
as an example) are kept in a small SQLite file under ``$STATE_DIR``, readable by its
owner only. Reads Rasa's SQLTrackerStore table ``events`` from a SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

import yaml

from clinic_nlu.text import clean_text
from staff import content_rules, faq_data
from staff.faq_data import EditResult, Refused
from staff.project import RETRIEVAL_INTENT, Project, Settings

REASONS = {
    "nlu_fallback": "not understood",
    "low_confidence": "unsure answer",
    "action_clarify": "did you mean",
    "action_contact_staff": "asked for staff",
    "out_of_scope": "out of scope",
}
# A confident out_of_scope parse is answered "Sorry, I can't help with that".
OUT_OF_SCOPE_INTENT = "out_of_scope"
# The slot holding the patient's name: masked wherever the conversation repeats it.
NAME_SLOTS = ("patient_name",)
# An FAQ answer within this much of the confidence gate's threshold was a near miss.
LOW_CONFIDENCE_MARGIN = 0.10
DEFAULT_LOW_CONFIDENCE = 0.85
REVIEW_DB = "staff.db"
MASK = re.compile(r"\[(email|phone|name|reference)\]")

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\(?\d[\d\s().-]{5,}\d")
_WORD6 = re.compile(r"\b[A-Za-z0-9]{6}\b")
# After "my name is": one or two words, in any case ("john smith"), unless the
# second starts the rest of the sentence.
_NAME_CUE = re.compile(
    r"(?i:\b(?:my name is|my name's|name's|the name is)\s+)"
    r"([A-Za-z][\w'-]*(?:\s+(?!(?i:and|but|or|so|i|im|i'm|can|could|would|do|"
    r"what|how|is|from|here|please|pls)\b)[A-Za-z][\w'-]*)?)"
)
_CAPITALISED_NAME_CUE = re.compile(
    r"(?i:\b(?:this is|i am|i'm|im|it's|its)\s+)([A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+)?)"
)


@dataclass
class Occurrence:
    """One missed message, already masked."""

    text: str
    timestamp: float
    conversation: str
    reasons: Set[str] = field(default_factory=set)
    guess: Optional[Tuple[str, float]] = None
    topic_guess: Optional[str] = None


@dataclass
class MissedGroup:
    """Missed messages with the same masked, normalised text."""

    id: str
    text: str
    count: int
    conversations: int
    last_seen: float
    reasons: List[str]
    guess: Optional[Tuple[str, float]]
    topic_guess: Optional[str] = (
        None  # the FAQ topic the response selector ranked first
    )

    @property
    def masked(self) -> bool:
        """Whether personal details were taken out of the text."""
        return bool(MASK.search(self.text))


# --- masking ---------------------------------------------------------------------


def _mask_phone(match: re.Match[str]) -> str:
    digits = sum(character.isdigit() for character in match.group())
    return "[phone]" if digits >= 7 else match.group()


def _mask_reference(match: re.Match[str]) -> str:
    word = match.group()
    has_digit = any(character.isdigit() for character in word)
    has_letter = any(character.isalpha() for character in word)
    looks_like_code = (has_digit and has_letter) or (word.isupper() and has_letter)
    return "[reference]" if looks_like_code else word


def mask_personal(text: str, names: Iterable[str] = ()) -> str:
    """The text with e-mails, phone numbers, references and names masked.

    ``names`` are names known from the conversation (its name slot, spaCy's PERSON
    hints): each is masked whole and word by word, wherever it appears. Masking too
    much is the safe side of this trade-off.
    """
    text = _EMAIL.sub("[email]", text)
    text = _PHONE.sub(_mask_phone, text)
    words: Set[str] = set()
    for name in names:
        words.add(name.strip())
        words.update(part for part in re.split(r"[\s,]+", name) if len(part) >= 3)
    for word in sorted(filter(None, words), key=len, reverse=True):
        text = re.sub(rf"(?i)\b{re.escape(word)}\b", "[name]", text)
    text = _NAME_CUE.sub(lambda m: m.group().replace(m.group(1), "[name]"), text)
    text = _CAPITALISED_NAME_CUE.sub(
        lambda m: m.group().replace(m.group(1), "[name]"), text
    )
    return _WORD6.sub(_mask_reference, text)


def group_id(text: str) -> str:
    """The id of a group: stable, short, from the masked normalised text."""
    key = content_rules.normalise(text)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


# --- reading the tracker store -------------------------------------------------------


def low_answer_confidence(project: Project) -> float:
    """Below this, an FAQ answer was a near miss: the gate's threshold plus a margin."""
    try:
        config = yaml.safe_load(project.config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return DEFAULT_LOW_CONFIDENCE
    for component in config.get("pipeline") or []:
        if str(component.get("name", "")).endswith("FaqConfidenceGate"):
            threshold = float(component.get("threshold", 0.5))
            return min(1.0, threshold + LOW_CONFIDENCE_MARGIN)
    return DEFAULT_LOW_CONFIDENCE


def _guess(parse: Dict[str, Any]) -> Optional[Tuple[str, float]]:
    """The model's best guess other than fallback: an intent or ``faq/<topic>``."""
    for entry in parse.get("intent_ranking") or []:
        name = entry.get("name")
        if not name or name == "nlu_fallback":
            continue
        if name == RETRIEVAL_INTENT:
            selection = (parse.get("response_selector") or {}).get(RETRIEVAL_INTENT)
            ranking = (selection or {}).get("ranking") or []
            if ranking:
                top = ranking[0]
                return str(top.get("intent_response_key")), float(top["confidence"])
        return str(name), float(entry.get("confidence") or 0.0)
    return None


def _topic_guess(parse: Dict[str, Any]) -> Optional[str]:
    """The FAQ topic the response selector ranked first, whatever the intent was."""
    selection = (parse.get("response_selector") or {}).get(RETRIEVAL_INTENT) or {}
    for entry in selection.get("ranking") or []:
        key = str(entry.get("intent_response_key") or "")
        if key.startswith(f"{RETRIEVAL_INTENT}/"):
            return key[len(RETRIEVAL_INTENT) + 1 :]
    return None


def _parse_reasons(parse: Dict[str, Any], low_confidence: float) -> Set[str]:
    intent = str((parse.get("intent") or {}).get("name") or "")
    if intent == "nlu_fallback":
        return {"nlu_fallback"}
    if intent == OUT_OF_SCOPE_INTENT:
        return {"out_of_scope"}
    if intent == RETRIEVAL_INTENT:
        selection = (parse.get("response_selector") or {}).get(RETRIEVAL_INTENT) or {}
        confidence = (selection.get("response") or {}).get("confidence")
        if confidence is not None and float(confidence) < low_confidence:
            return {"low_confidence"}
    return set()


def _person_hints(parse: Dict[str, Any]) -> List[str]:
    """The PERSON hints of spaCy that look like names (it also tags "woozy")."""
    values = [
        str(entity.get("value") or "")
        for entity in parse.get("spacy_entities") or []
        if entity.get("entity") == "PERSON"
    ]
    return [value for value in values if any(c.isupper() for c in value)]


Row = Tuple[str, str, float, Dict[str, Any]]


def _conversation_missed(
    rows: List[Row], since: float, low_confidence: float
) -> Iterator[Occurrence]:
    """The missed messages of one conversation, masked."""
    names: List[str] = []
    for _, kind, _, data in rows:
        if kind == "slot" and data.get("name") in NAME_SLOTS and data.get("value"):
            names.append(str(data["value"]))
        if kind == "user":
            names.extend(_person_hints(data.get("parse_data") or {}))

    conversation = hashlib.sha256(rows[0][0].encode("utf-8")).hexdigest()[:12]
    active_form: Optional[str] = None
    pending: Optional[Occurrence] = None
    for _, kind, timestamp, data in rows:
        if kind == "user":
            if pending and pending.reasons:
                yield pending
            pending = None
            text = clean_text(str(data.get("text") or ""), content_rules.MAX_EXAMPLE)
            if active_form or not text or text.startswith("/") or timestamp < since:
                continue
            parse = data.get("parse_data") or {}
            pending = Occurrence(
                text=mask_personal(text, names),
                timestamp=timestamp,
                conversation=conversation,
                reasons=_parse_reasons(parse, low_confidence),
                guess=_guess(parse),
                topic_guess=_topic_guess(parse),
            )
        elif kind == "action" and pending and data.get("name") in REASONS:
            pending.reasons.add(str(data["name"]))
        elif kind == "active_loop":
            active_form = data.get("name") or None
        elif kind in ("session_started", "restart"):
            active_form = None
    if pending and pending.reasons:
        yield pending


def read_missed(
    tracker_db: Path, since: float = 0.0, low_confidence: float = 0.85
) -> List[Occurrence]:
    """Every missed message since ``since`` (a Unix time) in a SQLite tracker store."""
    if not tracker_db.is_file():
        return []
    connection = sqlite3.connect(f"file:{tracker_db}?mode=ro", uri=True)
    try:
        cursor = connection.execute(
            "SELECT sender_id, type_name, timestamp, data FROM events "
            "WHERE sender_id IN (SELECT DISTINCT sender_id FROM events "
            "WHERE type_name = 'user' AND timestamp >= ?) "
            "ORDER BY sender_id, id",
            (since,),
        )
        found: List[Occurrence] = []
        rows: List[Row] = []
        for sender, kind, timestamp, data in cursor:
            if rows and rows[-1][0] != sender:
                found.extend(_conversation_missed(rows, since, low_confidence))
                rows = []
            rows.append((sender, kind, float(timestamp or 0.0), json.loads(data)))
        if rows:
            found.extend(_conversation_missed(rows, since, low_confidence))
        return found
    finally:
        connection.close()


def group(
    occurrences: Iterable[Occurrence],
    hidden: Optional[Set[str]] = None,
    known: Optional[Set[str]] = None,
) -> List[MissedGroup]:
    """Groups by normalised text, newest first.

    Groups whose id is in ``hidden`` (dealt with by staff) or whose normalised text
    is in ``known`` (already an example or test message) are left out.
    """
    hidden, known = hidden or set(), known or set()
    by_key: Dict[str, List[Occurrence]] = {}
    for occurrence in occurrences:
        key = content_rules.normalise(occurrence.text)
        by_key.setdefault(key, []).append(occurrence)
    groups = []
    for key, members in by_key.items():
        members.sort(key=lambda occurrence: occurrence.timestamp)
        latest = members[-1]
        identifier = group_id(latest.text)
        if identifier in hidden or key in known:
            continue
        reasons = {reason for member in members for reason in member.reasons}
        groups.append(
            MissedGroup(
                id=identifier,
                text=latest.text,
                count=len(members),
                conversations=len({member.conversation for member in members}),
                last_seen=latest.timestamp,
                reasons=[REASONS[reason] for reason in REASONS if reason in reasons],
                guess=latest.guess,
                topic_guess=latest.topic_guess,
            )
        )
    groups.sort(key=lambda item: item.last_seen, reverse=True)
    return groups


# --- staff decisions -----------------------------------------------------------------


class ReviewStore:
    """Which groups staff dismissed or added as examples (hidden from the list)."""

    def __init__(self, state_dir: Path) -> None:
        """Opens (or creates, readable by its owner only) ``$STATE_DIR/staff.db``."""
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = state_dir / REVIEW_DB
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(self.path, 0o600)
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS reviewed (id TEXT PRIMARY KEY, "
                "decision TEXT NOT NULL, topic TEXT, decided_at REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def hidden(self) -> Set[str]:
        """Ids of every group staff have dealt with."""
        connection = self._connect()
        try:
            return {row[0] for row in connection.execute("SELECT id FROM reviewed")}
        finally:
            connection.close()

    def record(self, identifier: str, decision: str, topic: Optional[str]) -> None:
        """Remembers a decision ("dismissed" or "added")."""
        connection = self._connect()
        try:
            with connection:
                connection.execute(
                    "INSERT OR REPLACE INTO reviewed VALUES (?, ?, ?, ?)",
                    (identifier, decision, topic, time.time()),
                )
        finally:
            connection.close()


def missed_messages(
    settings: Settings, since_days: Optional[float] = 30.0
) -> List[MissedGroup]:
    """The missed messages staff have not dealt with yet, newest first."""
    since = 0.0 if since_days is None else time.time() - since_days * 86400
    occurrences = read_missed(
        settings.tracker_db, since, low_answer_confidence(settings.project)
    )
    known = set(faq_data.known_texts(settings.project))
    return group(occurrences, ReviewStore(settings.state_dir).hidden(), known)


def find_group(settings: Settings, identifier: str) -> MissedGroup:
    """The group with this id (or unique id prefix), dealt with or not."""
    occurrences = read_missed(
        settings.tracker_db, 0.0, low_answer_confidence(settings.project)
    )
    if len(identifier) < 4:
        raise Refused(
            [f"Give the first 4 characters of the id at least: '{identifier}'."]
        )
    matches = [g for g in group(occurrences) if g.id.startswith(identifier.lower())]
    if len(matches) > 1:
        raise Refused(
            [f"'{identifier}' matches several messages; give the whole 8-character id."]
        )
    if not matches:
        raise Refused(
            [
                f"No missed message has the id '{identifier}'. "
                "List them with: clinicbot missed"
            ]
        )
    return matches[0]


def add_missed(settings: Settings, identifier: str, topic: str) -> EditResult:
    """Adds a missed message as an example of ``topic`` (same checks as add-example)."""
    missed = find_group(settings, identifier)
    if missed.masked:
        raise Refused(
            [
                f"The message {missed.text!r} had personal details taken out. Add a "
                f'phrasing without them: clinicbot faq add-example {topic} "..."'
            ]
        )
    result = faq_data.add_examples(settings.project, topic, [missed.text])
    ReviewStore(settings.state_dir).record(missed.id, "added", topic)
    return result


def dismiss_missed(settings: Settings, identifier: str) -> MissedGroup:
    """Hides a missed message from the list for good."""
    missed = find_group(settings, identifier)
    ReviewStore(settings.state_dir).record(missed.id, "dismissed", None)
    return missed
