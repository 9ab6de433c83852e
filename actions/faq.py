"""Answering FAQ questions and asking "Did you mean ...?" when unsure."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml
from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.settings import SUGGESTION_MIN_CONFIDENCE
from clinic_common.settings import RETRIEVAL_INTENT
from clinic_nlu.text import has_words

FAQ_TOPIC_ENTITY = "faq_topic"
# Button titles of the FAQ topics: a data file that staff edit through
# `scripts/clinicbot faq new`, so a new topic needs no code change.
FAQ_TITLES_FILE = Path(__file__).resolve().parent / "faq_titles.yml"

# Other intents worth offering as a suggestion, with their button titles.
INTENT_TITLES: Dict[str, str] = {
    "book_appointment": "Book an appointment",
    "reschedule_appointment": "Reschedule an appointment",
    "cancel_appointment": "Cancel an appointment",
    "request_human": "Talk to our staff",
    "ask_insurance": "Insurance",
    "ask_cost": "Prices",
    "ask_hours": "Office hours",
    "ask_capabilities": "What can you do?",
}


def faq_topic_titles(path: Path = FAQ_TITLES_FILE) -> Dict[str, str]:
    """The button titles of the FAQ topics, by topic.

    Read on first use, not at import, and again whenever the file changes: a topic
    added by staff gets its title without restarting the action server. A missing or
    unreadable file gives no titles, so the topic names are shown instead.
    """
    try:
        modified = path.stat().st_mtime_ns
    except OSError:
        return {}
    return dict(_read_titles(path, modified))


@lru_cache(maxsize=4)
def _read_titles(path: Path, modified: int) -> Dict[str, str]:
    """Titles of ``path`` as it was at ``modified`` (the cache key)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {str(topic): str(title) for topic, title in document.items() if title}


def topic_title(topic: str) -> str:
    """The button title of an FAQ topic."""
    return faq_topic_titles().get(topic) or topic.replace("_", " ").capitalize()


def faq_topic_payload(topic: str) -> str:
    """The payload a "Did you mean" button sends for an FAQ topic."""
    return f'/{RETRIEVAL_INTENT}{{"{FAQ_TOPIC_ENTITY}":"{topic}"}}'


def _chosen_topic(latest_message: Dict[str, Any]) -> Optional[str]:
    """The FAQ topic the patient chose on a "Did you mean" button, if any."""
    for entity in latest_message.get("entities") or []:
        if entity.get("entity") == FAQ_TOPIC_ENTITY and entity.get("value"):
            return str(entity["value"])
    return None


class ActionAnswerFaq(Action):
    """Answers the FAQ topic chosen on a "Did you mean" button.

    Typed questions are answered by Rasa itself (``utter_faq`` with the
    ResponseSelector's pick); a button payload carries the topic instead, so no
    selector ran and this action utters ``utter_faq/<topic>`` directly.
    """

    def name(self) -> str:
        """Action name used in the domain and rules."""
        return "action_answer_faq"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        """Answers with ``utter_faq/<topic>``; unknown topics get the default reply."""
        topic = _chosen_topic(tracker.latest_message)
        response = f"utter_{RETRIEVAL_INTENT}/{topic}"
        if topic is None or response not in domain.get("responses", {}):
            dispatcher.utter_message(response="utter_default")
            return []
        dispatcher.utter_message(response=response)
        return []


def suggestions(latest_message: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The two likeliest (title, payload) pairs for a message the NLU was unsure of.

    FAQ topics are scored by intent confidence times the ResponseSelector's
    confidence for the topic, other intents by their intent confidence.
    """
    intent_ranking = latest_message.get("intent_ranking") or []
    selection = (latest_message.get("response_selector") or {}).get(RETRIEVAL_INTENT)
    topic_ranking = (selection or {}).get("ranking") or []

    scored: List[Tuple[float, str, str]] = []
    for entry in intent_ranking:
        name, confidence = entry.get("name"), float(entry.get("confidence") or 0.0)
        if name == RETRIEVAL_INTENT:
            # A FAQ prediction demoted by the confidence gate still has a high intent
            # confidence; its topics carry the uncertainty.
            for topic_entry in topic_ranking:
                key = str(topic_entry.get("intent_response_key") or "")
                if "/" not in key:
                    continue
                topic = key.split("/", 1)[1]
                score = confidence * float(topic_entry.get("confidence") or 0.0)
                scored.append((score, topic_title(topic), faq_topic_payload(topic)))
        elif name in INTENT_TITLES:
            scored.append((confidence, INTENT_TITLES[name], f"/{name}"))
    scored.sort(key=lambda item: item[0], reverse=True)
    return [
        (title, payload)
        for score, title, payload in scored[:2]
        if score >= SUGGESTION_MIN_CONFIDENCE
    ]


class ActionClarify(Action):
    """Offers the likeliest topics as "Did you mean" buttons, or asks to rephrase."""

    def name(self) -> str:
        """Action name used in the domain and rules."""
        return "action_clarify"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        """Suggests up to two topics; with no plausible one, says what it can do.

        A message without any letter or digit (empty, emoji, punctuation) is asked
        for words instead.
        """
        if not has_words(tracker.latest_message.get("text") or ""):
            dispatcher.utter_message(response="utter_empty_message")
            return []
        options = suggestions(tracker.latest_message)
        if not options:
            # Nothing it knows is close: say so, and what it can do.
            dispatcher.utter_message(response="utter_out_of_scope")
            return []
        dispatcher.utter_message(
            response="utter_clarify",
            buttons=[
                {"title": title, "payload": payload} for title, payload in options
            ],
        )
        return []
