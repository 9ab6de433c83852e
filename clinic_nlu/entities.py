"""spaCy's named entities (DATE, TIME, PERSON) as hints for the booking conversation.

Rasa's own ``SpacyEntityExtractor`` needs ``SpacyNLP``, which loads a model by name or
by an absolute path written into ``config.yml``; the pinned model can only be loaded
by the path of its installed data folder (``clinic_nlu.spacy_model``), so this
component loads it itself, with only the pipes NER needs.

The entities are hints, never decisions: the booking actions parse the time
(``scheduling/timeparse.py``) and validate names and phone numbers themselves.
So they go into the parse data under their own key, ``spacy_entities``, not into
Rasa's ``entities``: spaCy's general-purpose NER also fires on FAQ questions ("two days
ago", a town taken for a PERSON), and Rasa's entities are conversation content that
``rasa test`` checks in every test story and that rules can match on.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message

from clinic_nlu import spacy_model
from clinic_nlu.components import ConfiguredComponent

# spaCy pipes the NER of en_core_web_sm does not need.
UNUSED_PIPES = ("parser", "lemmatizer", "attribute_ruler", "tagger", "senter")
SPACY_ENTITIES_KEY = "spacy_entities"
# NER costs about 4 ms a message; it only runs on text that may hold a date, a time
# or a name: a digit, a word of the calendar or the clock, or a capitalised word
# after the first. Most FAQ questions have none of these.
_MAY_HOLD_ENTITY = re.compile(
    r"\d"
    r"|\b(?:mon|tues?|wed|thu(?:rs?)?|fri|sat|sun)(?:day|nesday|rsday|urday)?s?\b"
    r"|\b(?:january|february|march|april|may|june|july|august|september|october"
    r"|november|december|jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)\b"
    r"|\b(?:today|tonight|tomorrow|tmrw?|yesterday|week|weekend|month|morning"
    r"|afternoon|evening|night|noon|midnight|asap|am|pm|hours?|minutes?|days?"
    r"|ago|next|last|later|earliest|o'?clock)\b",
    re.IGNORECASE,
)
_CAPITALISED_LATER = re.compile(r"\s[A-Z]")


def may_hold_entity(text: str) -> bool:
    """Whether the text may hold a date, a time or a name worth running NER on."""
    return bool(_MAY_HOLD_ENTITY.search(text) or _CAPITALISED_LATER.search(text))


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, is_trainable=False
)
class SpacyEntityTagger(ConfiguredComponent):
    """Adds spaCy's DATE, TIME and PERSON entities to each message."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        """Default configuration: the entity labels passed on."""
        return {"dimensions": ["DATE", "TIME", "PERSON"]}

    def __init__(self, config: Dict[str, Any]) -> None:
        """Loads the pinned English model (a few seconds)."""
        self._dimensions = set(config["dimensions"])
        self._nlp = spacy_model.load(exclude=UNUSED_PIPES)

    def process(self, messages: List[Message]) -> List[Message]:
        """Adds the entities spaCy finds under ``spacy_entities``."""
        for message in messages:
            text = message.get(TEXT)
            if not isinstance(text, str) or not text.strip():
                continue
            if not may_hold_entity(text):
                message.set(SPACY_ENTITIES_KEY, [], add_to_output=True)
                continue
            found = [
                {
                    "entity": entity.label_,
                    "value": entity.text,
                    "start": entity.start_char,
                    "end": entity.end_char,
                }
                for entity in self._nlp(text).ents
                if entity.label_ in self._dimensions
            ]
            message.set(SPACY_ENTITIES_KEY, found, add_to_output=True)
        return messages
