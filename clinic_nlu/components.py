"""NLU graph components: input cleaning, the FAQ confidence gate and red-flag override.

Pipeline order (see ``config.yml``)::

    TextCleaner -> tokenizer/featurizers -> DIETClassifier -> ResponseSelector
    -> FallbackClassifier -> FaqConfidenceGate -> WordlessMessageGate
    -> RedFlagDetector

``RedFlagDetector`` runs last so that no later component can hide an emergency.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.nlu.constants import (
    ENTITIES,
    ENTITY_ATTRIBUTE_END,
    ENTITY_ATTRIBUTE_START,
    ENTITY_ATTRIBUTE_TYPE,
    ENTITY_ATTRIBUTE_VALUE,
    EXTRACTOR,
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from clinic_nlu.red_flags import find_red_flag, looks_spanish
from clinic_nlu.text import clean_text, has_words

logger = logging.getLogger(__name__)

RESPONSE_SELECTOR_KEY = "response_selector"
# The entity (and slot, domain.yml) that picks the language of the red-flag guidance.
RED_FLAG_LANGUAGE_ENTITY = "red_flag_language"
RED_FLAG_INTENTS = ("emergency", "crisis")


class ConfiguredComponent(GraphComponent):
    """A component built from its configuration alone: nothing trained or stored."""

    def __init__(self, config: Dict[str, Any]) -> None:
        """Creates the component; subclasses read what they need from ``config``."""

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> GraphComponent:
        """Creates the component (see parent class for full docstring)."""
        return cls(config)


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=False
)
class TextCleaner(ConfiguredComponent):
    """Cleans message text before tokenisation, in training and at inference alike."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        """Default configuration: the longest text passed on to the classifiers."""
        return {"max_characters": 1000}

    def __init__(self, config: Dict[str, Any]) -> None:
        """Creates the component."""
        self._max_characters = int(config["max_characters"])

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Cleans the training examples the same way as incoming messages."""
        self.process(training_data.training_examples)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        """Cleans the text of each message in place."""
        for message in messages:
            text = message.get(TEXT)
            if isinstance(text, str):
                message.set(TEXT, clean_text(text, self._max_characters))
        return messages


def _set_intent(message: Message, name: str, confidence: float) -> None:
    """Makes ``name`` the predicted intent, keeping the previous ranking below it."""
    predicted = {INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: confidence}
    message.data[INTENT] = predicted
    ranking = [
        entry
        for entry in message.data.get(INTENT_RANKING_KEY, [])
        if entry.get(INTENT_NAME_KEY) != name
    ]
    message.data[INTENT_RANKING_KEY] = [predicted, *ranking]


def _intent_name(message: Message) -> Optional[str]:
    return (message.get(INTENT) or {}).get(INTENT_NAME_KEY)


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False
)
class FaqConfidenceGate(ConfiguredComponent, IntentClassifier):
    """Falls back when the ResponseSelector is unsure which FAQ answer fits.

    Rasa's ``FallbackClassifier`` only looks at the intent confidence, so "this is
    some FAQ question" with 0.99 passes even when the ResponseSelector's pick of *which*
    answer is a coin toss (RasaHQ/rasa#9723). This gate predicts ``nlu_fallback`` when
    the top answer's confidence is below ``threshold`` or within ``ambiguity_threshold``
    of the runner-up. The response-selector ranking stays in the parse data, so the
    clarification action can offer the likeliest topics as "Did you mean ...?".
    The thresholds are tuned by ``scripts/tune_thresholds.py``.
    """

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        """Default configuration (see ``docs/thresholds.md`` for the tuned values)."""
        return {"retrieval_intent": "faq", "threshold": 0.5, "ambiguity_threshold": 0.0}

    def __init__(self, config: Dict[str, Any]) -> None:
        """Creates the gate."""
        self._retrieval_intent = config["retrieval_intent"]
        self._threshold = float(config["threshold"])
        self._ambiguity_threshold = float(config["ambiguity_threshold"])

    def process(self, messages: List[Message]) -> List[Message]:
        """Replaces an unsure FAQ prediction with ``nlu_fallback``."""
        for message in messages:
            if _intent_name(message) != self._retrieval_intent:
                continue
            selection = (message.get(RESPONSE_SELECTOR_KEY) or {}).get(
                self._retrieval_intent, {}
            )
            ranking = selection.get("ranking") or []
            if not ranking:
                continue
            top = float(ranking[0].get("confidence", 0.0))
            runner_up = (
                float(ranking[1].get("confidence", 0.0)) if len(ranking) > 1 else 0
            )
            if top < self._threshold or top - runner_up < self._ambiguity_threshold:
                logger.debug(
                    "FAQ answer confidence %.2f is too low; falling back.", top
                )
                _set_intent(message, DEFAULT_NLU_FALLBACK_INTENT_NAME, top)
        return messages


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False
)
class WordlessMessageGate(ConfiguredComponent, IntentClassifier):
    """Predicts ``nlu_fallback`` for messages without a single letter or digit.

    The classifiers always pick *some* intent, even for "👍👍" or "???"; answering
    that with an FAQ would be a confident wrong answer.
    """

    def process(self, messages: List[Message]) -> List[Message]:
        """Replaces the prediction of wordless messages with ``nlu_fallback``."""
        for message in messages:
            text = message.get(TEXT)
            if isinstance(text, str) and not has_words(text):
                _set_intent(message, DEFAULT_NLU_FALLBACK_INTENT_NAME, 0.0)
        return messages


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False
)
class RedFlagDetector(ConfiguredComponent, IntentClassifier):
    """Forces the ``emergency`` or ``crisis`` intent when a red-flag phrase matches.

    The patterns live in ``clinic_nlu/red_flags.py``. A match wins over every other
    prediction, including ``nlu_fallback``.

    Every red-flag message, found by a pattern or by the classifier alone, also gets
    a ``red_flag_language`` entity, "es" or "en": it fills the slot of that name, which
    picks the Spanish or English variation of ``utter_emergency`` and ``utter_crisis``
    (domain.yml). Without a pattern, ``looks_spanish`` decides the language.
    """

    def process(self, messages: List[Message]) -> List[Message]:
        """Overrides the intent of messages that carry a red flag, adds the language."""
        for message in messages:
            text = message.get(TEXT)
            if not isinstance(text, str):
                continue
            red_flag = find_red_flag(text)
            # A crisis phrase wins over a predicted emergency: its answer gives 988
            # and 911. A predicted crisis stays, whatever symptom is also named.
            if red_flag and _intent_name(message) not in (red_flag.intent, "crisis"):
                _set_intent(message, red_flag.intent, 1.0)
            if red_flag:
                _set_red_flag_language(message, text, red_flag.language)
            elif _intent_name(message) in RED_FLAG_INTENTS:
                language = "es" if looks_spanish(text) else "en"
                _set_red_flag_language(message, text, language)
        return messages


def _set_red_flag_language(message: Message, text: str, language: str) -> None:
    """Adds the ``red_flag_language`` entity, over the whole text, to the message."""
    entities = [
        entity
        for entity in message.get(ENTITIES) or []
        if entity.get(ENTITY_ATTRIBUTE_TYPE) != RED_FLAG_LANGUAGE_ENTITY
    ]
    entities.append(
        {
            ENTITY_ATTRIBUTE_TYPE: RED_FLAG_LANGUAGE_ENTITY,
            ENTITY_ATTRIBUTE_VALUE: language,
            ENTITY_ATTRIBUTE_START: 0,
            ENTITY_ATTRIBUTE_END: len(text),
            EXTRACTOR: RedFlagDetector.__name__,
        }
    )
    message.set(ENTITIES, entities, add_to_output=True)
