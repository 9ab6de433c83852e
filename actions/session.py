"""Session start: load the clinic's facts and introduce the assistant once."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.settings import ClinicInfo, clinic


def fact_slots(info: ClinicInfo) -> Dict[str, Any]:
    """The slots through which responses read the clinic's facts."""
    return {
        **info.template_values(),
        "clinic_contact_sentence": info.contact_sentence(),
        "clinic_facts_loaded": True,
    }


class ActionSessionStart(Action):
    """Starts a session, loads the clinic's facts and says what the assistant is.

    Slots carry over when the domain says so; the clinic's facts from clinic.yml are
    set afresh as slots for the responses that use them. Whatever the patient's first
    message is, the first reply says that this is a virtual assistant and not medical
    advice, exactly once per session.
    """

    def name(self) -> str:
        """Overrides Rasa's default session start."""
        return "action_session_start"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        """Starts the session and introduces the assistant."""
        events: List[EventType] = [SessionStarted()]
        if domain.get("session_config", {}).get("carry_over_slots_to_new_session"):
            events.extend(
                SlotSet(name, value)
                for name, value in tracker.current_slot_values().items()
                if value is not None and name != "session_started_metadata"
            )
        info = clinic()
        events.extend(SlotSet(name, value) for name, value in fact_slots(info).items())
        dispatcher.utter_message(response="utter_intro", **info.template_values())
        events.append(ActionExecuted("action_listen"))
        return events
