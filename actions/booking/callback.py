"""Call-back requests when the scheduler is down: nothing the patient typed is lost."""

from __future__ import annotations

import logging
from typing import Any, Dict, List

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.booking.common import (
    SAFETY_AND_STOP,
    ContactAnswers,
    call_scheduler,
    callback_store,
    latest_intent,
    latest_text,
    visit_type_name,
)
from actions.booking.parsing import display_phone
from actions.booking.slots import BOOKING, CALLBACK, TASK
from clinic_nlu.text import has_words
from scheduling.base import BackendUnavailable

logger = logging.getLogger(__name__)

# --- Call-back requests when the scheduler is down ----------------------------------


class ValidateCallbackForm(ContactAnswers, FormValidationAction):
    """Name and number for a call back; answers given earlier are kept.

    A patient who asked for a person is also asked what it is about; a call back
    offered because the scheduler is down is about the booking.
    """

    def name(self) -> str:
        """Name of the validation action of ``callback_form``."""
        return "validate_callback_form"

    async def required_slots(
        self,
        domain_slots: List[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> List[str]:
        """Name and phone; the reason too when the patient asked for a person."""
        if tracker.get_slot("handoff_callback"):
            return domain_slots
        return [slot for slot in domain_slots if slot != "callback_reason"]

    async def extract_callback_reason(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        """The reason, when asked: whatever the patient writes, in their words.

        A question ("how much is an injection?") is a reason to call too; only a red
        flag or "never mind" is left to the rules.
        """
        if tracker.get_slot("requested_slot") != "callback_reason":
            return {}
        if latest_intent(tracker) in SAFETY_AND_STOP:
            return {}
        text = latest_text(tracker).strip()
        return {"callback_reason": text} if has_words(text) else {}


class ActionRequestCallback(Action):
    """Stores the call-back request where staff see it (``staff callbacks``)."""

    def name(self) -> str:
        """Action name used in the rules, after ``callback_form``."""
        return "action_request_callback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Saves name, number, preferred time and visit type or reason."""
        store = callback_store()
        handoff = bool(tracker.get_slot("handoff_callback"))
        visit = tracker.get_slot("visit_type")
        if handoff:
            note = f"Reason: {tracker.get_slot('callback_reason') or ''}"
        else:
            note = f"Visit type: {visit_type_name(visit)}" if visit else ""
        phone = str(tracker.get_slot("patient_phone"))
        try:
            await call_scheduler(
                store.add,
                str(tracker.get_slot("patient_name") or ""),
                phone,
                str(tracker.get_slot("time_preference") or ""),
                note,
                tracker.sender_id,
            )
        except BackendUnavailable:
            # Neither the call-back database nor its spool could be written: the
            # patient must not be told it was taken.
            logger.error("A call-back request could not be stored.")
            dispatcher.utter_message(response="utter_action_unavailable")
            return CALLBACK.only("callback_offered").reset()
        dispatcher.utter_message(
            response="utter_callback_stored_handoff"
            if handoff
            else "utter_callback_stored",
            phone=display_phone(phone),
        )
        return BOOKING.reset() + TASK.reset() + CALLBACK.reset()
