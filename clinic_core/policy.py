"""SafetyPolicy: red flags first, and a clean end to a turn whose custom action failed.

Rasa's RulePolicy runs an active form before any rule: the form's validation (a
custom action) decides whether the message was an answer, and only if it was not do
the rules get a say. That makes emergency guidance inside a form depend on the action
server. This policy, ranked above RulePolicy, needs nothing but the tracker:

1. **Red flags.** When the patient's message has the ``emergency`` or ``crisis``
   intent (the classifier, backed by ``clinic_nlu.red_flags``), the first action is
   its guidance (``utter_emergency`` / ``utter_crisis``), whatever form is active.
   Then an active form is stopped (``action_deactivate_loop``), and the rules go on
   as written (``action_stop_booking`` releases a held time).
2. **A custom action failed this turn** (``clinic_core.action_guard``). After a form
   was rejected because its validation could not run, a question that the Rasa
   server answers by itself (``answered_first`` in config.yml: an FAQ, "are you a
   bot?") is still answered by the rules; anything else (an answer to the form's
   question, "yes", "never mind") gets ``utter_action_unavailable`` at once, not a
   rule's out-of-context reply nor "Sorry, I didn't understand that". Then the form
   is stopped and the turn ends, rather than asking the form's question again of a
   patient whose answer cannot be checked.

Everything this policy predicts runs in the Rasa server (responses and Rasa's
default actions).
"""

from __future__ import annotations

from typing import Any, Collection, Dict, List, Optional, Tuple

from rasa.core.constants import RULE_POLICY_PRIORITY
from rasa.core.policies.policy import Policy, PolicyPrediction, confidence_scores_for
from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, UserUttered
from rasa.shared.core.generator import TrackerWithCachedStates
from rasa.shared.core.trackers import DialogueStateTracker

from clinic_core.action_guard import (
    FAILED_TURNS,
    RED_FLAG_RESPONSES,
    UNAVAILABLE_RESPONSE,
)

ACTION_DEACTIVATE_LOOP = "action_deactivate_loop"
RED_FLAG_GUIDANCE = {"emergency": "utter_emergency", "crisis": "utter_crisis"}
# Questions whose answer needs no action server, answered before "unavailable".
ANSWERED_FIRST = ("faq", "bot_challenge", "ask_insurance", "ask_cost")
# Below a matching rule (1.0), above RulePolicy's core fallback (0.3 in config.yml).
INSTEAD_OF_FALLBACK = 0.5

# (action, confidence, overrules an active form's "happy path")
Decision = Tuple[str, float, bool]


def actions_this_turn(tracker: DialogueStateTracker) -> List[str]:
    """The actions run since the patient's latest message, oldest first."""
    names: List[str] = []
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            break
        if isinstance(event, ActionExecuted) and event.action_name:
            names.append(event.action_name)
    return names[::-1]


def next_action(
    tracker: DialogueStateTracker,
    turn_failed: bool,
    answered_first: Collection[str] = ANSWERED_FIRST,
) -> Optional[Decision]:
    """What must happen next for safety, or None to leave it to the rules."""
    latest = tracker.latest_action_name
    message = tracker.latest_message
    intent = (message.intent or {}).get("name") if message else None
    loop = tracker.active_loop_name
    this_turn = actions_this_turn(tracker)

    if not this_turn and intent in RED_FLAG_GUIDANCE:  # the patient just wrote
        return RED_FLAG_GUIDANCE[str(intent)], 1.0, True
    if RED_FLAG_RESPONSES & set(this_turn):
        return (ACTION_DEACTIVATE_LOOP, 1.0, True) if loop else None

    if not turn_failed:
        return None
    if latest == ACTION_DEACTIVATE_LOOP and not loop:
        return ACTION_LISTEN_NAME, 1.0, True
    if not loop:
        return None
    if latest == UNAVAILABLE_RESPONSE:
        return ACTION_DEACTIVATE_LOOP, 1.0, True
    if latest == ACTION_LISTEN_NAME and tracker.is_active_loop_rejected:
        if intent in answered_first:  # the rules answer it, if one matches
            return UNAVAILABLE_RESPONSE, INSTEAD_OF_FALLBACK, False
        return UNAVAILABLE_RESPONSE, 1.0, False
    if latest not in (ACTION_LISTEN_NAME, loop):
        # A rule answered the message; the form cannot go on.
        return UNAVAILABLE_RESPONSE, 1.0, True
    return None


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.POLICY_WITHOUT_END_TO_END_SUPPORT,
    is_trainable=False,
)
class SafetyPolicy(Policy):
    """Red flags before any form; a clean end to a turn whose action failed."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        """Ranked above RulePolicy, so that it wins a tie at confidence 1.0."""
        return {"priority": RULE_POLICY_PRIORITY + 1, "answered_first": ANSWERED_FIRST}

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        featurizer: Any = None,
    ) -> None:
        """Creates the policy; it needs no featurizer and learns nothing."""
        super().__init__(config, model_storage, resource, execution_context, None)
        self._answered_first = frozenset(config["answered_first"])

    def train(
        self,
        training_trackers: List[TrackerWithCachedStates],
        domain: Domain,
        **kwargs: Any,
    ) -> Resource:
        """Nothing to learn: the policy is written out."""
        return self._resource

    def predict_action_probabilities(
        self,
        tracker: DialogueStateTracker,
        domain: Domain,
        rule_only_data: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> PolicyPrediction:
        """Predicts the safety action, or nothing (all zeros)."""
        decision = next_action(tracker, tracker in FAILED_TURNS, self._answered_first)
        if decision is None or decision[0] not in domain.action_names_or_texts:
            return self._prediction(self._default_predictions(domain))
        action, confidence, overrules_form = decision
        return self._prediction(
            confidence_scores_for(action, confidence, domain),
            is_no_user_prediction=overrules_form,
        )
