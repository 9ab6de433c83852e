"""One logistic regression over every intent and every FAQ topic.

Rasa's stock pair (DIETClassifier for the intent, then a ResponseSelector for the
``faq/<topic>``) was measured against this on the validation set: 90 % against 96-97 %,
and DIET and the ResponseSelector take most of a minute to train where this takes
seconds (docs/pipeline.md). A single multinomial logistic regression is trained on the
full labels (``faq/what_is_a_spasm``, ``greet``, ...) and its probabilities are
reported exactly as Rasa's intent classifier and ResponseSelector would report them:

- ``intent``/``intent_ranking``: a retrieval intent's probability is the sum over its
  topics, so FallbackClassifier's threshold means what it always means;
- ``response_selector[<retrieval intent>]``: the topic ranking with each topic's
  probability *given* that retrieval intent, the picked answer's responses and its
  ``utter_action``, so ``utter_faq``, ``FaqConfidenceGate`` and ``rasa test`` work
  unchanged.

Features: for each featurizer ("origin") the sentence-level features of the text.
Sparse count blocks are TF-IDF weighted (sublinear term frequency) and each block is
L2-normalised on its own, so the many char n-grams do not drown the word block; dense
blocks are L2-normalised and scaled by ``dense_weight``. The model is stored as plain
NumPy arrays and JSON (no pickle).
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import scipy.sparse
from numpy.typing import NDArray
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.featurizers.featurizer import Featurizer
from rasa.shared.nlu.constants import (
    FEATURE_TYPE_SENTENCE,
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    INTENT_RESPONSE_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

Array = NDArray[Any]

logger = logging.getLogger(__name__)

RESPONSE_SELECTOR_KEY = "response_selector"
MODEL_FILE = "model.npz"
META_FILE = "meta.json"


def _sentence_blocks(message: Message) -> Dict[str, Any]:
    """The sentence-level features of the message text, by featurizer name."""
    blocks: Dict[str, Any] = {}
    for feature in message.features:
        if feature.attribute == TEXT and feature.type == FEATURE_TYPE_SENTENCE:
            blocks[feature.origin] = feature.features
    return blocks


def _l2_rows(matrix: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    """Scales each row of a CSR matrix to unit length, in place (empty rows stay)."""
    row_lengths = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(matrix.shape[0]), row_lengths)
    norms = np.sqrt(
        np.bincount(rows, weights=matrix.data**2, minlength=matrix.shape[0])
    )
    norms[norms == 0] = 1.0
    matrix.data /= np.repeat(norms, row_lengths)
    return matrix


def _sublinear_tfidf(counts: Array, idf_of_columns: Array) -> Array:
    """(1 + log count) x IDF, for the non-zero counts of some columns."""
    result: Array = (1.0 + np.log(np.maximum(counts, 1e-12))) * idf_of_columns
    return result


def _weighted_unit_rows(dense: Array, weight: float) -> Array:
    """Each row scaled to length ``weight`` (a zero row stays zero)."""
    norms = np.linalg.norm(dense, axis=-1, keepdims=True)
    result: Array = dense / np.maximum(norms, 1e-12) * weight
    return result


def _tfidf_rows(counts: scipy.sparse.csr_matrix, idf: Array) -> scipy.sparse.csr_matrix:
    """Sublinear TF-IDF, L2-normalised per row (as sklearn's TfidfTransformer).

    Works on the CSR arrays directly: on the one row of a live message, scipy's
    general sparse products cost about 1 ms a block.
    """
    tfidf = counts.astype(np.float64)
    tfidf.data = _sublinear_tfidf(tfidf.data, idf[tfidf.indices])
    return _l2_rows(tfidf)


class _FeatureSpace:
    """Turns featurizer blocks into one weighted, normalised row per message."""

    def __init__(
        self,
        sparse_origins: List[str],
        dense_origins: List[str],
        idf: Dict[str, Array],
        dense_weight: float,
    ) -> None:
        self.sparse_origins = sparse_origins
        self.dense_origins = dense_origins
        self.idf = idf
        self.dense_weight = dense_weight

    @classmethod
    def fit(cls, messages: List[Message], dense_weight: float) -> _FeatureSpace:
        """Learns which blocks there are and the IDF of each sparse block."""
        first = _sentence_blocks(messages[0])
        sparse = sorted(o for o, f in first.items() if scipy.sparse.issparse(f))
        dense = sorted(o for o, f in first.items() if not scipy.sparse.issparse(f))
        space = cls(sparse, dense, {}, dense_weight)
        for origin in sparse:
            counts = space._stack_sparse(messages, origin)
            document_frequency = np.asarray((counts > 0).sum(axis=0)).ravel()
            # sklearn's smoothed IDF: log((1 + n) / (1 + df)) + 1.
            space.idf[origin] = (
                np.log((1.0 + counts.shape[0]) / (1.0 + document_frequency)) + 1.0
            )
        return space

    @staticmethod
    def _stack_sparse(messages: List[Message], origin: str) -> scipy.sparse.csr_matrix:
        rows = [scipy.sparse.csr_matrix(_sentence_blocks(m)[origin]) for m in messages]
        return rows[0] if len(rows) == 1 else scipy.sparse.vstack(rows).tocsr()

    def transform(self, messages: List[Message]) -> scipy.sparse.csr_matrix:
        """One row per message: TF-IDF sparse blocks, then weighted dense blocks."""
        parts = []
        for origin in self.sparse_origins:
            counts = self._stack_sparse(messages, origin)
            parts.append(_tfidf_rows(counts, self.idf[origin]))
        for origin in self.dense_origins:
            dense = np.vstack([_sentence_blocks(m)[origin] for m in messages])
            parts.append(
                scipy.sparse.csr_matrix(_weighted_unit_rows(dense, self.dense_weight))
            )
        return scipy.sparse.hstack(parts, format="csr")

    def scores(self, messages: List[Message], weights: Array, bias: Array) -> Array:
        """``transform(messages) @ weights + bias``; one message without scipy.

        ``weights`` is (features, labels). A live message comes alone, and building
        its sparse row (CSR blocks, then ``hstack``) cost more than the product, so
        for one message each block's non-zero columns pick their weight rows
        directly. Same arithmetic as ``transform``.
        """
        if len(messages) != 1:
            product = self.transform(messages) @ weights + bias
            return np.asarray(product, dtype=np.float64)
        blocks = _sentence_blocks(messages[0])
        total = bias.astype(np.float64)
        offset = 0
        for origin in self.sparse_origins:
            idf = self.idf[origin]
            counts = blocks[origin].tocoo()
            columns, values = counts.col, counts.data.astype(np.float64)
            if len(np.unique(columns)) != len(columns):  # duplicates add up
                columns, position = np.unique(columns, return_inverse=True)
                values = np.bincount(position, weights=values)
            tfidf = _weighted_unit_rows(_sublinear_tfidf(values, idf[columns]), 1.0)
            total += tfidf @ weights[offset + columns]
            offset += len(idf)
        for origin in self.dense_origins:
            dense = np.asarray(blocks[origin], dtype=np.float64).ravel()
            dense = _weighted_unit_rows(dense, self.dense_weight)
            total += dense @ weights[offset : offset + len(dense)]
            offset += len(dense)
        return total[None, :]


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True
)
class LinearIntentClassifier(GraphComponent, IntentClassifier):
    """Intent classifier and FAQ response selector in one logistic regression."""

    @classmethod
    def required_components(cls) -> List[type]:
        """Featurizers must run first."""
        return [Featurizer]

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        """Default configuration (C and dense_weight: see docs/pipeline.md)."""
        return {"C": 30.0, "dense_weight": 1.0, "max_iter": 5000, "ranking_length": 10}

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        labels: Optional[List[str]] = None,
        weights: Optional[Array] = None,
        bias: Optional[Array] = None,
        features: Optional[_FeatureSpace] = None,
        responses: Optional[Dict[str, List[Dict[str, Any]]]] = None,
    ) -> None:
        """Creates the classifier, trained when ``labels`` and weights are given."""
        self._config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self._labels = labels or []
        self._set_weights(weights, bias)
        self._features = features
        self._responses = responses or {}

    def _set_weights(self, weights: Optional[Array], bias: Optional[Array]) -> None:
        """The regression's weights, and the same laid out by feature.

        ``sparse @ dense`` wants the dense side C-ordered; ``weights.T`` is not, and
        scipy would copy all of it (labels x features) for every message.
        """
        self._weights, self._bias = weights, bias
        self._weights_by_feature = (
            None if weights is None else np.ascontiguousarray(weights.T)
        )

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> LinearIntentClassifier:
        """Creates an untrained classifier (see parent class for full docstring)."""
        return cls(config, model_storage, resource)

    # Training ---------------------------------------------------------------------

    def train(self, training_data: TrainingData) -> Resource:
        """Fits the regression on every intent example's full label."""
        from sklearn.linear_model import LogisticRegression

        examples = [
            example
            for example in training_data.intent_examples
            if example.get(INTENT) and isinstance(example.get(TEXT), str)
        ]
        if not examples:
            logger.debug("No intent examples: %s is not trained.", type(self).__name__)
            return self._resource
        labels = [
            example.get(INTENT_RESPONSE_KEY) or example.get(INTENT)
            for example in examples
        ]
        self._features = _FeatureSpace.fit(
            examples, float(self._config["dense_weight"])
        )
        regression = LogisticRegression(
            C=float(self._config["C"]), max_iter=int(self._config["max_iter"])
        )
        if len(set(labels)) < 2:
            raise ValueError("LinearIntentClassifier needs at least two labels.")
        regression.fit(self._features.transform(examples), labels)
        self._labels = [str(label) for label in regression.classes_]
        self._set_weights(
            regression.coef_.astype(np.float32),
            regression.intercept_.astype(np.float32),
        )
        self._responses = {
            label: list(training_data.responses.get(f"utter_{label}", []))
            for label in self._labels
            if "/" in label
        }
        self.persist()
        return self._resource

    # Prediction -------------------------------------------------------------------

    def process(self, messages: List[Message]) -> List[Message]:
        """Sets intent, intent ranking and the FAQ response selection."""
        weights, bias = self._weights_by_feature, self._bias
        if self._features is None or weights is None or bias is None:
            return messages
        with_text = [
            m for m in messages if isinstance(m.get(TEXT), str) and _sentence_blocks(m)
        ]
        if not with_text:
            return messages
        scores = self._features.scores(with_text, weights, bias)
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        for message, row in zip(with_text, probabilities, strict=True):
            self._set_prediction(
                message, dict(zip(self._labels, row.tolist(), strict=True))
            )
        return messages

    def _set_prediction(
        self, message: Message, label_probability: Dict[str, float]
    ) -> None:
        intents: Dict[str, float] = {}
        topics: Dict[str, List[Tuple[str, float]]] = {}
        for label, probability in label_probability.items():
            intent = label.split("/", 1)[0]
            intents[intent] = intents.get(intent, 0.0) + probability
            if "/" in label:
                topics.setdefault(intent, []).append((label, probability))
        ranking = [
            {INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: confidence}
            for name, confidence in sorted(intents.items(), key=lambda i: -i[1])
        ]
        length = int(self._config["ranking_length"])
        message.set(INTENT, ranking[0], add_to_output=True)
        message.set(INTENT_RANKING_KEY, ranking[:length] if length else ranking, True)

        selection: Dict[str, Any] = {"all_retrieval_intents": sorted(topics)}
        for intent, options in topics.items():
            total = intents[intent] or 1.0
            options.sort(key=lambda option: -option[1])
            topic_ranking = [
                {
                    "id": zlib.crc32(label.encode("utf-8")),
                    PREDICTED_CONFIDENCE_KEY: probability / total,
                    INTENT_RESPONSE_KEY: label,
                }
                for label, probability in options
            ]
            best = options[0][0]
            selection[intent] = {
                "response": {
                    "responses": self._responses.get(best) or [{TEXT: best}],
                    PREDICTED_CONFIDENCE_KEY: topic_ranking[0][
                        PREDICTED_CONFIDENCE_KEY
                    ],
                    INTENT_RESPONSE_KEY: best,
                    "utter_action": f"utter_{best}",
                },
                "ranking": topic_ranking[:length] if length else topic_ranking,
            }
        message.set(RESPONSE_SELECTOR_KEY, selection, add_to_output=True)

    # Storage ----------------------------------------------------------------------

    def persist(self) -> None:
        """Stores the weights as NumPy arrays and the rest as JSON."""
        if self._features is None or self._weights is None or self._bias is None:
            return
        with self._model_storage.write_to(self._resource) as directory:
            arrays = {"weights": self._weights, "bias": self._bias}
            arrays.update(
                {f"idf::{origin}": idf for origin, idf in self._features.idf.items()}
            )
            np.savez(directory / MODEL_FILE, **arrays)
            meta = {
                "labels": self._labels,
                "sparse_origins": self._features.sparse_origins,
                "dense_origins": self._features.dense_origins,
                "dense_weight": self._features.dense_weight,
                "responses": self._responses,
            }
            (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> LinearIntentClassifier:
        """Loads a trained classifier (see parent class for full docstring)."""
        try:
            with model_storage.read_from(resource) as directory:
                meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
                with np.load(directory / MODEL_FILE, allow_pickle=False) as arrays:
                    weights, bias = arrays["weights"], arrays["bias"]
                    idf = {
                        origin: arrays[f"idf::{origin}"]
                        for origin in meta["sparse_origins"]
                    }
        except (ValueError, FileNotFoundError):
            logger.debug("%s was not trained; it predicts nothing.", cls.__name__)
            return cls(config, model_storage, resource)
        features = _FeatureSpace(
            meta["sparse_origins"], meta["dense_origins"], idf, meta["dense_weight"]
        )
        return cls(
            config,
            model_storage,
            resource,
            labels=meta["labels"],
            weights=weights,
            bias=bias,
            features=features,
            responses=meta["responses"],
        )
