"""Booking an appointment in conversation: ``booking_form`` and its actions.

Visit type, preferred time, one of up to five open slots near it, full name, mobile
number, then a read-back to confirm; ``action_book_appointment`` books it. Any answer
can be changed before confirming. Shared helpers: ``common.py``; the open times:
``offers.py``; rescheduling, cancelling and look-ups: ``lookup.py``; call-backs when
the scheduler is down: ``callback.py``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.booking.common import (
    ContactAnswers,
    booking_values,
    call_scheduler,
    entity_values,
    has_time_hint,
    idempotency_key,
    is_answer,
    is_short_name,
    known_visit_types,
    latest_intent,
    latest_text,
    offer_callback,
    offer_finder,
    reads_as_time,
    release_hold,
    scheduler,
    settings,
    spacy_hints,
    time_in_request,
    visit_type_in_message,
    visit_type_in_sentence,
)
from actions.booking.offers import slot_from_entry
from actions.booking.parsing import (
    display_phone,
    match_visit_type,
    name_as_written,
    pick_offered,
    written_as_name,
)
from actions.booking.slots import (
    BOOKING,
    CALLBACK,
    CONTACT,
    LOOKUP,
    OFFER,
    PICK,
    REMINDER,
    TASK,
)
from scheduling.base import (
    BackendUnavailable,
    Booking,
    BookingNotFound,
    InvalidRequest,
    Patient,
    SlotUnavailable,
)
from scheduling.timeparse import TimePreferenceError

# What each answer the patient can change at the read-back makes stale.
CHANGE_CLEARS = {
    "time": OFFER,
    "visit_type": BOOKING,
    "name": CONTACT.only("patient_name"),
    "phone": CONTACT.only("patient_phone"),
}
CHANGE_WORDS = {
    "time": ("time", "day", "date", "slot", "when", "other times", "none of those"),
    "visit_type": ("type", "visit", "treatment", "service"),
    "name": ("name",),
    "phone": ("phone", "number", "cell", "mobile"),
}

logger = logging.getLogger(__name__)


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
        # The scheduler is tried again; found_booking (a reschedule's old booking)
        # is not this booking's to cancel.
        # A new booking replaces what a reminder was about.
        events = BOOKING.reset() + LOOKUP.only("found_booking").reset()
        events += TASK.only("scheduler_down").reset() + REMINDER.reset()
        events.append(SlotSet("booking_task", "book"))
        # A visit type or a time named in the request itself counts ("book dry
        # needling as soon as possible", "any openings friday?"): the form checks
        # them when it starts, as if they had been answers to its questions.
        visit = visit_type_in_message(tracker)
        if visit:
            events.append(SlotSet("visit_type", visit))
        if time_in_request(latest_text(tracker)):
            events.append(SlotSet("time_preference", latest_text(tracker)))
        # The form comes next anyway (the rule). This event also ends the run of
        # slot events above: the form's validation at its start takes every slot
        # event at the end of the tracker as its own, and would drop the open
        # times it finds for the time named here, as "offered_slots" was reset.
        events.append(FollowupAction("booking_form"))
        return events


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
        if _is_time_change(tracker):
            return {"time_preference": latest_text(tracker)}
        return {}

    async def extract_patient_name(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The name, when asked, unless the patient changes the time instead."""
        if _is_time_change(tracker):
            return {}
        return await super().extract_patient_name(dispatcher, tracker, domain)

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
            # By SMS the read-back also asks about a reminder: "1" answers both.
            return {"booking_confirmed": True} | _consent_given(tracker)
        if intent == "deny":
            dispatcher.utter_message(response="utter_what_to_change")
            return {"booking_confirmed": None}
        if intent in ("change_answer", "inform"):
            field = _field_to_change(tracker)
            if field:
                return CHANGE_CLEARS[field].cleared_values() | {
                    "booking_confirmed": None
                }
            if intent == "change_answer":
                dispatcher.utter_message(response="utter_what_to_change")
                return {"booking_confirmed": None}
        return {}

    async def extract_reminder_consent(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """Yes or no to a reminder by text, when asked."""
        if tracker.get_slot("requested_slot") != "reminder_consent":
            return {}
        given = _consent_given(tracker)
        if given:
            return given
        intent = latest_intent(tracker)
        if intent in ("affirm", "deny"):
            return {"reminder_consent": intent == "affirm"}
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
        if value is None:  # cleared (a new booking): nothing to check
            return {"visit_type": None}
        known = known_visit_types()
        key = value if value in dict(known) else match_visit_type(str(value), known)
        if key is None:
            dispatcher.utter_message(response="utter_visit_type_not_understood")
            return {"visit_type": None}
        previous = tracker.get_slot("visit_type")
        if tracker.get_slot("appointment_slot") and key != previous:
            await release_hold(tracker.get_slot("hold_id"))
            return {"visit_type": key} | OFFER.cleared_values()
        waiting = tracker.get_slot("time_preference")
        if (
            waiting
            and not tracker.get_slot("offered_slots")
            and "time_preference" not in tracker.slots_to_validate()
        ):
            # The first message named a time but no visit type: search it now.
            return {"visit_type": key} | await self._search(
                key, str(waiting), dispatcher, tracker
            )
        return {"visit_type": key}

    async def validate_time_preference(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """Parses the time and finds open slots near it, ready to offer.

        A time named before the visit type (only the first message can) waits for
        it: ``validate_visit_type`` searches then.
        """
        visit_type = tracker.get_slot("visit_type")
        if value is None:
            return {"time_preference": None}
        if not visit_type:
            return {"time_preference": str(value)}
        return await self._search(visit_type, str(value), dispatcher, tracker)

    async def _search(
        self,
        visit_type: str,
        value: str,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
    ) -> Dict[str, Any]:
        """Open slots of the visit type near the preferred time, ready to offer."""
        try:
            offers = await offer_finder().find(visit_type, str(value))
        except TimePreferenceError as error:
            _utter_time_problem(dispatcher, error.reason)
            return {"time_preference": None}
        except BackendUnavailable:
            logger.warning("Scheduler unavailable while searching slots.")
            return {"time_preference": str(value), "scheduler_down": True}
        await release_hold(tracker.get_slot("hold_id"))
        if not offers:
            dispatcher.utter_message(
                response="utter_no_slots",
                visit_type_name=visit_type_in_sentence(visit_type),
            )
            return OFFER.cleared_values()
        if not offers[0].get("in_window", True):
            dispatcher.utter_message(response="utter_nearest_times")
        return {
            "time_preference": str(value),
            "offered_slots": offers,
        } | PICK.cleared_values()

    async def validate_appointment_slot(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """Holds the chosen slot; if it is gone, offers the next ones."""
        if value is None:  # cleared (a new booking or time): nothing to check
            return {"appointment_slot": None}
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
        backend = scheduler()
        try:
            hold = await call_scheduler(
                backend.hold,
                slot_from_entry(choice),
                timedelta(minutes=settings().hold_minutes),
            )
        except SlotUnavailable:
            dispatcher.utter_message(response="utter_slot_taken")
            return await self._fresh_offers(tracker)
        except BackendUnavailable:
            return {"appointment_slot": None, "scheduler_down": True}
        return {"appointment_slot": choice["id"], "hold_id": hold.hold_id}

    async def _fresh_offers(self, tracker: Tracker) -> Dict[str, Any]:
        offers = await offers_again(tracker)
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

    async def validate_reminder_consent(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[str, Any]:
        """A yes or a no; anything else (cleared) is asked again."""
        return {"reminder_consent": value if isinstance(value, bool) else None}


def _consent_given(tracker: Tracker) -> Dict[str, Any]:
    """The reminder answer of a button ("yes" or "no"), if the message has one."""
    values = entity_values(tracker, "reminder_consent")
    return {"reminder_consent": values[0] == "yes"} if values else {}


def _is_time_change(tracker: Tracker) -> bool:
    """A new day or time at the name question or the read-back ("make it friday").

    Only text the time parser reads as a day or time counts. A name that holds a
    month or a day ("June Carter", written like a name) is the name. At the phone
    question only a number counts: "at 3pm tomorrow" there is no phone number, and
    the read-back offers to change the time.
    """
    requested = tracker.get_slot("requested_slot")
    if requested not in ("booking_confirmed", "patient_name"):
        return False
    if not (tracker.get_slot("time_preference") and has_time_hint(tracker)):
        return False
    if not reads_as_time(latest_text(tracker)):
        return False  # "12345": spaCy's DATE, but no day or time to change to
    if requested == "patient_name":
        name = name_as_written(latest_text(tracker), spacy_hints(tracker, "PERSON"))
        return name is None or not written_as_name(name)
    return True


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
            horizon_days=settings().booking_horizon_days,
        )
    else:
        dispatcher.utter_message(response="utter_time_not_understood")


async def offers_again(tracker: Tracker) -> List[Dict[str, Any]]:
    """The open times for the visit type and time asked for, after one was lost.

    None at all when the time no longer reads (it has passed) or the scheduler is
    down: the patient is then asked for a time again.
    """
    try:
        return await offer_finder().find(
            str(tracker.get_slot("visit_type")),
            str(tracker.get_slot("time_preference")),
        )
    except (TimePreferenceError, BackendUnavailable):
        return []


def chosen_offer(tracker: Tracker) -> Optional[Dict[str, Any]]:
    """The offered slot the patient picked (and holds), if any."""
    picked = tracker.get_slot("appointment_slot")
    offered = tracker.get_slot("offered_slots") or []
    return next((entry for entry in offered if entry.get("id") == picked), None)


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
            for visit in settings().visit_types
        ]
        dispatcher.utter_message(response="utter_which_visit_type", buttons=buttons)
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
        # Times outside the window asked for follow "Nothing is open at that time."
        nearest = not offered[0].get("in_window", True)
        dispatcher.utter_message(
            response="utter_offer_nearest_times" if nearest else "utter_offer_times",
            visit_type_name=visit_type_in_sentence(tracker.get_slot("visit_type")),
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
        chosen = chosen_offer(tracker)
        when = chosen["label"] if chosen else "the time you picked"
        visit = visit_type_in_sentence(tracker.get_slot("visit_type"))
        phone = display_phone(str(tracker.get_slot("patient_phone") or ""))
        dispatcher.utter_message(
            response="utter_check_booking",
            visit_type_name=visit,
            when=when,
            patient_name=tracker.get_slot("patient_name"),
            phone=phone,
        )
        return []


class ActionAskReminderConsent(Action):
    """Asks whether the clinic may text a reminder to the number just given."""

    def name(self) -> str:
        """Action name: Rasa calls it to request ``reminder_consent``."""
        return "action_ask_reminder_consent"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """The question, with the number as the patient reads it."""
        phone = display_phone(str(tracker.get_slot("patient_phone") or ""))
        dispatcher.utter_message(response="utter_ask_reminder_consent", phone=phone)
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
        chosen = chosen_offer(tracker)
        if chosen is None or tracker.get_slot("booking_confirmed") is not True:
            return [FollowupAction("booking_form")]
        patient = Patient(
            name=str(tracker.get_slot("patient_name")),
            phone=str(tracker.get_slot("patient_phone")),
        )
        hold_id = tracker.get_slot("hold_id")
        key = idempotency_key(tracker.sender_id, chosen["id"], hold_id, "book")
        backend = scheduler()
        try:
            booking = await call_scheduler(
                backend.book,
                slot_from_entry(chosen),
                patient,
                key,
                hold_id,
                reminder_consent=tracker.get_slot("reminder_consent") is True,
            )
        except SlotUnavailable:
            dispatcher.utter_message(response="utter_slot_taken")
            return await self._offer_next(tracker)
        except (BackendUnavailable, InvalidRequest) as error:
            # InvalidRequest: the scheduler refused the request itself (e.g. a
            # reused idempotency key); the patient gets the same way out as in an
            # outage. Any other error is a bug and fails the action loudly.
            logger.warning("Booking failed: %s.", type(error).__name__)
            return [SlotSet("scheduler_down", True), *offer_callback(dispatcher)]
        logger.info("Booked %s (slot %s).", booking.reference, chosen["id"])
        events = await self._finish(dispatcher, tracker, booking)
        if booking.reminder_consent:  # as stored: a backend may not keep it
            dispatcher.utter_message(response="utter_reminder_promised")
        # found_booking: the rescheduled booking, now cancelled.
        return events + BOOKING.reset() + LOOKUP.only("found_booking").reset()

    async def _offer_next(self, tracker: Tracker) -> List[EventType]:
        offers = await offers_again(tracker)
        return [
            SlotSet("offered_slots", offers or None),
            *PICK.reset(),
            *([] if offers else OFFER.only("time_preference").reset()),
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
            await call_scheduler(scheduler().cancel, old_reference, phone, key)
        except (BookingNotFound, BackendUnavailable):
            # The new time is booked; the old one must not silently stay.
            logger.warning(
                "Rescheduled to %s but could not cancel %s.",
                booking.reference,
                old_reference,
            )
            dispatcher.utter_message(response="utter_booked", **booking_values(booking))
            dispatcher.utter_message(
                response="utter_old_booking_not_cancelled",
                old_reference=old_reference,
            )
            return []
        dispatcher.utter_message(
            response="utter_rescheduled", **booking_values(booking)
        )
        return []


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
        return (
            BOOKING.reset()
            + LOOKUP.reset()
            + TASK.reset()
            + CALLBACK.reset()
            + REMINDER.reset()
        )
