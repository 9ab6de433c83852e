"""Pointing patients to the clinic's staff, with only the facts in ``clinic.yml``."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.settings import clinic


def utter_contact(dispatcher: CollectingDispatcher) -> None:
    """Gives the clinic's contact details, or the office's city when none is known."""
    if not utter_contact_details(dispatcher):
        dispatcher.utter_message(
            response="utter_contact_office", **clinic().template_values()
        )


def utter_contact_details(dispatcher: CollectingDispatcher) -> bool:
    """Gives the clinic's contact details (phone, address, website), if it has any.

    Whether it had any to give.
    """
    info = clinic()
    details = info.contact_details()
    if details:
        dispatcher.utter_message(
            response="utter_contact_details",
            contact_details=details,
            **info.template_values(),
        )
    return bool(details)


def offer_staff(dispatcher: CollectingDispatcher) -> List[EventType]:
    """Gives what the clinic has for reaching a person, outside any form.

    Its phone number (and other details) when configured. Without a number to
    call, any address or website, and a call back: staff see the request, with
    the reason in the patient's words, in ``staff callbacks``.
    """
    utter_contact_details(dispatcher)
    if clinic().phone:
        return []
    dispatcher.utter_message(response="utter_offer_handoff_callback")
    return [SlotSet("callback_offered", True), SlotSet("handoff_callback", True)]


class ActionContactStaff(Action):
    """Tells the patient how to reach a person at the clinic.

    With the clinic's phone number configured, that (and its other details) is the
    answer, and a form the patient is in goes on. Without one the assistant offers
    a call back; a booking or lookup under way stops first (nothing was booked or
    changed), since the patient asked for a person instead. In the call-back form
    itself the patient is told that this is the way to reach one.
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
        """Gives the clinic's phone, or offers a call back when it has none."""
        form = tracker.active_loop_name
        if not form or clinic().phone:
            return offer_staff(dispatcher)
        if form == "callback_form":
            dispatcher.utter_message(response="utter_callback_is_the_way")
            return []
        # Imported here: actions.booking.common imports this module.
        from actions.booking.form import ActionStopBooking

        stopped = await ActionStopBooking().run(dispatcher, tracker, domain)
        dispatcher.utter_message(response="utter_stopped_for_staff")
        return [
            ActiveLoop(None),  # as Rasa's action_deactivate_loop does
            SlotSet("requested_slot", None),
            *stopped,
            *offer_staff(dispatcher),
        ]


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
        """Answers with the configured hours, never with made-up ones.

        Without them: who can tell (outside a form, how to reach them).
        """
        hours = clinic().hours
        if hours:
            dispatcher.utter_message(response="utter_hours", hours=hours)
            return []
        dispatcher.utter_message(response="utter_hours_unknown")
        if tracker.active_loop_name:  # the form asks its question again
            return []
        return offer_staff(dispatcher)
