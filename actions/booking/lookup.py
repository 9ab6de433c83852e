"""Finding a booking by reference and phone: check, reschedule, cancel.

``lookup_form`` asks for the booking reference and the phone number it was booked
with; nothing about a booking is said until both match.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.booking.common import (
    ContactAnswers,
    answer_when_asked,
    booking_values,
    call_scheduler,
    idempotency_key,
    latest_intent,
    looks_like_phone,
    looks_like_reference,
    scheduler,
)
from actions.booking.slots import CONTACT, LOOKUP, OFFER, REMINDER, TASK
from actions.handoff import utter_contact
from scheduling.base import (
    BOOKED,
    BackendUnavailable,
    Booking,
    BookingNotFound,
)

logger = logging.getLogger(__name__)

MAX_LOOKUP_ATTEMPTS = 3


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
        # Another task replaces what a reminder was about.
        return [*LOOKUP.reset(), *REMINDER.reset(), SlotSet("booking_task", task)]


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
        """The code: letters and digits, spaces and dashes ignored, upper case.

        A reference cleared to be asked again (a new lookup, a wrong one) is not
        checked: the form asks for it, once.
        """
        if value is None:
            return {"booking_reference": None}
        if looks_like_phone(str(value)):
            # A phone number has the shape of a code; the form asks for the code
            # again, after saying why.
            dispatcher.utter_message(response="utter_reference_not_phone")
            return {"booking_reference": None}
        words = [w for w in str(value).upper().replace("-", "").split() if w.isalnum()]
        code = next((w for w in reversed(words) if 5 <= len(w) <= 12), None)
        if code is None:
            dispatcher.utter_message(response="utter_invalid_booking_reference")
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
            booking = await call_scheduler(scheduler().get_booking, reference, phone)
        except BookingNotFound:
            return self._not_found(dispatcher, tracker)
        except BackendUnavailable:
            logger.warning("Scheduler unavailable while looking up a booking.")
            return scheduler_down(dispatcher)
        return act_on_booking(
            dispatcher, booking, str(tracker.get_slot("booking_task") or "check")
        )

    def _not_found(
        self, dispatcher: CollectingDispatcher, tracker: Tracker
    ) -> List[EventType]:
        attempts = int(tracker.get_slot("lookup_attempts") or 0) + 1
        if attempts >= MAX_LOOKUP_ATTEMPTS:
            dispatcher.utter_message(response="utter_booking_not_found_final")
            utter_contact(dispatcher)
            # The number that did not match is not kept for a later form.
            return lookup_over() + CONTACT.only("patient_phone").reset()
        dispatcher.utter_message(response="utter_booking_not_found")
        return [
            SlotSet("lookup_attempts", attempts),
            # Both are asked again: either may be the wrong one.
            *LOOKUP.only("booking_reference").reset(),
            *CONTACT.only("patient_phone").reset(),
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
        try:
            booking = await call_scheduler(scheduler().cancel, reference, phone, key)
        except BookingNotFound:
            dispatcher.utter_message(response="utter_booking_not_found")
            return lookup_over()
        except BackendUnavailable:
            return scheduler_down(dispatcher)
        logger.info("Cancelled %s.", booking.reference)
        dispatcher.utter_message(response="utter_cancelled", **booking_values(booking))
        return lookup_over()


def act_on_booking(
    dispatcher: CollectingDispatcher,
    booking: Booking,
    task: str,
    time_preference: Optional[str] = None,
) -> List[EventType]:
    """Shows ``booking``, asks to cancel it, or starts the booking form to move it.

    Shared by the lookup and the replies to a reminder, which know the booking
    without asking (``booking_task`` and ``patient_phone`` are the caller's to
    set). A time already named ("can we do Thursday instead") is read
    by the booking form as its first answer.
    """
    values = booking_values(booking)
    if booking.status != BOOKED:
        dispatcher.utter_message(response="utter_booking_already_cancelled", **values)
        return lookup_over()
    found = SlotSet("found_booking", booking.reference)
    if task == "cancel":
        dispatcher.utter_message(response="utter_confirm_cancel", **values)
        return [found, SlotSet("cancel_pending", True)]
    dispatcher.utter_message(response="utter_booking_details", **values)
    if task != "reschedule":
        return lookup_over()
    return [
        found,
        SlotSet("visit_type", booking.slot.visit_type),
        SlotSet("patient_name", booking.patient.name),
        *OFFER.reset(),
        *([SlotSet("time_preference", time_preference)] if time_preference else []),
        # The scheduler is tried again for the new time.
        *TASK.only("scheduler_down").reset(),
        FollowupAction("booking_form"),
    ]


def lookup_over() -> List[EventType]:
    """Clears the lookup and its task once it is done, or cannot go on."""
    return LOOKUP.reset() + TASK.reset()


def scheduler_down(dispatcher: CollectingDispatcher) -> List[EventType]:
    """Says the scheduler is down and how to reach the clinic; the lookup ends."""
    dispatcher.utter_message(response="utter_scheduler_down")
    utter_contact(dispatcher)
    return lookup_over()
