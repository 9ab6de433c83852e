"""Call-back requests when the scheduler is down: nothing the patient typed is lost."""

from __future__ import annotations

import logging
from typing import List

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.booking_common import (
    BOOKING_SLOTS,
    ContactAnswers,
    call_scheduler,
    callback_store,
    reset,
    visit_type_name,
)
from actions.scheduling.base import BackendUnavailable

logger = logging.getLogger(__name__)

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
        store = callback_store()
        visit = tracker.get_slot("visit_type")
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
            return [SlotSet("callback_offered", False)]
        dispatcher.utter_message(response="utter_callback_stored", phone=phone)
        return [
            SlotSet("callback_offered", False),
            *reset(*BOOKING_SLOTS, "scheduler_down", "booking_task"),
        ]
