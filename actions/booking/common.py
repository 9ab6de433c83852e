"""What the booking, lookup and call-back actions share.

Reading the latest message (intent, text, spaCy's hints), the answers-when-asked
rule, the name and phone questions (``ContactAnswers``), and the scheduler calls,
which run in a worker thread (``asyncio.to_thread``) so a slow backend never blocks
the action server. Names and phone numbers are never logged.

Tests replace ``get_scheduler``, ``scheduling_config`` and ``now`` here: every
other module reaches them through ``scheduler()``, ``settings()``, ``now()`` and
``offer_finder()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.booking.offers import OfferFinder
from actions.booking.parsing import (
    NAME_PARTICLES,
    clean_name,
    describe_time,
    match_visit_type,
    name_as_written,
    normalize_phone,
    phone_numbers_in,
    written_as_name,
)
from actions.booking.refused import NOT_AN_ANSWER
from actions.handoff import utter_contact_details
from clinic_common.settings import RETRIEVAL_INTENT
from scheduling import get_scheduler
from scheduling.base import BackendUnavailable, Booking, Scheduler
from scheduling.callbacks import CallbackStore
from scheduling.config import (
    SchedulingConfig,
    scheduling_config,
)
from scheduling.timeparse import TimePreferenceError, parse_time_preference

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def call_scheduler(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a blocking scheduler call in a worker thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


def now() -> datetime:
    """The current time (a function, so tests can move the clock)."""
    return datetime.now(timezone.utc)


def latest_intent(tracker: Tracker) -> Optional[str]:
    """The intent of the patient's latest message."""
    return (tracker.latest_message.get("intent") or {}).get("name")


def latest_text(tracker: Tracker) -> str:
    """The text of the patient's latest message."""
    return str(tracker.latest_message.get("text") or "").strip()


def entity_values(tracker: Tracker, entity: str) -> List[str]:
    """Every value of ``entity`` in the latest message."""
    return [
        str(e.get("value"))
        for e in tracker.latest_message.get("entities") or []
        if e.get("entity") == entity and e.get("value") is not None
    ]


def spacy_hints(tracker: Tracker, *labels: str) -> List[str]:
    """Texts of spaCy's DATE/TIME/PERSON entities in the latest message.

    They are kept apart from Rasa's entities (``clinic_nlu/entities.py``).
    """
    return [
        str(e.get("value"))
        for e in tracker.latest_message.get("spacy_entities") or []
        if e.get("entity") in labels
    ]


def has_time_hint(tracker: Tracker) -> bool:
    """Whether spaCy saw a date or a time in the latest message.

    Never in a phone number: spaCy takes "8175550188" for a DATE.
    """
    phones = phone_numbers_in(latest_text(tracker))
    return any(
        not any(hint in phone for phone in phones)
        for hint in spacy_hints(tracker, "DATE", "TIME")
    )


def known_visit_types() -> List[Tuple[str, str]]:
    """The clinic's visit types as (key, name) pairs, for ``match_visit_type``."""
    return [(visit.key, visit.name) for visit in settings().visit_types]


def visit_type_in_message(tracker: Tracker) -> Optional[str]:
    """The visit type key a button or the patient's words name, if any."""
    from_button = entity_values(tracker, "visit_type")
    return match_visit_type(
        from_button[0] if from_button else latest_text(tracker), known_visit_types()
    )


QUESTION_WORDS = ("what", "how", "why", "when", "is", "does", "do", "can", "will")


def is_short_name(tracker: Tracker) -> bool:
    """A few words, no question, read as an FAQ topic ("dry needling").

    Asked which visit they want, a patient who types "dry needling" is answering,
    not asking the FAQ about it. Red flags never count (their intent is not faq).
    """
    text = latest_text(tracker).lower()
    words = text.split()
    return (
        latest_intent(tracker) == RETRIEVAL_INTENT
        and 0 < len(words) <= 4
        and "?" not in text
        and words[0] not in QUESTION_WORDS
    )


def is_answer(tracker: Tracker) -> bool:
    """Whether the latest message may be read as an answer to a form question."""
    return latest_intent(tracker) not in NOT_AN_ANSWER


def visit_type_name(key: Optional[str]) -> str:
    """The patient-facing name of a visit type, e.g. "Dry needling"."""
    visit = settings().visit_type(key or "")
    return visit.name if visit else "visit"


def visit_type_in_sentence(key: Optional[str]) -> str:
    """The visit type's name as written inside a sentence, e.g. "dry needling".

    The first letter is lower-cased unless the first word is an abbreviation
    ("MRI review" stays as it is).
    """
    name = visit_type_name(key)
    first = name.split(" ", 1)[0]
    if len(first) > 1 and first.isupper():
        return name
    return name[:1].lower() + name[1:]


def idempotency_key(*parts: Any) -> str:
    """A stable key for one request of one conversation: a retry gets the same."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


def _time_problem(text: str) -> Optional[str]:
    """Why the time parser refuses the text as a time to book, or None if it takes it.

    The reasons are those of ``TimePreferenceError``: "unparsed" (no day or time in
    it), "past" or "too_far".
    """
    config = settings()
    try:
        parse_time_preference(text, now(), config.tz, config.booking_horizon_days)
    except TimePreferenceError as error:
        return error.reason
    return None


def reads_as_time(text: str) -> bool:
    """Whether the text names a day or a time (past or too far ahead included)."""
    return _time_problem(text) != "unparsed"


def time_in_request(text: str) -> bool:
    """Whether a request to book names when ("any openings friday?", "asap").

    A day in the past is the patient's story ("I hurt it yesterday, can I book"),
    not a wish: it does not count. One too far ahead does, so the patient learns
    how far ahead the clinic books.
    """
    return _time_problem(text) in (None, "too_far")


async def release_hold(hold_id: Optional[str]) -> None:
    """Gives a held slot back; a scheduler that is down only loses a short hold."""
    if not hold_id:
        return
    try:
        await call_scheduler(scheduler().release, hold_id)
    except BackendUnavailable:
        logger.warning("Could not release hold %s: scheduler unavailable.", hold_id)


def booking_values(booking: Booking) -> Dict[str, str]:
    """Template values that describe a booking to its patient."""
    local = booking.slot.start.astimezone(settings().tz)
    return {
        "visit_type_name": visit_type_in_sentence(booking.slot.visit_type),
        "when": describe_time(local),
        "reference": booking.reference,
    }


# Never read as an answer, whatever it looks like.
SAFETY_AND_STOP = {"emergency", "crisis", "stop"}
# What the classifier makes of words it has not learnt: a Spanish, Yoruba or Chinese
# name is often "another language" or "off topic" to it.
UNFAMILIAR = {"other_language", "out_of_scope"}
# Short replies that are no name ("yes", "no", "ok"), unless written like one.
REPLIES = {"affirm", "deny"}
REFERENCE_SHAPE = re.compile(r"[A-Za-z0-9]{5,12}")


def looks_like_reference(text: str) -> bool:
    """A bare booking code ("K7PM3Q", "k7pm-3q")."""
    return REFERENCE_SHAPE.fullmatch(re.sub(r"[\s-]", "", text)) is not None


def looks_like_phone(text: str) -> bool:
    """Text with a valid phone number in it."""
    return normalize_phone(text) is not None


def answer_when_asked(
    tracker: Tracker, slot: str, looks_right: Optional[Callable[[str], bool]] = None
) -> Dict[str, Any]:
    """The latest text as the answer to ``slot``, if that is what the form asked.

    A message the classifier read as something else (an FAQ, a booking request)
    still counts when it has the right shape, a phone number or a code; a red flag
    or "never mind" never does.
    """
    if tracker.get_slot("requested_slot") != slot:
        return {}
    text = latest_text(tracker)
    shaped = (
        looks_right is not None
        and looks_right(text)
        and latest_intent(tracker) not in SAFETY_AND_STOP
    )
    return {slot: text} if is_answer(tracker) or shaped else {}


def reads_as_name(tracker: Tracker) -> bool:
    """Whether the latest message, at the name question, is the patient's name.

    Any name counts (``name_as_written``), whatever the classifier made of it, when
    written like a name: two words or more, each capitalised ("Marisol Quintanilla",
    "Dawn Price", read as a question about prices). Otherwise the intent decides:
    an answer intent ("inform") is a name; an unfamiliar one (another language, off
    topic) is a name when written like one or of up to three words besides particles
    ("Ximena", "juan carlos de la cruz"), not a longer sentence ("quiero hacer una
    cita para mañana"). A red flag, "stop", a question, digits, "yes" or "no", and
    what the form lets the rules answer (an FAQ, insurance, "hello") are not names.
    """
    intent = latest_intent(tracker)
    if intent in SAFETY_AND_STOP:
        return False
    name = name_as_written(latest_text(tracker), spacy_hints(tracker, "PERSON"))
    if name is None:
        return False
    words = name.split()
    if written_as_name(name) and len(words) >= 2:
        return True
    if intent in UNFAMILIAR:
        given = [word for word in words if word.lower() not in NAME_PARTICLES]
        return written_as_name(name) or len(given) <= 3
    return intent not in REPLIES and is_answer(tracker)


class ContactAnswers:
    """The name and phone questions, shared by the booking, lookup and call-back forms.

    A mixin, not an action: rasa_sdk registers every Action subclass it finds.
    """

    async def extract_patient_name(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The name, when asked: a name whatever its intent, or any other answer.

        An answer that is no name ("yes", "12345") is refused by the validation; a
        question, an FAQ or a red flag is left to the rules.
        """
        if tracker.get_slot("requested_slot") != "patient_name":
            return {}
        if reads_as_name(tracker):
            return {"patient_name": latest_text(tracker)}
        return answer_when_asked(tracker, "patient_name")

    async def extract_patient_phone(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The phone number, when asked (a bare number counts whatever its intent)."""
        return answer_when_asked(tracker, "patient_phone", looks_like_phone)

    async def validate_patient_name(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """A name as the patient writes it (one word or more, any script)."""
        if value is None:  # cleared to be asked again: nothing to check
            return {"patient_name": None}
        name = clean_name(str(value), spacy_hints(tracker, "PERSON"))
        # The answer just given must read as a name in context too ("yes" is a
        # reply); a name kept from the booking being rescheduled need not.
        if value == latest_text(tracker) and not reads_as_name(tracker):
            name = None
        if name is None:
            dispatcher.utter_message(response="utter_invalid_name")
        return {"patient_name": name}

    async def validate_patient_phone(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """A valid US number (or +country code), kept in E.164."""
        if value is None:  # cleared to be asked again: nothing to check
            return {"patient_phone": None}
        phone = normalize_phone(str(value))
        if phone is None:
            dispatcher.utter_message(response="utter_invalid_phone")
        return {"patient_phone": phone}


def scheduler() -> Scheduler:
    """The configured scheduler backend."""
    return get_scheduler()


def settings() -> SchedulingConfig:
    """The scheduling section of clinic.yml."""
    return scheduling_config()


def offer_finder() -> OfferFinder:
    """Finds open times with the configured scheduler, clock and settings."""
    return OfferFinder(scheduler(), now, settings())


def callback_store() -> CallbackStore:
    """Where call-back requests are kept for staff (their own file, see there)."""
    return CallbackStore()


def offer_callback(dispatcher: CollectingDispatcher) -> List[EventType]:
    """Says the scheduler is down, gives any contact details, offers a call back.

    Without a phone, address or website in clinic.yml the call back is the way to
    staff ("contact our office" with nothing to contact it by would be a dead end).
    """
    dispatcher.utter_message(response="utter_scheduler_down")
    utter_contact_details(dispatcher)
    dispatcher.utter_message(response="utter_offer_callback")
    return [SlotSet("callback_offered", True)]
