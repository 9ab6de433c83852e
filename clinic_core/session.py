"""Session start in the Rasa server: the clinic's facts and the introduction.

Every session starts with Rasa's own ``action_session_start``, which runs in the Rasa
server. :class:`ClinicSessionStart` adds to it the clinic's facts from ``clinic.yml``
as slots (for responses such as ``utter_faq/clinic_location``) and the introduction
that says what the assistant is (``utter_intro``), so the disclosure and every answer
that names the clinic never depend on the action server being up.

``install()`` makes Rasa use it in place of its default session start; config.yml
switches it on (``session_start``, see ``clinic_core/extensions.py``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

import rasa.core.actions.action as rasa_actions
from rasa.core.actions.action import ActionSessionStart, create_bot_utterance
from rasa.core.channels.channel import OutputChannel
from rasa.core.nlg import NaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event, SlotSet
from rasa.shared.core.trackers import DialogueStateTracker

from clinic_common.clinic_config import ClinicConfigError, ClinicInfo, clinic

logger = logging.getLogger(__name__)

INTRO_RESPONSE = "utter_intro"
UNKNOWN_CLINIC_NAME = "our clinic"


def fact_slots(info: ClinicInfo) -> Dict[str, Any]:
    """The slots through which responses read the clinic's facts."""
    return {
        **info.template_values(),
        "clinic_contact_sentence": info.contact_sentence(),
        "clinic_facts_loaded": True,
    }


class ClinicSessionStart(ActionSessionStart):
    """Rasa's session start, plus the clinic's facts and the introduction, once.

    Slots carry over as the domain says (Rasa's behaviour); the clinic's facts are
    set afresh. Whatever the patient's first message is, the first reply of the
    session says that this is a virtual assistant and not medical advice.
    """

    async def run(
        self,
        output_channel: Optional[OutputChannel],
        nlg: NaturalLanguageGenerator,
        tracker: DialogueStateTracker,
        domain: Domain,
    ) -> List[Event]:
        """Starts the session, sets the facts and introduces the assistant."""
        events = await super().run(output_channel, nlg, tracker, domain)
        facts: List[Event] = []
        try:
            info = clinic()
        except ClinicConfigError as error:
            # A broken clinic.yml must not stop the session (and with it the
            # red-flag rules): no facts are shown, none are made up.
            logger.error("Clinic facts not loaded: %s", error)
            values = {"clinic_name": UNKNOWN_CLINIC_NAME}
        else:
            facts = [SlotSet(name, value) for name, value in fact_slots(info).items()]
            values = info.template_values()
        if output_channel is None:
            # A session an external event opened (trigger_intent: the reminder
            # job): Rasa has no channel to speak on, so no introduction; the
            # reminder names the clinic and how to opt out.
            return [*events[:-1], *facts, events[-1]]
        intro = await nlg.generate(
            INTRO_RESPONSE, tracker, output_channel.name(), **values
        )
        said: List[Event] = []
        if intro:
            intro["utter_action"] = INTRO_RESPONSE
            said.append(create_bot_utterance(intro))
        # Rasa's events end with ``action_listen``: the facts and the introduction
        # belong to the session start, before it.
        return [*events[:-1], *facts, *said, events[-1]]


_RASAS_DEFAULTS: Optional[Callable[..., List[rasa_actions.Action]]] = None


def _default_actions(*args: Any, **kwargs: Any) -> List[rasa_actions.Action]:
    assert _RASAS_DEFAULTS is not None
    return [
        ClinicSessionStart() if isinstance(action, ActionSessionStart) else action
        for action in _RASAS_DEFAULTS(*args, **kwargs)
    ]


def install() -> None:
    """Makes Rasa's default ``action_session_start`` this one (idempotent)."""
    global _RASAS_DEFAULTS
    if _RASAS_DEFAULTS is None:
        _RASAS_DEFAULTS = rasa_actions.default_actions
        rasa_actions.default_actions = _default_actions


def uninstall() -> None:
    """Puts Rasa's own default actions back (for tests)."""
    global _RASAS_DEFAULTS
    if _RASAS_DEFAULTS is not None:
        rasa_actions.default_actions = _RASAS_DEFAULTS
        _RASAS_DEFAULTS = None
