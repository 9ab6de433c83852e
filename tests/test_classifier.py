"""Unit tests of the sentence encoder, its featurizer and the linear classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer import (
    CountVectorsFeaturizer,
)
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.constants import INTENT, INTENT_RESPONSE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from clinic_nlu.classifier import LinearIntentClassifier
from clinic_nlu.featurizers import SentenceEmbeddingFeaturizer
from clinic_nlu.sentence_encoder import HIDDEN, SentenceEncoder

CONTEXT = ExecutionContext(GraphSchema({}), "test-model")


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


# --- SentenceEncoder ----------------------------------------------------------------


def test_encoder_returns_one_unit_vector_per_text(encoder: SentenceEncoder) -> None:
    vectors = encoder.encode(["what is a back spasm", "hi", ""])
    assert vectors.shape == (3, HIDDEN)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_batching_and_padding_do_not_change_a_vector(encoder: SentenceEncoder) -> None:
    texts = [
        "how soon after the shots will my back feel better",
        "hi",
        "what is in the injection, is it a steroid?",
    ]
    together = encoder.encode(texts, batch_size=3)
    alone = np.vstack([encoder.encode([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_paraphrases_are_closer_than_other_topics(encoder: SentenceEncoder) -> None:
    question, paraphrase, other = encoder.encode(
        [
            "what is in the trigger point injection",
            "which medicine do the shots contain",
            "where is your clinic located",
        ]
    )
    assert float(question @ paraphrase) > float(question @ other) + 0.1


def test_text_longer_than_the_model_limit_is_truncated(
    encoder: SentenceEncoder,
) -> None:
    long_text = "my back hurts " * 400
    (vector,) = encoder.encode([long_text])
    assert np.isfinite(vector).all()


def test_fewer_layers_give_other_vectors(encoder: SentenceEncoder) -> None:
    shallow = SentenceEncoder(layers=2)
    text = ["what is dry needling"]
    assert not np.allclose(shallow.encode(text), encoder.encode(text))


@pytest.mark.parametrize("layers", [6, 3, 0])
def test_onnx_runtime_computes_what_the_numpy_reference_computes(layers: int) -> None:
    texts = [
        "how soon after the shots will my back feel better",
        "hi",
        "",
        "i fell off a ladder and cant feel my legs " * 3,
        "whats in the trigger pt shot that brings down inflammation",
    ]
    fast = SentenceEncoder(layers=layers)
    reference = SentenceEncoder(layers=layers, backend="numpy")
    assert (fast.backend, reference.backend) == ("onnxruntime", "numpy")
    for batch_size in (1, 32):  # one message at a time, and padded batches
        np.testing.assert_allclose(
            fast.encode(texts, batch_size=batch_size),
            reference.encode(texts, batch_size=batch_size),
            atol=2e-5,
        )


def test_encoder_refuses_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        SentenceEncoder(backend="torch")


@pytest.mark.parametrize("layers", [-1, 7])
def test_encoder_refuses_impossible_depths(layers: int) -> None:
    with pytest.raises(ValueError, match="layers"):
        SentenceEncoder(layers=layers)


# --- SentenceEmbeddingFeaturizer ----------------------------------------------------


def featurizer(tmp_path: Path) -> SentenceEmbeddingFeaturizer:
    return SentenceEmbeddingFeaturizer.create(
        SentenceEmbeddingFeaturizer.get_default_config(),
        LocalModelStorage(tmp_path),
        Resource("sentence"),
        CONTEXT,
    )


def test_featurizer_adds_a_sentence_vector(tmp_path: Path) -> None:
    with_text = Message(data={TEXT: "what is a spasm"})
    without_text = Message(data={INTENT: "greet"})
    featurizer(tmp_path).process([with_text, without_text])
    sequence, sentence = with_text.get_dense_features(TEXT)
    assert sequence is None
    assert sentence is not None and sentence.features.shape == (1, HIDDEN)
    assert without_text.features == []


@pytest.mark.parametrize("layers", [-1, 7, "six"])
def test_featurizer_config_is_checked(layers: Any) -> None:
    with pytest.raises(ValueError, match="layers"):
        SentenceEmbeddingFeaturizer.validate_config({"layers": layers})


# --- LinearIntentClassifier ---------------------------------------------------------

TRAINING = {
    "greet": ["hello", "hi there", "good morning", "hey", "hiya"],
    "faq/injection_contents": [
        "what is in the injection",
        "what medicine is in the shot",
        "does the injection have a steroid",
        "is there anesthetic in it",
        "what do you inject",
    ],
    "faq/clinic_location": [
        "where is the clinic",
        "where are you located",
        "what city are you in",
        "address of the office",
        "how do i find your office",
    ],
}
RESPONSES = {
    "utter_faq/injection_contents": [{"text": "A local anesthetic and a steroid."}],
    "utter_faq/clinic_location": [{"text": "Fort Worth, Texas."}],
}


def labelled(text: str, label: str) -> Message:
    data: Dict[str, Any] = {TEXT: text, INTENT: label.split("/")[0]}
    if "/" in label:
        data[INTENT_RESPONSE_KEY] = label
    return Message(data=data)


class Pipeline:
    """Tokenizer, two count featurizers and the sentence featurizer, trained once."""

    def __init__(self, tmp_path: Path, training_data: TrainingData) -> None:
        storage = LocalModelStorage(tmp_path)
        self.tokenizer = WhitespaceTokenizer(WhitespaceTokenizer.get_default_config())
        self.counts = [
            CountVectorsFeaturizer.create(
                {**CountVectorsFeaturizer.get_default_config(), **config},
                storage,
                Resource(f"counts{index}"),
                ExecutionContext(GraphSchema({}), f"counts{index}"),
            )
            for index, config in enumerate(
                [{}, {"analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4}]
            )
        ]
        self.sentence = featurizer(tmp_path)
        self.tokenizer.process_training_data(training_data)
        for count in self.counts:
            count.train(training_data)
            count.process_training_data(training_data)
        self.sentence.process_training_data(training_data)

    def featurize(self, text: str) -> Message:
        message = Message(data={TEXT: text})
        self.tokenizer.process([message])
        for count in self.counts:
            count.process([message])
        self.sentence.process([message])
        return message


@pytest.fixture
def trained(tmp_path: Path) -> Any:
    training_data = TrainingData(
        training_examples=[
            labelled(text, label) for label, texts in TRAINING.items() for text in texts
        ],
        responses=RESPONSES,
    )
    pipeline = Pipeline(tmp_path, training_data)
    storage = LocalModelStorage(tmp_path)
    resource = Resource("linear")
    classifier = LinearIntentClassifier.create(
        LinearIntentClassifier.get_default_config(), storage, resource, CONTEXT
    )
    classifier.train(training_data)
    return pipeline, classifier, storage, resource


def prediction(message: Message) -> Dict[str, Any]:
    return {
        "intent": message.get(INTENT),
        "ranking": message.get("intent_ranking"),
        "selector": message.get("response_selector"),
    }


def test_faq_question_gets_intent_and_answer(trained: Any) -> None:
    pipeline, classifier, _, _ = trained
    message = pipeline.featurize("which medicine is in the injection")
    classifier.process([message])

    assert message.get(INTENT)["name"] == "faq"
    selection = message.get("response_selector")
    assert selection["all_retrieval_intents"] == ["faq"]
    response = selection["faq"]["response"]
    assert response["intent_response_key"] == "faq/injection_contents"
    assert response["utter_action"] == "utter_faq/injection_contents"
    assert response["responses"] == RESPONSES["utter_faq/injection_contents"]


def test_probabilities_add_up_as_rasa_reports_them(trained: Any) -> None:
    pipeline, classifier, _, _ = trained
    message = pipeline.featurize("where is the office")
    classifier.process([message])

    ranking = {e["name"]: e["confidence"] for e in message.get("intent_ranking")}
    assert set(ranking) == {"faq", "greet"}
    assert sum(ranking.values()) == pytest.approx(1.0)
    assert message.get(INTENT)["confidence"] == max(ranking.values())
    topics = message.get("response_selector")["faq"]["ranking"]
    # Topic confidences are conditional on the FAQ intent, as a ResponseSelector's.
    assert sum(t["confidence"] for t in topics) == pytest.approx(1.0)
    assert topics[0]["intent_response_key"] == "faq/clinic_location"
    assert topics[0]["confidence"] >= topics[1]["confidence"]


def test_other_intents_keep_the_response_selection(trained: Any) -> None:
    pipeline, classifier, _, _ = trained
    message = pipeline.featurize("hello there")
    classifier.process([message])
    assert message.get(INTENT)["name"] == "greet"
    assert "faq" in message.get("response_selector")


def test_a_loaded_model_predicts_the_same(trained: Any) -> None:
    pipeline, classifier, storage, resource = trained
    loaded = LinearIntentClassifier.load(
        LinearIntentClassifier.get_default_config(), storage, resource, CONTEXT
    )
    first, second = (pipeline.featurize("what do you inject") for _ in range(2))
    classifier.process([first])
    loaded.process([second])
    assert prediction(first) == prediction(second)


def test_an_untrained_model_predicts_nothing(tmp_path: Path) -> None:
    loaded = LinearIntentClassifier.load(
        LinearIntentClassifier.get_default_config(),
        LocalModelStorage(tmp_path),
        Resource("never-trained"),
        CONTEXT,
    )
    message = Message(data={TEXT: "hello"})
    loaded.process([message])
    assert message.get(INTENT) is None


def test_messages_without_features_are_left_alone(trained: Any) -> None:
    _, classifier, _, _ = trained
    message = Message(data={TEXT: "hello"})
    classifier.process([message])
    assert message.get(INTENT) is None


def test_training_needs_two_labels(tmp_path: Path) -> None:
    training_data = TrainingData(
        training_examples=[labelled(text, "greet") for text in TRAINING["greet"]]
    )
    Pipeline(tmp_path, training_data)
    classifier = LinearIntentClassifier.create(
        LinearIntentClassifier.get_default_config(),
        LocalModelStorage(tmp_path),
        Resource("one-label"),
        CONTEXT,
    )
    with pytest.raises(ValueError, match="two labels"):
        classifier.train(training_data)


def test_tfidf_rows_match_sklearn() -> None:
    import scipy.sparse
    from sklearn.feature_extraction.text import TfidfTransformer

    from clinic_nlu.classifier import _tfidf_rows

    counts = scipy.sparse.csr_matrix(
        np.array([[3, 0, 1, 0], [0, 0, 0, 0], [1, 2, 0, 5], [0, 1, 1, 0]], float)
    )
    reference = TfidfTransformer(sublinear_tf=True).fit(counts)
    expected = reference.transform(counts).toarray()
    actual = _tfidf_rows(counts, reference.idf_).toarray()
    np.testing.assert_allclose(actual, expected, atol=1e-12)
    assert counts[0, 0] == 3  # the input is left as it was


# --- one message scored without building its sparse row ---------------------------


def _message_with_blocks(words: Any, chars: Any, dense: Any) -> Message:
    import scipy.sparse
    from rasa.shared.nlu.training_data.features import Features

    message = Message(data={TEXT: "x"})
    for origin, block in (
        ("words", scipy.sparse.coo_matrix(words)),
        ("chars", block_with_duplicates(chars)),
        ("minilm", np.asarray(dense, dtype=np.float32)[None, :]),
    ):
        message.add_features(Features(block, "sentence", TEXT, origin))
    return message


def block_with_duplicates(row: Any) -> Any:
    """A COO row whose first non-zero column is split over two entries."""
    import scipy.sparse

    dense = np.asarray(row, dtype=np.float64)
    columns = list(np.flatnonzero(dense))
    values = [float(dense[c]) for c in columns]
    if columns:
        values[0] -= 1.0
        columns.append(columns[0])
        values.append(1.0)
    return scipy.sparse.coo_matrix(
        (values, ([0] * len(columns), columns)), shape=(1, len(dense))
    )


def test_one_message_scores_as_the_sparse_product() -> None:
    from clinic_nlu.classifier import _FeatureSpace

    generator = np.random.default_rng(7)
    messages = [
        _message_with_blocks(
            generator.integers(0, 3, 12) * (generator.random(12) < 0.4),
            generator.integers(0, 4, 30) * (generator.random(30) < 0.3) + np.eye(30)[i],
            generator.normal(size=5),
        )
        for i in range(6)
    ]
    messages.append(_message_with_blocks(np.zeros(12), np.eye(30)[0] * 2, np.ones(5)))
    space = _FeatureSpace.fit(messages, dense_weight=1.5)
    weights = generator.normal(size=(12 + 30 + 5, 4)).astype(np.float32)
    bias = generator.normal(size=4).astype(np.float32)
    for message in messages:
        expected = np.asarray(space.transform([message]) @ weights + bias)
        np.testing.assert_allclose(
            space.scores([message], weights, bias), expected, rtol=1e-6, atol=1e-6
        )
    together = space.scores(messages, weights, bias)
    assert together.shape == (len(messages), 4)
