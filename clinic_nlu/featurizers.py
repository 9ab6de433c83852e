"""Sentence-embedding features for the NLU pipeline (all-MiniLM-L6-v2 in NumPy)."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from clinic_nlu.sentence_encoder import FULL_DEPTH, SentenceEncoder


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False
)
class SentenceEmbeddingFeaturizer(DenseFeaturizer, GraphComponent):
    """Adds one all-MiniLM-L6-v2 sentence vector per message text.

    Only sentence-level features are added (no per-token sequence features), which is
    what ``clinic_nlu.classifier.LinearIntentClassifier`` reads; DIET would need
    sequence features as well.
    """

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        """Default configuration: the full six-layer encoder."""
        return {**DenseFeaturizer.get_default_config(), "layers": FULL_DEPTH}

    def __init__(self, config: Dict[str, Any], name: str) -> None:
        """Loads the encoder (about 60 MB of weights, a second or two)."""
        super().__init__(name, config)
        self._encoder = SentenceEncoder(layers=int(config["layers"]))

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> SentenceEmbeddingFeaturizer:
        """Creates the featurizer (see parent class for full docstring)."""
        return cls(config, execution_context.node_name)

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        """Checks the number of layers."""
        layers = config.get("layers", FULL_DEPTH)
        if not isinstance(layers, int) or not 0 <= layers <= FULL_DEPTH:
            raise ValueError(f"'layers' must be an integer from 0 to {FULL_DEPTH}.")

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Featurizes every training example that has text, in batches."""
        self.process(training_data.training_examples)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        """Adds the sentence vector of each message's text."""
        with_text = [m for m in messages if isinstance(m.get(TEXT), str)]
        if not with_text:
            return messages
        vectors = self._encoder.encode([m.get(TEXT) for m in with_text])
        for message, vector in zip(with_text, vectors, strict=True):
            self.add_features_to_message(
                sequence=None, sentence=vector[None, :], attribute=TEXT, message=message
            )
        return messages
