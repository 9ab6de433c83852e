"""Pointing patients to the clinic's staff, with only the facts in ``clinic.yml``."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.settings import clinic


def utter_contact(dispatcher: CollectingDispatcher) -> None:
    """Gives the clinic's contact details, or the office's city when none is known."""
    info = clinic()
    details = info.contact_details()
    if details:
        dispatcher.utter_message(
            response="utter_contact_details",
            contact_details=details,
            **info.template_values(),
        )
    else:
        dispatcher.utter_message(
            response="utter_contact_office", **info.template_values()
        )


class ActionContactStaff(Action):
    """Tells the patient how to reach a person at the clinic.

    With the clinic's phone number configured, that (and its other details) is the
    answer. Without one, the patient is offered a call back: staff see the request,
    with the reason in the patient's words, in ``staff callbacks``.
    """

    def name(self) -> str:
        """Action name used in the domain and rules."""
        return "action_contact_staff"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        """Gives the clinic's phone, or offers a call back when it has none.

        Inside a form only the contact is given, and the form asks its question again.
        """
        info = clinic()
        if info.phone or tracker.active_loop_name:
            utter_contact(dispatcher)
            return []
        details = info.contact_details()
        if details:  # an address or website, still no number to call
            dispatcher.utter_message(
                response="utter_contact_details",
                contact_details=details,
                **info.template_values(),
            )
        dispatcher.utter_message(response="utter_offer_handoff_callback")
        return [SlotSet("callback_offered", True), SlotSet("handoff_callback", True)]


class ActionAnswerHours(Action):
    """Gives the office hours if the clinic filled them in, else points to staff."""

    def name(self) -> str:
        """Action name used in the domain and rules."""
        return "action_answer_hours"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        """Answers with the configured hours, never with made-up ones."""
        hours = clinic().hours
        if hours:
            dispatcher.utter_message(response="utter_hours", hours=hours)
        else:
            dispatcher.utter_message(response="utter_hours_unknown")
            utter_contact(dispatcher)
        return []
