"""Appointment reminders in the patient's SMS conversation (issue 14).

The reminder job (``scheduling/reminders.py``'s side) triggers the intent
``EXTERNAL_appointment_reminder`` with the booking's reference in the conversation
of the patient's number; ``action_send_reminder`` utters the reminder there and
remembers the booking (slot ``reminder_reference``, kept across sessions). The
replies the reminder asks for then refer to that booking without asking for its
reference: 1 or a yes confirms it, 2 or a new day starts moving it, 3 or "I can't
make it" asks whether to cancel it (the cancellation's own rules take the yes).
Digits never reach Twilio's opt-out words (CANCEL, STOP, ...), which the reminder
never asks for.
"""

from __future__ import annotations

import logging
import re
from typing import List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.booking.common import (
    booking_values,
    call_scheduler,
    entity_values,
    has_time_hint,
    latest_intent,
    latest_text,
    scheduler,
)
from actions.booking.lookup import act_on_booking, scheduler_down
from actions.booking.slots import REMINDER
from scheduling.base import BOOKED, BackendUnavailable, Booking, BookingNotFound
from scheduling.reminders import reminder_text

logger = logging.getLogger(__name__)

CONFIRM, RESCHEDULE, CANCEL = "confirm", "reschedule", "cancel"
# The numbered replies the reminder's wording offers (clinic.yml).
NUMBERED_REPLIES = {1: CONFIRM, 2: RESCHEDULE, 3: CANCEL}
# The same replies in words, as the classifier reads them.
INTENT_REPLIES = {
    "affirm": CONFIRM,
    "reschedule_appointment": RESCHEDULE,
    # "could we try another day instead": a change, as at the booking's read-back.
    "change_answer": RESCHEDULE,
    "cancel_appointment": CANCEL,
}
# A reply that starts with a number: "2", "#2", "2.", "option 2", "3 please".
LEADING_NUMBER = re.compile(r"(?:option\s*)?#?\s*(\d+)\b", re.IGNORECASE)


def reminder_reply(tracker: Tracker) -> Optional[str]:
    """What the patient's reply to the reminder asks for, or None if unclear.

    A number counts first (only 1, 2 and 3 are offered); then the intent; then a
    day or time alone ("thursday?"), which asks to move the visit there.
    """
    number = LEADING_NUMBER.match(latest_text(tracker))
    if number:
        return NUMBERED_REPLIES.get(int(number.group(1)))
    reply = INTENT_REPLIES.get(latest_intent(tracker) or "")
    if reply is None and has_time_hint(tracker):
        return RESCHEDULE
    return reply


class ActionSendReminder(Action):
    """Utters the reminder of the booking the reminder job names."""

    def name(self) -> str:
        """Action name used in the rule of ``EXTERNAL_appointment_reminder``."""
        return "action_send_reminder"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """The reminder, unless the booking is gone: then nothing is said.

        The conversation is the patient's number (``sender_id``), so a reference
        is only found with the number it was booked with.
        """
        references = entity_values(tracker, "booking_reference")
        reference = references[0] if references else ""
        try:
            booking = await call_scheduler(
                scheduler().get_booking, reference, tracker.sender_id
            )
        except BookingNotFound:
            logger.info("No reminder: booking %s not found for this number.", reference)
            return []
        except BackendUnavailable:
            logger.warning("No reminder for %s: scheduler unavailable.", reference)
            return []
        if booking.status != BOOKED:
            logger.info("No reminder: booking %s is %s.", reference, booking.status)
            return []
        dispatcher.utter_message(
            response="utter_reminder", reminder=reminder_text(booking)
        )
        return [SlotSet("reminder_reference", booking.reference)]


class ActionAnswerReminder(Action):
    """Confirms, starts moving or asks to cancel the reminded booking."""

    def name(self) -> str:
        """Action name used in data/rules/reminders.yml."""
        return "action_answer_reminder"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Acts on the reply; an unclear one gets the three choices again."""
        reply = reminder_reply(tracker)
        if reply is None:
            dispatcher.utter_message(response="utter_reminder_reply_unclear")
            return []
        reference = str(tracker.get_slot("reminder_reference") or "")
        phone = tracker.sender_id
        backend = scheduler()
        try:
            booking = await call_scheduler(backend.get_booking, reference, phone)
            if booking.status == BOOKED and reply == CONFIRM:
                booking = await call_scheduler(backend.confirm, reference, phone)
            elif booking.status == BOOKED and reply == RESCHEDULE:
                await call_scheduler(backend.note_reschedule_request, reference, phone)
        except BookingNotFound:
            dispatcher.utter_message(response="utter_booking_not_found")
            return REMINDER.reset()
        except BackendUnavailable:
            logger.warning("Scheduler unavailable while answering a reminder.")
            return scheduler_down(dispatcher)
        logger.info("Reminder of %s answered: %s.", booking.reference, reply)
        if reply == CONFIRM:
            return self._confirmed(dispatcher, booking)
        # Moving or cancelling it ends what the reminder was about.
        time_named = latest_text(tracker) if has_time_hint(tracker) else None
        return [
            *REMINDER.reset(),
            SlotSet("booking_task", reply),
            SlotSet("patient_phone", booking.patient.phone),
            *act_on_booking(dispatcher, booking, reply, time_named),
        ]

    @staticmethod
    def _confirmed(
        dispatcher: CollectingDispatcher, booking: Booking
    ) -> List[EventType]:
        """Thanks the patient; the booking stays reminded (a later 3 still cancels)."""
        values = booking_values(booking)
        if booking.status != BOOKED:
            dispatcher.utter_message(
                response="utter_booking_already_cancelled", **values
            )
            return REMINDER.reset()
        dispatcher.utter_message(response="utter_reminder_confirmed", **values)
        return []
