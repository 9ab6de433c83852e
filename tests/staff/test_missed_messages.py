"""Missed messages: read from a tracker store that Rasa's SQLTrackerStore wrote."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from staffkit import CODE_ROOT, copy_project, settings_for, snapshot

from staff import faq_data, missed
from staff.faq_data import Refused
from staff.missed import MissedGroup, group_id, mask_personal
from staff.project import Project, Settings

NOW = time.time()
# An FAQ answer just under the "unsure answer" line, whatever config.yml's gate is.
NEAR_MISS = missed.low_answer_confidence(Project(CODE_ROOT)) - 0.05
HOUR, DAY = 3600.0, 86400.0


def user(
    text: str,
    at: float,
    intent: str = "nlu_fallback",
    confidence: float = 0.4,
    topics: Sequence[Tuple[str, float]] = (("injection_contents", 0.6),),
    persons: Sequence[str] = (),
) -> UserUttered:
    """A user message with parse data as this assistant's pipeline makes it."""
    ranking = [{"name": intent, "confidence": confidence}]
    if intent == "nlu_fallback":
        ranking.append({"name": "faq", "confidence": 0.95})
    selection = [
        {"intent_response_key": f"faq/{topic}", "confidence": value}
        for topic, value in topics
    ]
    parse: Dict[str, Any] = {
        "intent": {"name": intent, "confidence": confidence},
        "entities": [],
        "text": text,
        "intent_ranking": ranking,
        "response_selector": {
            "faq": {"response": selection[0] if selection else {}, "ranking": selection}
        },
        "spacy_entities": [{"entity": "PERSON", "value": name} for name in persons],
    }
    return UserUttered(text, parse["intent"], [], parse, timestamp=at)


def act(name: str, at: float) -> ActionExecuted:
    return ActionExecuted(name, timestamp=at + 0.1)


def clarified(text: str, at: float, **parse: Any) -> List[Event]:
    return [
        user(text, at, **parse),
        act("action_clarify", at),
        act("action_listen", at),
    ]


CONVERSATIONS: Dict[str, List[Event]] = {
    "patient-a": [
        act("action_session_start", NOW - 5 * HOUR),
        SessionStarted(timestamp=NOW - 5 * HOUR),
        act("action_listen", NOW - 5 * HOUR),
        # answered with confidence: not missed
        user("what is a back spasm", NOW - 5 * HOUR, "faq", 0.99, [("x", 0.97)]),
        act("utter_faq", NOW - 5 * HOUR),
        *clarified("will the stuff in the needle knock me out", NOW - 4 * HOUR),
        *clarified(
            "call me on 817-555-0100 or mail jo.doe@example.com", NOW - 3 * HOUR
        ),
        # answered, but barely above the gate (its threshold + 0.10 margin)
        user(
            "hi I'm Dana, how long till it works",
            NOW - 2 * HOUR,
            "faq",
            0.9,
            [("relief_timing", NEAR_MISS)],
            persons=["Dana"],
        ),
        act("utter_faq", NOW - 2 * HOUR),
        # a "Did you mean" button: not typed, not listed
        user('/faq{"faq_topic":"relief_timing"}', NOW - 2 * HOUR + 60),
        act("action_clarify", NOW - 2 * HOUR + 60),
        user(
            "I'd like a human to look at this please",
            NOW - HOUR,
            "request_human",
            0.99,
            [],
        ),
        act("action_contact_staff", NOW - HOUR),
        # confidently out of scope: "Sorry, I can't help with that"
        user(
            "can my dog come in with me",
            NOW - HOUR + 60,
            "out_of_scope",
            0.97,
            [("chiropractic_care", 0.3), ("dry_needling", 0.2)],
        ),
        act("utter_out_of_scope", NOW - HOUR + 60),
    ],
    "patient-b": [
        act("action_session_start", NOW - 40 * DAY),
        SessionStarted(timestamp=NOW - 40 * DAY),
        *clarified("an old question nobody asks", NOW - 40 * DAY),
        act("action_session_start", NOW - 3 * HOUR),
        SessionStarted(timestamp=NOW - 3 * HOUR),
        user("I'd like to book", NOW - 3 * HOUR, "book_appointment", 0.99, []),
        act("booking_form", NOW - 3 * HOUR),
        ActiveLoop("booking_form", timestamp=NOW - 3 * HOUR + 1),
        SlotSet("requested_slot", "patient_name", timestamp=NOW - 3 * HOUR + 1),
        BotUttered("What is your full name?", timestamp=NOW - 3 * HOUR + 1),
        act("action_listen", NOW - 3 * HOUR + 1),
        # an answer to the form's question, parsed as fallback: never listed
        *clarified("Maria Lopez-Garcia", NOW - 3 * HOUR + 30),
        SlotSet("patient_name", "Maria Lopez-Garcia", timestamp=NOW - 3 * HOUR + 31),
        SlotSet("requested_slot", "patient_phone", timestamp=NOW - 3 * HOUR + 31),
        *clarified("its 555 0100 2233", NOW - 3 * HOUR + 60),
        ActiveLoop(None, timestamp=NOW - 3 * HOUR + 90),
        SlotSet("requested_slot", None, timestamp=NOW - 3 * HOUR + 90),
        *clarified("did maria lopez-garcia get booked", NOW - 2.5 * HOUR),
        # the same question as patient A, later: one group, two conversations
        *clarified("Will the stuff in the needle knock me out?", NOW - 0.5 * HOUR),
    ],
}
# The inbox of CONVERSATIONS (the last 30 days): newest first, personal data masked.
INBOX = [
    "Will the stuff in the needle knock me out?",
    "can my dog come in with me",
    "I'd like a human to look at this please",
    "hi I'm [name], how long till it works",
    "did [name] get booked",
    "call me on [phone] or mail [email]",
]


async def write_tracker_store(path: Path, domain: Domain) -> None:
    store = SQLTrackerStore(domain, dialect="sqlite", db=str(path))
    for sender, events in CONVERSATIONS.items():
        tracker = DialogueStateTracker.from_events(sender, events, domain.slots)
        await store.save(tracker)


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    project = copy_project(tmp_path / "project")
    configured = settings_for(project, tmp_path / "state")
    configured.state_dir.mkdir(mode=0o700)  # as scripts/run.sh makes it
    domain = Domain.load([str(project.domain), str(project.faq_responses)])
    await write_tracker_store(configured.tracker_db, domain)
    return configured


def by_text(groups: List[MissedGroup]) -> Dict[str, MissedGroup]:
    return {item.text: item for item in groups}


def test_lists_missed_messages_grouped_newest_first_and_masked(
    settings: Settings,
) -> None:
    groups = missed.missed_messages(settings, since_days=30)

    assert [item.text for item in groups] == INBOX
    knock_out = groups[0]
    assert (knock_out.count, knock_out.conversations) == (2, 2)
    assert knock_out.reasons == ["not understood", "did you mean"]
    assert knock_out.guess == ("faq/injection_contents", 0.6)
    reasons = {item.text: item.reasons for item in groups}
    assert reasons["I'd like a human to look at this please"] == ["asked for staff"]
    assert reasons["hi I'm [name], how long till it works"] == ["unsure answer"]
    assert reasons["can my dog come in with me"] == ["out of scope"]


def test_the_topic_guess_is_the_response_selectors_first_topic(
    settings: Settings,
) -> None:
    groups = by_text(missed.missed_messages(settings, since_days=30))
    # out of scope as an intent, yet the closest FAQ topic is what staff file it under
    assert groups["can my dog come in with me"].guess == ("out_of_scope", 0.97)
    assert groups["can my dog come in with me"].topic_guess == "chiropractic_care"
    assert groups["did [name] get booked"].topic_guess == "injection_contents"
    assert groups["I'd like a human to look at this please"].topic_guess is None


def test_nothing_typed_in_a_form_and_no_personal_detail_is_shown(
    settings: Settings,
) -> None:
    shown = " ".join(item.text for item in missed.missed_messages(settings, 30))
    for secret in ("Maria", "maria", "Lopez", "555", "0100", "2233", "jo.doe", "Dana"):
        assert secret not in shown


def test_since_limits_how_far_back(settings: Settings) -> None:
    recent = by_text(missed.missed_messages(settings, since_days=30))
    everything = by_text(missed.missed_messages(settings, since_days=60))
    assert "an old question nobody asks" not in recent
    assert "an old question nobody asks" in everything
    assert set(recent) < set(everything)


def test_a_message_that_is_now_an_example_is_not_listed(settings: Settings) -> None:
    faq_data.add_examples(
        settings.project,
        "injection_contents",
        ["will the stuff in the needle knock me out"],
    )
    texts = by_text(missed.missed_messages(settings, 30))
    assert "Will the stuff in the needle knock me out?" not in texts
    assert "I'd like a human to look at this please" in texts


def test_dismiss_hides_it_for_good_in_an_owner_only_file(settings: Settings) -> None:
    target = by_text(missed.missed_messages(settings, 30))[
        "I'd like a human to look at this please"
    ]

    missed.dismiss_missed(settings, target.id[:5])

    assert target.text not in by_text(missed.missed_messages(settings, 30))
    review_db = settings.state_dir / "staff.db"
    assert stat.S_IMODE(review_db.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700


def test_add_teaches_the_phrasing_and_hides_it(settings: Settings) -> None:
    target = missed.missed_messages(settings, 30)[0]

    result = missed.add_missed(settings, target.id, "injection_contents")

    assert result.added == ["Will the stuff in the needle knock me out?"]
    topic = faq_data.get_topic(settings.project, "injection_contents")
    assert topic.examples[-1] == "Will the stuff in the needle knock me out?"
    assert target.id not in {item.id for item in missed.missed_messages(settings, 30)}


@pytest.mark.parametrize(
    ("identifier", "topic", "reason"),
    [
        ("masked", "injection_contents", "personal details"),
        ("knock", "dry_needles", "no FAQ topic"),
        ("ffffffff", "injection_contents", "No missed message"),
        ("abc", "injection_contents", "first 4 characters"),
    ],
)
def test_add_refuses_mistakes_and_writes_nothing(
    settings: Settings, identifier: str, topic: str, reason: str
) -> None:
    ids = {
        "masked": group_id("call me on [phone] or mail [email]"),
        "knock": group_id("Will the stuff in the needle knock me out?"),
    }
    before = snapshot(settings.project)

    with pytest.raises(Refused) as refused:
        missed.add_missed(settings, ids.get(identifier, identifier), topic)

    assert reason in str(refused.value)
    assert snapshot(settings.project) == before


def test_no_tracker_store_yet_means_nothing_missed(tmp_path: Path) -> None:
    settings = settings_for(copy_project(tmp_path / "p"), tmp_path / "state")
    assert missed.missed_messages(settings) == []


def test_the_store_is_the_one_endpoints_yml_names(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = settings.project.root / "endpoints.yml"
    elsewhere = tmp_path / "elsewhere.db"
    settings.tracker_db.rename(elsewhere)
    text = endpoints.read_text(encoding="utf-8")
    assert "db: ${TRACKER_DB}" in text  # the Rasa server's own setting
    endpoints.write_text(text.replace("${TRACKER_DB}", "${OTHER_DB}"), "utf-8")
    monkeypatch.setenv("OTHER_DB", str(elsewhere))

    assert len(missed.missed_messages(settings, 30)) == 6


@pytest.mark.parametrize(
    ("endpoints", "error"),
    [
        (
            "tracker_store:\n  type: redis\n  url: localhost\n",
            "The tracker store in ENDPOINTS is 'redis'; the missed-messages inbox "
            "reads SQL stores only (SQLite, PostgreSQL).",
        ),
        (
            "action_endpoint:\n  url: http://localhost:5055/webhook\n",
            "ENDPOINTS names no tracker store: Rasa keeps conversations in memory "
            "only, so there are no missed messages to read.",
        ),
        (
            "tracker_store:\n  type: sql\n  dialect: sqlite\n  db: ${NO_SUCH_VAR}\n",
            "endpoints.yml uses ${NO_SUCH_VAR} for the tracker store, and NO_SUCH_VAR "
            "is not set.",
        ),
    ],
)
def test_a_store_the_inbox_cannot_read_is_an_error(
    settings: Settings, endpoints: str, error: str
) -> None:
    path = settings.project.root / "endpoints.yml"
    path.write_text(endpoints, encoding="utf-8")

    with pytest.raises(missed.TrackerStoreUnreadable) as unreadable:
        missed.missed_messages(settings)

    assert str(unreadable.value) == error.replace("ENDPOINTS", str(path))


def test_a_tracker_database_that_is_not_a_database_is_an_error(
    settings: Settings,
) -> None:
    settings.tracker_db.write_bytes(b"not a database" * 100)

    with pytest.raises(missed.TrackerStoreUnreadable) as unreadable:
        missed.missed_messages(settings)

    assert str(unreadable.value) == (
        "Cannot read the conversations from the tracker store "
        "(DatabaseError: file is not a database)."
    )


@pytest.mark.parametrize(
    ("text", "names", "expected"),
    [
        ("my number is (817) 555-0100", (), "my number is [phone]"),
        ("text +1 817 555 0100 pls", (), "text [phone] pls"),
        ("it hurt for 3 days, 2 weeks", (), "it hurt for 3 days, 2 weeks"),
        ("write to a.b+c@mail.example.org", (), "write to [email]"),
        ("my name is john smith", (), "my name is [name]"),
        ("my name is jo and I need help", (), "my name is [name] and I need help"),
        ("This is Ann Lee, can I park", (), "This is [name], can I park"),
        ("ref K7QM2P please", (), "ref [reference] please"),
        ("can JOHN come too", ("John Smith",), "can [name] come too"),
        ("what is a spasm", ("John",), "what is a spasm"),
    ],
)
def test_mask_personal(text: str, names: Tuple[str, ...], expected: str) -> None:
    assert mask_personal(text, names) == expected


def test_person_hints_need_a_capital_letter() -> None:
    parse: Dict[str, Optional[Any]] = {
        "spacy_entities": [
            {"entity": "PERSON", "value": "woozy"},
            {"entity": "PERSON", "value": "Dana"},
            {"entity": "DATE", "value": "Monday"},
        ]
    }
    assert missed._person_hints(parse) == ["Dana"]


def test_staff_read_why_the_inbox_cannot_be_read(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from staff.cli import main

    path = settings.project.root / "endpoints.yml"
    path.write_text("tracker_store:\n  type: mongod\n", encoding="utf-8")
    monkeypatch.setenv("PROJECT_ROOT", str(settings.project.root))
    monkeypatch.setenv("STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("TRACKER_DB", str(settings.tracker_db))

    assert main(["missed"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: The tracker store in {path} is 'mongod'; the missed-messages "
        "inbox reads SQL stores only (SQLite, PostgreSQL).\n"
    )
