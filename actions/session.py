"""Session start: introduce the assistant once per conversation session."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.settings import clinic


class ActionSessionStart(Action):
    """Starts a session: carries slots over and says what the assistant is.

    Whatever the patient's first message is, the first reply says that this is a
    virtual assistant and not medical advice, exactly once per session.
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
        dispatcher.utter_message(response="utter_intro", **clinic().template_values())
        events.append(ActionExecuted("action_listen"))
        return events
