"""Evaluates a trained model on the held-out NLU file and enforces a minimum accuracy.

The held-out file (tests/nlu_heldout/heldout.yml) is never used for training. An
example counts as right when the predicted label equals its label, where the label of
an FAQ question is its full retrieval intent (``faq/<topic>``): the right answer, not
just "some FAQ". A fallback counts as wrong.

Usage: python scripts/evaluate_nlu.py --model models/clinic.tar.gz [--min-accuracy 0.9]
Exits 1 when the overall accuracy is below the minimum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from clinic_common.settings import RETRIEVAL_INTENT

HELDOUT = (
    Path(__file__).resolve().parent.parent / "tests" / "nlu_heldout" / "heldout.yml"
)


@dataclass
class Result:
    """Per-label and overall results of an evaluation."""

    per_label: Dict[str, List[int]] = field(default_factory=lambda: defaultdict(list))
    errors: List[Dict[str, Any]] = field(default_factory=list)
    fallbacks: int = 0

    @property
    def total(self) -> int:
        """How many examples were evaluated."""
        return sum(len(hits) for hits in self.per_label.values())

    @property
    def accuracy(self) -> float:
        """Share of examples predicted right."""
        correct = sum(sum(hits) for hits in self.per_label.values())
        return correct / self.total if self.total else 0.0


def load_examples(path: Path = HELDOUT) -> List[Tuple[str, str]]:
    """Reads (text, label) pairs from a Rasa YAML NLU file."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    examples = []
    for block in document.get("nlu", []):
        label = block["intent"]
        for line in str(block["examples"]).splitlines():
            text = line.strip()
            if text.startswith("- "):
                examples.append((text[2:].strip(), label))
    return examples


def predicted_label(parse: Dict[str, Any]) -> Tuple[str, float, Optional[float]]:
    """The label a parse result predicts, its intent and its FAQ-answer confidence.

    For the retrieval intent the label is the ResponseSelector's full intent
    (``faq/<topic>``); otherwise it is the intent name (possibly ``nlu_fallback``).
    A ResponseSelector trained without ``retrieval_intent`` (Rasa's stock
    configuration) reports under the key ``default``.
    """
    intent = parse.get("intent") or {}
    name = str(intent.get("name") or "")
    confidence = float(intent.get("confidence") or 0.0)
    if name != RETRIEVAL_INTENT:
        return name, confidence, None
    selectors = parse.get("response_selector") or {}
    selection = selectors.get(RETRIEVAL_INTENT) or selectors.get("default") or {}
    response = selection.get("response") or {}
    answer_confidence = response.get("confidence")
    return (
        str(response.get("intent_response_key") or name),
        confidence,
        None if answer_confidence is None else float(answer_confidence),
    )


async def evaluate(model: Path, examples: List[Tuple[str, str]]) -> Result:
    """Parses every example with the model and scores the predictions."""
    from rasa.core.agent import Agent

    agent = Agent.load(str(model))
    result = Result()
    for text, label in examples:
        parse = await agent.parse_message(text)
        predicted, intent_confidence, answer_confidence = predicted_label(parse)
        confidence = (
            intent_confidence if answer_confidence is None else answer_confidence
        )
        result.per_label[label].append(int(predicted == label))
        if predicted == "nlu_fallback":
            result.fallbacks += 1
        if predicted != label:
            result.errors.append(
                {
                    "text": text,
                    "expected": label,
                    "predicted": predicted,
                    "confidence": round(confidence, 3),
                }
            )
    return result


def report(result: Result) -> str:
    """A readable table of the results."""
    lines = [f"{'label':34} {'n':>3} {'accuracy':>9}"]
    for label in sorted(result.per_label):
        hits = result.per_label[label]
        lines.append(f"{label:34} {len(hits):3d} {sum(hits) / len(hits):9.1%}")
    lines.append(
        f"{'overall':34} {result.total:3d} {result.accuracy:9.1%}"
        f"   (fallbacks: {result.fallbacks})"
    )
    if result.errors:
        lines.append("Misclassified:")
        lines.extend(
            f"  {e['text']!r}: expected {e['expected']}, got {e['predicted']}"
            f" ({e['confidence']})"
            for e in result.errors
        )
    return "\n".join(lines)


def main() -> int:
    """Runs the evaluation; returns 1 if accuracy is below the minimum."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=HELDOUT)
    parser.add_argument("--min-accuracy", type=float, default=0.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    result = asyncio.run(evaluate(args.model, load_examples(args.data)))
    print(report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "accuracy": result.accuracy,
                    "per_label": {
                        k: sum(v) / len(v) for k, v in result.per_label.items()
                    },
                    "errors": result.errors,
                },
                indent=2,
            )
        )
    if result.accuracy < args.min_accuracy:
        print(
            f"FAILED: held-out accuracy {result.accuracy:.1%} is below the minimum "
            f"{args.min_accuracy:.0%}.",
            file=sys.stderr,
        )
        return 1
    print(f"Held-out accuracy {result.accuracy:.1%} (minimum {args.min_accuracy:.0%}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
