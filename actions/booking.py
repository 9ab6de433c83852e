"""Booking, rescheduling, cancelling and looking up appointments in conversation.

Three forms (``domain.yml``):

- ``booking_form``: visit type, preferred time, one of up to five open slots near it,
  full name, mobile number, then a read-back to confirm. ``action_book_appointment``
  books it. Any answer can be changed before confirming.
- ``lookup_form``: booking reference and the phone number it was booked with, for
  "when is my appointment", rescheduling and cancelling. Nothing about a booking is
  said until both match.
- ``callback_form``: name and number, when the scheduler is down.

Every scheduler call runs in a worker thread (``asyncio.to_thread``) so a slow
backend never blocks the action server. Names and phone numbers are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, TypeVar

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.booking_parsing import (
    clean_name,
    describe_time,
    match_visit_type,
    normalize_phone,
    pick_offered,
)
from actions.handoff import utter_contact
from actions.scheduling import get_scheduler
from actions.scheduling.base import (
    BackendUnavailable,
    Booking,
    BookingNotFound,
    Patient,
    Slot,
    SlotUnavailable,
)
from actions.scheduling.callbacks import CallbackStore
from actions.scheduling.config import default_db_path, scheduling_config
from actions.scheduling.timeparse import TimePreferenceError, parse_time_preference

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_OFFERS = 5
# When nothing is open in the window the patient asked for, look this far beyond it.
WIDEN_SEARCH = timedelta(days=14)
MAX_LOOKUP_ATTEMPTS = 3
# Intents that are never an answer to a form question: the form lets the rules
# handle them (FAQ in the middle, "never mind", red flags, ...).
NOT_AN_ANSWER = {
    "faq",
    "stop",
    "emergency",
    "crisis",
    "greet",
    "goodbye",
    "thank",
    "bot_challenge",
    "ask_capabilities",
    "request_human",
    "ask_insurance",
    "ask_cost",
    "ask_hours",
    "ask_other_condition",
    "ask_medication_advice",
    "other_language",
    "out_of_scope",
    "book_appointment",
    "reschedule_appointment",
    "cancel_appointment",
    "check_appointment",
}
BOOKING_SLOTS = (
    "visit_type",
    "time_preference",
    "appointment_slot",
    "offered_slots",
    "hold_id",
    "booking_confirmed",
)
CHANGE_CLEARS = {
    "time": ("time_preference", "appointment_slot", "offered_slots", "hold_id"),
    "visit_type": (
        "visit_type",
        "time_preference",
        "appointment_slot",
        "offered_slots",
        "hold_id",
    ),
    "name": ("patient_name",),
    "phone": ("patient_phone",),
}
CHANGE_WORDS = {
    "time": ("time", "day", "date", "slot", "when", "other times", "none of those"),
    "visit_type": ("type", "visit", "treatment", "service"),
    "name": ("name",),
    "phone": ("phone", "number", "cell", "mobile"),
}


async def call_scheduler(function: Callable[..., T], *args: Any) -> T:
    """Runs a blocking scheduler call in a worker thread."""
    return await asyncio.to_thread(function, *args)


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
    """Whether spaCy saw a date or a time in the latest message."""
    return bool(spacy_hints(tracker, "DATE", "TIME"))


def visit_type_in_message(tracker: Tracker) -> Optional[str]:
    """The visit type key a button or the patient's words name, if any."""
    known = [(v.key, v.name) for v in scheduling_config().visit_types]
    from_button = entity_values(tracker, "visit_type")
    return match_visit_type(
        from_button[0] if from_button else latest_text(tracker), known
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
        latest_intent(tracker) == "faq"
        and 0 < len(words) <= 4
        and "?" not in text
        and words[0] not in QUESTION_WORDS
    )


def is_answer(tracker: Tracker) -> bool:
    """Whether the latest message may be read as an answer to a form question."""
    return latest_intent(tracker) not in NOT_AN_ANSWER


def visit_type_name(key: Optional[str]) -> str:
    """The patient-facing name of a visit type, e.g. "Dry needling"."""
    visit = scheduling_config().visit_type(key or "")
    return visit.name if visit else "visit"


def slot_entry(slot: Slot) -> Dict[str, Any]:
    """How an offered slot is kept in the tracker (no patient data)."""
    local = slot.start.astimezone(scheduling_config().tz)
    return {
        "id": slot.slot_id,
        "start": local.isoformat(),
        "end": slot.end.astimezone(scheduling_config().tz).isoformat(),
        "visit_type": slot.visit_type,
        "provider": slot.provider,
        "label": describe_time(local),
    }


def slot_from_entry(entry: Dict[str, Any]) -> Slot:
    """The scheduler's ``Slot`` back from a tracker entry."""
    return Slot(
        slot_id=str(entry["id"]),
        start=datetime.fromisoformat(entry["start"]),
        end=datetime.fromisoformat(entry["end"]),
        visit_type=str(entry["visit_type"]),
        provider=str(entry.get("provider") or ""),
    )


def idempotency_key(*parts: Any) -> str:
    """A stable key for one request of one conversation: a retry gets the same."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


async def find_offers(visit_type: str, time_text: str) -> List[Dict[str, Any]]:
    """Up to five open slots in the preferred window, else the nearest after it.

    Each entry says whether it is ``in_window``: a time the clinic is closed, or
    fully booked, gets the nearest open times, and the patient is told so.
    Raises ``TimePreferenceError`` or ``BackendUnavailable``.
    """
    config = scheduling_config()
    window = parse_time_preference(
        time_text, now(), config.tz, config.booking_horizon_days
    )
    scheduler = get_scheduler()
    slots = await call_scheduler(
        scheduler.find_slots, visit_type, window.start, window.end, MAX_OFFERS
    )
    in_window = bool(slots)
    if not slots:
        slots = await call_scheduler(
            scheduler.find_slots,
            visit_type,
            window.end,
            window.end + WIDEN_SEARCH,
            MAX_OFFERS,
        )
    return [slot_entry(slot) | {"in_window": in_window} for slot in slots]


async def release_hold(hold_id: Optional[str]) -> None:
    """Gives a held slot back; a scheduler that is down only loses a short hold."""
    if not hold_id:
        return
    try:
        await call_scheduler(get_scheduler().release, hold_id)
    except BackendUnavailable:
        logger.warning("Could not release hold %s: scheduler unavailable.", hold_id)


def booking_values(booking: Booking) -> Dict[str, str]:
    """Template values that describe a booking to its patient."""
    local = booking.slot.start.astimezone(scheduling_config().tz)
    return {
        "visit_type_name": visit_type_name(booking.slot.visit_type),
        "when": describe_time(local),
        "reference": booking.reference,
    }


def reset(*names: str) -> List[EventType]:
    """Clears the given slots."""
    return [SlotSet(name, None) for name in names]


# Never read as an answer, whatever it looks like.
SAFETY_AND_STOP = {"emergency", "crisis", "stop"}
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


class ContactAnswers:
    """The name and phone questions, shared by the booking, lookup and call-back forms.

    A mixin, not an action: rasa_sdk registers every Action subclass it finds.
    """

    async def extract_patient_name(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The name, when asked."""
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
        """A first and last name."""
        name = clean_name(str(value), spacy_hints(tracker, "PERSON"))
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
        phone = normalize_phone(str(value))
        if phone is None:
            dispatcher.utter_message(response="utter_invalid_phone")
        return {"patient_phone": phone}


# --- Starting the flows ---------------------------------------------------------------


class ActionStartBooking(Action):
    """Starts a fresh booking: earlier answers of a finished booking are cleared."""

    def name(self) -> str:
        """Action name used in the domain and rules."""
        return "action_start_booking"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Clears booking slots and notes that this is a new booking."""
        await release_hold(tracker.get_slot("hold_id"))
        events = reset(*BOOKING_SLOTS, "found_booking", "scheduler_down")
        events.append(SlotSet("booking_task", "book"))
        # A visit type named in the request itself ("book a dry needling") counts.
        visit = visit_type_in_message(tracker)
        if visit:
            events.append(SlotSet("visit_type", visit))
        return events


class ActionStartLookup(Action):
    """Starts finding a booking, remembering what the patient wants to do with it."""

    def name(self) -> str:
        """Action name used in the domain and rules."""
        return "action_start_lookup"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Sets booking_task from the intent and clears an earlier lookup."""
        task = {
            "reschedule_appointment": "reschedule",
            "cancel_appointment": "cancel",
        }.get(latest_intent(tracker) or "", "check")
        return [
            SlotSet("booking_task", task),
            SlotSet("lookup_attempts", 0),
            *reset("booking_reference", "found_booking", "cancel_pending"),
        ]


# --- booking_form -----------------------------------------------------------------


class ValidateBookingForm(ContactAnswers, FormValidationAction):
    """Reads and checks every answer of the booking form."""

    def name(self) -> str:
        """Name of the validation action of ``booking_form``."""
        return "validate_booking_form"

    async def required_slots(
        self,
        domain_slots: List[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> List[str]:
        """All of them, unless the scheduler is down: then the form ends at once."""
        if tracker.get_slot("scheduler_down"):
            return []
        return domain_slots

    # Extraction: what in the latest message answers which question.

    async def extract_visit_type(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The visit type: when asked, or named anywhere in the form (a change)."""
        requested = tracker.get_slot("requested_slot")
        if requested == "visit_type" and (is_answer(tracker) or is_short_name(tracker)):
            visit = visit_type_in_message(tracker)
            if visit:
                return {"visit_type": visit}
        if not is_answer(tracker):
            return {}
        if requested == "visit_type":
            return {"visit_type": latest_text(tracker)}
        # Later in the form, only a clear change ("actually, dry needling instead").
        if latest_intent(tracker) in ("inform", "change_answer") and requested not in (
            "patient_name",
            "patient_phone",
        ):
            visit = visit_type_in_message(tracker)
            if visit and visit != tracker.get_slot("visit_type"):
                return {"visit_type": visit}
        return {}

    async def extract_time_preference(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The preferred time: when asked, or a new date/time later in the form."""
        if not is_answer(tracker):
            return {}
        requested = tracker.get_slot("requested_slot")
        if requested == "time_preference":
            return {"time_preference": latest_text(tracker)}
        if (
            has_time_hint(tracker)
            and tracker.get_slot("time_preference")
            and requested in ("booking_confirmed", "patient_name", "patient_phone")
        ):
            return {"time_preference": latest_text(tracker)}
        return {}

    async def extract_appointment_slot(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The patient's pick among the offered times."""
        if tracker.get_slot("requested_slot") != "appointment_slot":
            return {}
        if not is_answer(tracker):
            return {}
        if latest_intent(tracker) == "change_answer":
            return {"appointment_slot": "change"}
        option = entity_values(tracker, "appointment_option")
        return {"appointment_slot": f"option:{option[0]}" if option else "text"}

    async def extract_booking_confirmed(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """Yes, no, or what to change, at the read-back."""
        if tracker.get_slot("requested_slot") != "booking_confirmed":
            return {}
        intent = latest_intent(tracker)
        if intent == "affirm":
            return {"booking_confirmed": True}
        if intent == "deny":
            dispatcher.utter_message(response="utter_what_to_change")
            return {"booking_confirmed": None}
        if intent in ("change_answer", "inform"):
            field = _field_to_change(tracker)
            if field:
                return {name: None for name in CHANGE_CLEARS[field]} | {
                    "booking_confirmed": None
                }
            if intent == "change_answer":
                dispatcher.utter_message(response="utter_what_to_change")
                return {"booking_confirmed": None}
        return {}

    # Validation: turn the raw answers into checked values.

    async def validate_visit_type(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """A visit type key from the clinic config; a change resets the time."""
        known = [(v.key, v.name) for v in scheduling_config().visit_types]
        key = value if value in dict(known) else match_visit_type(str(value), known)
        if key is None:
            dispatcher.utter_message(response="utter_visit_type_not_understood")
            return {"visit_type": None}
        previous = tracker.get_slot("visit_type")
        if tracker.get_slot("appointment_slot") and key != previous:
            await release_hold(tracker.get_slot("hold_id"))
            return (
                {"visit_type": key}
                | {name: None for name in CHANGE_CLEARS["time"]}
                | {"booking_confirmed": None}
            )
        return {"visit_type": key}

    async def validate_time_preference(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """Parses the time and finds open slots near it, ready to offer."""
        visit_type = tracker.get_slot("visit_type")
        if not visit_type:
            return {"time_preference": None}
        try:
            offers = await find_offers(visit_type, str(value))
        except TimePreferenceError as error:
            _utter_time_problem(dispatcher, error.reason)
            return {"time_preference": None}
        except BackendUnavailable:
            logger.warning("Scheduler unavailable while searching slots.")
            return {"time_preference": str(value), "scheduler_down": True}
        await release_hold(tracker.get_slot("hold_id"))
        cleared = {"appointment_slot": None, "hold_id": None, "booking_confirmed": None}
        if not offers:
            dispatcher.utter_message(
                response="utter_no_slots",
                visit_type_name=visit_type_name(visit_type),
                time_preference=str(value),
            )
            return {"time_preference": None, "offered_slots": None} | cleared
        if not offers[0].get("in_window", True):
            dispatcher.utter_message(response="utter_nearest_times")
        return {"time_preference": str(value), "offered_slots": offers} | cleared

    async def validate_appointment_slot(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """Holds the chosen slot; if it is gone, offers the next ones."""
        offered = tracker.get_slot("offered_slots") or []
        if value == "change":
            return {"appointment_slot": None, "time_preference": None}
        option = value.split(":", 1)[1] if str(value).startswith("option:") else None
        choice = pick_offered(latest_text(tracker), offered, option)
        if choice is None:
            if has_time_hint(tracker):
                # Not one of the offers but another day or time: search again.
                return await self.validate_time_preference(
                    latest_text(tracker), dispatcher, tracker, domain
                )
            dispatcher.utter_message(response="utter_slot_not_understood")
            return {"appointment_slot": None}
        scheduler = get_scheduler()
        try:
            hold = await call_scheduler(
                scheduler.hold,
                slot_from_entry(choice),
                timedelta(minutes=scheduling_config().hold_minutes),
            )
        except SlotUnavailable:
            dispatcher.utter_message(response="utter_slot_taken")
            return await self._fresh_offers(tracker)
        except BackendUnavailable:
            return {"appointment_slot": None, "scheduler_down": True}
        return {"appointment_slot": choice["id"], "hold_id": hold.hold_id}

    async def _fresh_offers(self, tracker: Tracker) -> Dict[str, Any]:
        try:
            offers = await find_offers(
                str(tracker.get_slot("visit_type")),
                str(tracker.get_slot("time_preference")),
            )
        except (TimePreferenceError, BackendUnavailable):
            return {"appointment_slot": None, "time_preference": None}
        return {"appointment_slot": None, "offered_slots": offers or None} | (
            {} if offers else {"time_preference": None}
        )

    async def validate_booking_confirmed(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """Only an explicit yes confirms."""
        return {"booking_confirmed": True if value is True else None}


def _field_to_change(tracker: Tracker) -> Optional[str]:
    """Which answer the patient wants to change, from a button or their words."""
    fields = entity_values(tracker, "booking_field")
    if fields and fields[0] in CHANGE_CLEARS:
        return fields[0]
    if has_time_hint(tracker):
        return "time"
    if visit_type_in_message(tracker) not in (None, tracker.get_slot("visit_type")):
        return "visit_type"
    text = latest_text(tracker).lower()
    for field, words in CHANGE_WORDS.items():
        if any(word in text for word in words):
            return field
    return None


def _utter_time_problem(dispatcher: CollectingDispatcher, reason: str) -> None:
    if reason == "past":
        dispatcher.utter_message(response="utter_time_in_past")
    elif reason == "too_far":
        dispatcher.utter_message(
            response="utter_time_too_far",
            horizon_days=scheduling_config().booking_horizon_days,
        )
    else:
        dispatcher.utter_message(response="utter_time_not_understood")


class ActionAskVisitType(Action):
    """Asks for the visit type, with the clinic's visit types as buttons."""

    def name(self) -> str:
        """Action name: Rasa calls it to request the ``visit_type`` slot."""
        return "action_ask_visit_type"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Lists the visit types from clinic.yml."""
        buttons = [
            {
                "title": visit.name,
                "payload": f'/inform{{"visit_type": "{visit.key}"}}',
            }
            for visit in scheduling_config().visit_types
        ]
        dispatcher.utter_message(
            text="What kind of visit would you like to book?", buttons=buttons
        )
        return []


class ActionAskAppointmentSlot(Action):
    """Offers the open slots found for the patient's preference."""

    def name(self) -> str:
        """Action name: Rasa calls it to request the ``appointment_slot`` slot."""
        return "action_ask_appointment_slot"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Shows up to five times as buttons (numbered, for text channels)."""
        offered = tracker.get_slot("offered_slots") or []
        if not offered:
            dispatcher.utter_message(response="utter_ask_time_preference")
            return [SlotSet("requested_slot", "time_preference")]
        buttons = [
            {
                "title": entry["label"],
                "payload": f'/inform{{"appointment_option": "{number}"}}',
            }
            for number, entry in enumerate(offered, start=1)
        ]
        visit = visit_type_name(tracker.get_slot("visit_type"))
        dispatcher.utter_message(
            text=f"Here are the open times for a {visit}. Which one suits you?",
            buttons=buttons,
        )
        return []


class ActionAskBookingConfirmed(Action):
    """Reads the booking back (weekday, date, time and zone) and asks to confirm."""

    def name(self) -> str:
        """Action name: Rasa calls it to request ``booking_confirmed``."""
        return "action_ask_booking_confirmed"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """The read-back, unless the patient was just asked what to change."""
        if latest_intent(tracker) in ("deny", "change_answer"):
            return []
        offered = tracker.get_slot("offered_slots") or []
        chosen = next(
            (e for e in offered if e.get("id") == tracker.get_slot("appointment_slot")),
            None,
        )
        when = chosen["label"] if chosen else "the time you picked"
        visit = visit_type_name(tracker.get_slot("visit_type"))
        phone = tracker.get_slot("patient_phone") or ""
        dispatcher.utter_message(
            text=(
                f"Please check: {visit} on {when}, for "
                f"{tracker.get_slot('patient_name')}, mobile {phone}. Shall I book it?"
            ),
            buttons=[
                {"title": "Yes, book it", "payload": "/affirm"},
                {"title": "Change something", "payload": "/deny"},
                {"title": "Stop", "payload": "/stop"},
            ],
        )
        return []


class ActionBookAppointment(Action):
    """Books the confirmed slot (and cancels the old one when rescheduling)."""

    def name(self) -> str:
        """Action name used in the rules, after ``booking_form``."""
        return "action_book_appointment"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Books; on a lost slot offers the next ones; on an outage offers a call."""
        if tracker.get_slot("scheduler_down"):
            return offer_callback(dispatcher)
        offered = tracker.get_slot("offered_slots") or []
        chosen = next(
            (e for e in offered if e.get("id") == tracker.get_slot("appointment_slot")),
            None,
        )
        if chosen is None or tracker.get_slot("booking_confirmed") is not True:
            return [FollowupAction("booking_form")]
        patient = Patient(
            name=str(tracker.get_slot("patient_name")),
            phone=str(tracker.get_slot("patient_phone")),
        )
        hold_id = tracker.get_slot("hold_id")
        key = idempotency_key(tracker.sender_id, chosen["id"], hold_id, "book")
        scheduler = get_scheduler()
        try:
            booking = await call_scheduler(
                scheduler.book, slot_from_entry(chosen), patient, key, hold_id
            )
        except SlotUnavailable:
            dispatcher.utter_message(response="utter_slot_taken")
            return await self._offer_next(tracker)
        except (BackendUnavailable, ValueError) as error:
            # ValueError: the backend refused the request itself (e.g. a reused
            # idempotency key); the patient gets the same way out as in an outage.
            logger.warning("Booking failed: %s.", type(error).__name__)
            return [SlotSet("scheduler_down", True), *offer_callback(dispatcher)]
        logger.info("Booked %s (slot %s).", booking.reference, chosen["id"])
        events = await self._finish(dispatcher, tracker, booking)
        return events + reset(*BOOKING_SLOTS, "found_booking")

    async def _offer_next(self, tracker: Tracker) -> List[EventType]:
        try:
            offers = await find_offers(
                str(tracker.get_slot("visit_type")),
                str(tracker.get_slot("time_preference")),
            )
        except (TimePreferenceError, BackendUnavailable):
            offers = []
        return [
            SlotSet("offered_slots", offers or None),
            *reset("appointment_slot", "hold_id", "booking_confirmed"),
            *([] if offers else reset("time_preference")),
            FollowupAction("booking_form"),
        ]

    async def _finish(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, booking: Booking
    ) -> List[EventType]:
        old_reference = tracker.get_slot("found_booking")
        if tracker.get_slot("booking_task") != "reschedule" or not old_reference:
            dispatcher.utter_message(response="utter_booked", **booking_values(booking))
            return []
        phone = str(tracker.get_slot("patient_phone"))
        key = idempotency_key(tracker.sender_id, old_reference, "cancel")
        try:
            await call_scheduler(get_scheduler().cancel, old_reference, phone, key)
        except (BookingNotFound, BackendUnavailable):
            # The new time is booked; the old one must not silently stay.
            logger.warning(
                "Rescheduled to %s but could not cancel %s.",
                booking.reference,
                old_reference,
            )
            dispatcher.utter_message(response="utter_booked", **booking_values(booking))
            dispatcher.utter_message(
                text=(
                    f"I could not cancel your earlier booking {old_reference}. "
                    "Please contact our office to cancel it."
                )
            )
            return []
        dispatcher.utter_message(
            response="utter_rescheduled", **booking_values(booking)
        )
        return []


def offer_callback(dispatcher: CollectingDispatcher) -> List[EventType]:
    """Says the scheduler is down, gives the contact, offers a call back."""
    dispatcher.utter_message(response="utter_scheduler_down")
    utter_contact(dispatcher)
    dispatcher.utter_message(response="utter_offer_callback")
    return [SlotSet("callback_offered", True)]


class ActionStopBooking(Action):
    """Never mind: drops the current booking, lookup or call-back, and its hold."""

    def name(self) -> str:
        """Action name used in the rules."""
        return "action_stop_booking"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Releases a held slot and clears every booking slot."""
        await release_hold(tracker.get_slot("hold_id"))
        return reset(
            *BOOKING_SLOTS,
            "booking_reference",
            "found_booking",
            "booking_task",
            "scheduler_down",
        ) + [SlotSet("cancel_pending", False), SlotSet("callback_offered", False)]


# --- lookup_form: reference and phone --------------------------------------------


class ValidateLookupForm(ContactAnswers, FormValidationAction):
    """Reads the booking reference and the phone number it was booked with."""

    def name(self) -> str:
        """Name of the validation action of ``lookup_form``."""
        return "validate_lookup_form"

    async def extract_booking_reference(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The reference, when asked (a bare code counts whatever its intent)."""
        return answer_when_asked(tracker, "booking_reference", looks_like_reference)

    async def validate_booking_reference(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """The code: letters and digits, spaces and dashes ignored, upper case."""
        words = [w for w in str(value).upper().replace("-", "").split() if w.isalnum()]
        code = next((w for w in reversed(words) if 5 <= len(w) <= 12), None)
        if code is None:
            dispatcher.utter_message(response="utter_ask_booking_reference")
        return {"booking_reference": code}


class ActionLookupBooking(Action):
    """Finds the booking by reference and phone, then does what was asked."""

    def name(self) -> str:
        """Action name used in the rules, after ``lookup_form``."""
        return "action_lookup_booking"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Shows, offers to cancel, or starts rebooking the found booking."""
        reference = str(tracker.get_slot("booking_reference") or "")
        phone = str(tracker.get_slot("patient_phone") or "")
        try:
            booking = await call_scheduler(
                get_scheduler().get_booking, reference, phone
            )
        except BookingNotFound:
            return self._not_found(dispatcher, tracker)
        except BackendUnavailable:
            logger.warning("Scheduler unavailable while looking up a booking.")
            dispatcher.utter_message(response="utter_scheduler_down")
            utter_contact(dispatcher)
            return reset("booking_reference", "booking_task")
        task = tracker.get_slot("booking_task")
        values = booking_values(booking)
        if booking.status != "booked":
            dispatcher.utter_message(
                response="utter_booking_already_cancelled", **values
            )
            return reset("booking_reference", "booking_task")
        if task == "cancel":
            dispatcher.utter_message(response="utter_confirm_cancel", **values)
            return [
                SlotSet("found_booking", booking.reference),
                SlotSet("cancel_pending", True),
            ]
        if task == "reschedule":
            dispatcher.utter_message(response="utter_booking_details", **values)
            return [
                SlotSet("found_booking", booking.reference),
                SlotSet("visit_type", booking.slot.visit_type),
                SlotSet("patient_name", booking.patient.name),
                *reset(
                    "time_preference",
                    "appointment_slot",
                    "offered_slots",
                    "hold_id",
                    "booking_confirmed",
                    "scheduler_down",
                ),
                FollowupAction("booking_form"),
            ]
        dispatcher.utter_message(response="utter_booking_details", **values)
        return reset("booking_reference", "booking_task")

    def _not_found(
        self, dispatcher: CollectingDispatcher, tracker: Tracker
    ) -> List[EventType]:
        attempts = int(tracker.get_slot("lookup_attempts") or 0) + 1
        if attempts >= MAX_LOOKUP_ATTEMPTS:
            dispatcher.utter_message(response="utter_booking_not_found_final")
            utter_contact(dispatcher)
            return [
                SlotSet("lookup_attempts", 0),
                *reset("booking_reference", "patient_phone", "booking_task"),
            ]
        dispatcher.utter_message(response="utter_booking_not_found")
        return [
            SlotSet("lookup_attempts", attempts),
            *reset("booking_reference", "patient_phone"),
            FollowupAction("lookup_form"),
        ]


class ActionCancelBooking(Action):
    """Cancels the booking found by ``action_lookup_booking``, after a yes."""

    def name(self) -> str:
        """Action name used in the rules."""
        return "action_cancel_booking"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Cancels with an idempotency key, so a retry cancels once."""
        reference = str(tracker.get_slot("found_booking") or "")
        phone = str(tracker.get_slot("patient_phone") or "")
        key = idempotency_key(tracker.sender_id, reference, "cancel")
        done = [
            SlotSet("cancel_pending", False),
            *reset("found_booking", "booking_task"),
        ]
        try:
            booking = await call_scheduler(
                get_scheduler().cancel, reference, phone, key
            )
        except BookingNotFound:
            dispatcher.utter_message(response="utter_booking_not_found")
            return done
        except BackendUnavailable:
            dispatcher.utter_message(response="utter_scheduler_down")
            utter_contact(dispatcher)
            return done
        logger.info("Cancelled %s.", booking.reference)
        dispatcher.utter_message(response="utter_cancelled", **booking_values(booking))
        return done


# --- Call-back requests when the scheduler is down ----------------------------------


class ValidateCallbackForm(ContactAnswers, FormValidationAction):
    """Name and number for a call back; answers given earlier are kept."""

    def name(self) -> str:
        """Name of the validation action of ``callback_form``."""
        return "validate_callback_form"


class ActionRequestCallback(Action):
    """Stores the call-back request where staff see it (``staff callbacks``)."""

    def name(self) -> str:
        """Action name used in the rules, after ``callback_form``."""
        return "action_request_callback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Saves name, number, preferred time and visit type; nothing is lost."""
        store = CallbackStore(default_db_path())
        visit = tracker.get_slot("visit_type")
        note = f"Visit type: {visit_type_name(visit)}" if visit else ""
        phone = str(tracker.get_slot("patient_phone"))
        await call_scheduler(
            store.add,
            str(tracker.get_slot("patient_name") or ""),
            phone,
            str(tracker.get_slot("time_preference") or ""),
            note,
            tracker.sender_id,
        )
        dispatcher.utter_message(response="utter_callback_stored", phone=phone)
        return [
            SlotSet("callback_offered", False),
            *reset(*BOOKING_SLOTS, "scheduler_down", "booking_task"),
        ]
