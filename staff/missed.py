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
owner only.

Conversations are read from the store the Rasa server writes: the ``tracker_store``
of endpoints.yml (Rasa's ``SQLTrackerStore`` or a subclass, on SQLite or
PostgreSQL), its ``${VARIABLES}`` filled in from the environment as Rasa fills them,
through SQLAlchemy from Rasa's ``events`` table. A store that cannot be read (another
kind of store, a database that is down) is a :class:`TrackerStoreUnreadable` error
with the reason, never an empty inbox.
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
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
)

import sqlalchemy as sa
import yaml
from rasa.core.tracker_store import (
    SQLTrackerStore,
    create_engine_kwargs,
    validate_port,
)
from rasa.shared.utils.common import class_from_module_path

from clinic_common import sqlite
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


class TrackerStoreUnreadable(Exception):
    """The conversations cannot be read: staff see this instead of an empty inbox."""


_VARIABLE = re.compile(r"\$\{([^}]+)\}")
# The columns of Rasa's ``events`` table that the inbox reads (SQLTrackerStore).
EVENTS = sa.table(
    "events",
    sa.column("id"),
    sa.column("sender_id"),
    sa.column("type_name"),
    sa.column("timestamp"),
    sa.column("data"),
)


def _substituted(value: Any, environ: Mapping[str, str], source: str) -> Any:
    """``value`` with each ``${VAR}`` replaced as Rasa does when it reads ``source``."""
    if isinstance(value, dict):
        return {key: _substituted(item, environ, source) for key, item in value.items()}
    if not isinstance(value, str):
        return value

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise TrackerStoreUnreadable(
                f"{source} uses ${{{name}}} for the tracker store, and "
                f"{name} is not set."
            )
        return environ[name]

    return _VARIABLE.sub(variable, value)


def tracker_store_config(endpoints: Path, environ: Mapping[str, str]) -> Dict[str, Any]:
    """The ``tracker_store`` section of an endpoints file, its variables filled in.

    Raises:
        TrackerStoreUnreadable: no such file, or a store the inbox cannot read (only
            SQL stores keep conversations where it can read them).
    """
    try:
        config = yaml.safe_load(endpoints.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise TrackerStoreUnreadable(
            f"Cannot read the tracker store's settings in {endpoints}: {error}"
        ) from error
    section = config.get("tracker_store") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise TrackerStoreUnreadable(
            f"{endpoints} names no tracker store: Rasa keeps conversations in "
            "memory only, so there are no missed messages to read."
        )
    kind = str(section.get("type") or "")
    if not _is_sql_store(kind):
        raise TrackerStoreUnreadable(
            f"The tracker store in {endpoints} is {kind or 'in memory'!r}; the "
            "missed-messages inbox reads SQL stores only (SQLite, PostgreSQL)."
        )
    return dict(_substituted(section, environ, endpoints.name))


def _is_sql_store(kind: str) -> bool:
    if kind.lower() == "sql":  # Rasa reads the type in any case (scaled: SQL)
        return True
    if "." not in kind:
        return False
    try:
        store = class_from_module_path(kind)
    except (ImportError, AttributeError):
        return False
    return isinstance(store, type) and issubclass(store, SQLTrackerStore)


def tracker_store_engine(
    config: Dict[str, Any], root: Path
) -> Optional[sa.engine.Engine]:
    """An engine on the store Rasa's ``SQLTrackerStore`` would open with ``config``.

    None when the store is a SQLite file that does not exist yet (no conversation so
    far). A SQLite path is relative to ``root``, where the Rasa server runs.
    """
    dialect = str(config.get("dialect") or "sqlite")
    db = str(config.get("db") or "rasa.db")
    if dialect == "sqlite":
        path = root / db
        if not path.is_file():
            return None
        uri = f"file:{path}?mode=ro"  # read only: staff never change conversations
        return sa.create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True)
        )
    url = SQLTrackerStore.get_db_url(
        dialect,
        # Rasa passes the section's ``url`` as the host (deploy/scaled/endpoints.yml).
        config.get("url") or config.get("host"),
        validate_port(config.get("port")),
        db,
        config.get("username"),  # type: ignore[arg-type]
        config.get("password"),  # type: ignore[arg-type]
        None,  # login_db only serves to create ``db``, which the inbox reads
        config.get("query"),
    )
    return sa.create_engine(url, **create_engine_kwargs(url))


def _read_rows(
    engine: sa.engine.Engine, since: float
) -> Iterator[Tuple[str, str, float, str]]:
    """The events of every conversation with a message since ``since``, in order."""
    recent = (
        sa.select(EVENTS.c.sender_id)
        .where(EVENTS.c.type_name == "user", EVENTS.c.timestamp >= since)
        .distinct()
    )
    query = (
        sa.select(
            EVENTS.c.sender_id, EVENTS.c.type_name, EVENTS.c.timestamp, EVENTS.c.data
        )
        .where(EVENTS.c.sender_id.in_(recent))
        .order_by(EVENTS.c.sender_id, EVENTS.c.id)
    )
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("events"):
            return  # the Rasa server has not saved a conversation yet
        for sender, kind, timestamp, data in connection.execute(query):
            yield str(sender), str(kind), float(timestamp or 0.0), str(data)


def read_missed(
    engine: Optional[sa.engine.Engine], since: float = 0.0, low_confidence: float = 0.85
) -> List[Occurrence]:
    """Every missed message since ``since`` (a Unix time) in Rasa's SQL store.

    Raises:
        TrackerStoreUnreadable: the database cannot be reached or read.
    """
    if engine is None:
        return []
    found: List[Occurrence] = []
    rows: List[Row] = []
    try:
        for sender, kind, timestamp, data in _read_rows(engine, since):
            if rows and rows[-1][0] != sender:
                found.extend(_conversation_missed(rows, since, low_confidence))
                rows = []
            rows.append((sender, kind, timestamp, json.loads(data)))
    except sa.exc.SQLAlchemyError as error:
        original = getattr(error, "orig", None) or error
        reason = str(original).strip().splitlines()[0] if str(original) else ""
        raise TrackerStoreUnreadable(
            "Cannot read the conversations from the tracker store "
            f"({type(original).__name__}: {reason})."
        ) from error
    finally:
        engine.dispose()
    if rows:
        found.extend(_conversation_missed(rows, since, low_confidence))
    return found


def conversations(settings: Settings) -> Optional[sa.engine.Engine]:
    """The tracker store the Rasa server writes, named by its endpoints file.

    The file is ``ENDPOINTS``; ``TRACKER_DB`` is the settings' own (the environment's,
    or its default).
    """
    return tracker_store_engine(store_config(settings), settings.project.root)


def store_config(settings: Settings) -> Dict[str, Any]:
    """The ``tracker_store`` section of the endpoints file, its variables filled in."""
    environ = {**os.environ, "TRACKER_DB": str(settings.tracker_db)}
    return tracker_store_config(settings.endpoints_file, environ)


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
        self.path = state_dir / REVIEW_DB
        sqlite.prepare_file(self.path)
        connection = self._connect()
        try:
            with connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS reviewed (id TEXT PRIMARY KEY, "
                    "decision TEXT NOT NULL, topic TEXT, decided_at REAL NOT NULL)"
                )
        finally:
            connection.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite.connect(self.path, timeout=10)

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
        conversations(settings), since, low_answer_confidence(settings.project)
    )
    known = set(faq_data.known_texts(settings.project))
    return group(occurrences, ReviewStore(settings.state_dir).hidden(), known)


def find_group(settings: Settings, identifier: str) -> MissedGroup:
    """The group with this id (or unique id prefix), dealt with or not."""
    occurrences = read_missed(
        conversations(settings), 0.0, low_answer_confidence(settings.project)
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
