"""What the Rasa server does when a custom action cannot run.

Left alone, Rasa 3.6 waits up to five minutes for the action server, logs a failure
with the action server's reply (which repeats the whole tracker: names, phone
numbers, every message) and carries on as if the action had returned nothing. The
patient then gets silence, or "Sorry, I didn't understand that".

``install()`` (switched on in config.yml as ``action_guard``, see
``clinic_core/extensions.py``) wraps ``RemoteAction.run`` so that instead:

- a call gets ``ACTION_SERVER_TIMEOUT`` seconds (default 15);
- a failure (no connection, a timeout, an error status, a malformed reply) is logged
  as one line: the action, a conversation key (``clinic_core.privacy``) and the
  kind of failure, never the reply's body or the tracker;
- the turn is remembered as failed (:data:`FAILED_TURNS`): later custom actions of
  the same turn are not even tried, and ``SafetyPolicy`` closes the turn;
- a form's validation (``validate_<form>``) that fails rejects the form, as when the
  patient's message is not an answer, so that the rules can still answer a question
  that needs no action server (an FAQ, "are you a bot?"); ``SafetyPolicy`` then adds
  the "unavailable" reply and stops the form;
- any other action answers ``utter_action_unavailable`` (this part is unavailable
  right now, and the clinic's contact) once per turn, and not after red-flag
  guidance, stops any form, and ends the turn.

A rejection by the action server itself (HTTP 400, ``ActionExecutionRejection``) is
Rasa's ordinary form behaviour and passes through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Callable, Coroutine, List, Optional, Tuple

from aiohttp import ClientConnectionError
from rasa.core.actions.action import (
    ActionExecutionRejection,
    RemoteAction,
    create_bot_utterance,
)
from rasa.core.channels.channel import OutputChannel
from rasa.core.nlg import NaturalLanguageGenerator
from rasa.shared.core.constants import ACTION_LISTEN_NAME, REQUESTED_SLOT
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActiveLoop,
    BotUttered,
    Event,
    FollowupAction,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import ClientResponseError  # its text is the reply's body

from clinic_common import settings
from clinic_common.privacy import conversation_key

logger = logging.getLogger(__name__)

UNAVAILABLE_RESPONSE = "utter_action_unavailable"
# Guidance that already tells the patient what to do: no "unavailable" after it.
RED_FLAG_RESPONSES = frozenset({"utter_emergency", "utter_crisis"})
VALIDATION_PREFIX = "validate_"

RunMethod = Callable[
    [RemoteAction, OutputChannel, NaturalLanguageGenerator, DialogueStateTracker, Any],
    Coroutine[Any, Any, List[Event]],
]
_RASAS_RUN: Optional[RunMethod] = None

TurnKey = Tuple[str, float]


class FailedTurns:
    """The turns (conversation, patient message) in which a custom action failed.

    Kept in this process only, and bounded: a turn is handled by one Rasa server,
    and all that matters is the turn being handled now.
    """

    def __init__(self, size: int = 10_000) -> None:
        """Remembers at most ``size`` turns."""
        self._turns: OrderedDict[TurnKey, None] = OrderedDict()
        self._size = size

    @staticmethod
    def key(tracker: DialogueStateTracker) -> Optional[TurnKey]:
        """The turn the tracker is in: its sender and latest message's time."""
        message = tracker.latest_message
        if message is None or not isinstance(message, UserUttered):
            return None
        return tracker.sender_id, float(message.timestamp)

    def add(self, tracker: DialogueStateTracker) -> None:
        """Records that a custom action failed in this turn."""
        key = self.key(tracker)
        if key is None:
            return
        self._turns[key] = None
        self._turns.move_to_end(key)
        while len(self._turns) > self._size:
            self._turns.popitem(last=False)

    def __contains__(self, tracker: object) -> bool:
        """Whether a custom action failed in the tracker's current turn."""
        if not isinstance(tracker, DialogueStateTracker):
            return False
        key = self.key(tracker)
        return key is not None and key in self._turns


FAILED_TURNS = FailedTurns()


def timeout_seconds() -> float:
    """``ACTION_SERVER_TIMEOUT`` (seconds), or the default when unset or invalid."""
    return settings.load().action_server_timeout


def failure_reason(error: BaseException) -> str:
    """What went wrong, in words that never carry the reply's body."""
    for cause in (error, error.__cause__, error.__context__):
        if isinstance(cause, ClientResponseError):
            return f"the action server answered HTTP {cause.status}"
        if isinstance(cause, ClientConnectionError):
            return "no connection to the action server"
        if isinstance(cause, asyncio.TimeoutError):
            return "the action server did not answer in time"
    return f"the call failed ({type(error).__name__})"


def bot_messages_this_turn(tracker: DialogueStateTracker) -> List[str]:
    """The responses (``utter_action``) the bot has sent since the patient's message."""
    said: List[str] = []
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            break
        if isinstance(event, BotUttered):
            said.append(str(event.metadata.get("utter_action", "")))
    return said


async def unavailable_events(
    output_channel: OutputChannel,
    nlg: NaturalLanguageGenerator,
    tracker: DialogueStateTracker,
) -> List[Event]:
    """Says this part is unavailable (once a turn), stops any form, ends the turn."""
    events: List[Event] = []
    said = set(bot_messages_this_turn(tracker))
    if not said & (RED_FLAG_RESPONSES | {UNAVAILABLE_RESPONSE}):
        message = await nlg.generate(
            UNAVAILABLE_RESPONSE, tracker, output_channel.name()
        )
        if message:
            message["utter_action"] = UNAVAILABLE_RESPONSE
            events.append(create_bot_utterance(message))
    if tracker.active_loop_name:
        events += [ActiveLoop(None), SlotSet(REQUESTED_SLOT, None)]
    events.append(FollowupAction(ACTION_LISTEN_NAME))
    return events


async def guarded_run(
    action: RemoteAction,
    output_channel: OutputChannel,
    nlg: NaturalLanguageGenerator,
    tracker: DialogueStateTracker,
    domain: Domain,
) -> List[Event]:
    """``RemoteAction.run`` with a time limit and a safe answer when it fails."""
    assert _RASAS_RUN is not None, "install() first"
    if tracker in FAILED_TURNS:
        logger.debug("Not calling %s: the action server failed this turn.", action)
    else:
        try:
            return await asyncio.wait_for(
                _RASAS_RUN(action, output_channel, nlg, tracker, domain),
                timeout_seconds(),
            )
        except ActionExecutionRejection:
            raise
        except Exception as error:  # noqa: BLE001 - the patient must get an answer
            logger.error(
                "Custom action %s failed in conversation %s: %s.",
                action.name(),
                conversation_key(tracker.sender_id),
                failure_reason(error),
            )
            FAILED_TURNS.add(tracker)
    if action.name().startswith(VALIDATION_PREFIX):
        raise ActionExecutionRejection(action.name(), "action server unavailable")
    return await unavailable_events(output_channel, nlg, tracker)


def install() -> None:
    """Makes every custom action call go through :func:`guarded_run` (idempotent)."""
    global _RASAS_RUN
    if _RASAS_RUN is None:
        _RASAS_RUN = RemoteAction.run
        RemoteAction.run = guarded_run  # type: ignore[assignment,method-assign]


def uninstall() -> None:
    """Puts Rasa's own method back (for tests)."""
    global _RASAS_RUN
    if _RASAS_RUN is not None:
        RemoteAction.run = _RASAS_RUN  # type: ignore[method-assign]
        _RASAS_RUN = None
