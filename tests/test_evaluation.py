"""The held-out metric: how a parse result becomes a label, and how files are read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from scripts.evaluate_nlu import HELDOUT, load_examples, predicted_label


def faq_parse(key: str, answer: float, selector_key: str = "faq") -> Dict[str, Any]:
    return {
        "intent": {"name": "faq", "confidence": 0.97},
        "response_selector": {
            selector_key: {
                "response": {"intent_response_key": key, "confidence": answer},
                "ranking": [],
            }
        },
    }


@pytest.mark.parametrize(
    ("parse", "expected"),
    [
        pytest.param(
            faq_parse("faq/dry_needling", 0.8),
            ("faq/dry_needling", 0.97, 0.8),
            id="faq-topic",
        ),
        pytest.param(
            faq_parse("faq/relief_timing", 0.6, selector_key="default"),
            ("faq/relief_timing", 0.97, 0.6),
            id="stock-default-selector",
        ),
        pytest.param(
            {"intent": {"name": "greet", "confidence": 0.9}},
            ("greet", 0.9, None),
            id="plain-intent",
        ),
        pytest.param(
            {"intent": {"name": "nlu_fallback", "confidence": 0.5}},
            ("nlu_fallback", 0.5, None),
            id="fallback",
        ),
        pytest.param(
            {"intent": {"name": "faq", "confidence": 0.4}, "response_selector": {}},
            ("faq", 0.4, None),
            id="faq-without-selection",
        ),
    ],
)
def test_predicted_label(
    parse: Dict[str, Any], expected: tuple[str, float, Optional[float]]
) -> None:
    assert predicted_label(parse) == expected


def test_load_examples_keeps_full_retrieval_labels(tmp_path: Path) -> None:
    path = tmp_path / "nlu.yml"
    path.write_text(
        'version: "3.1"\n'
        "nlu:\n"
        "- intent: faq/dry_needling\n"
        "  examples: |\n"
        "    - can I skip the steroid\n"
        "    - no drugs please\n"
        "- intent: greet\n"
        "  examples: |\n"
        "    - hello there\n"
    )

    assert load_examples(path) == [
        ("can I skip the steroid", "faq/dry_needling"),
        ("no drugs please", "faq/dry_needling"),
        ("hello there", "greet"),
    ]


def test_heldout_file_has_every_faq_topic() -> None:
    labels = {label for _, label in load_examples(HELDOUT)}
    assert len({label for label in labels if label.startswith("faq/")}) == 12
