"""Tunes the fallback thresholds on a validation set.

Neither the training data nor the held-out test file is used to choose thresholds:
a model is trained on data/ with every confidence gate switched off, and the
validation files (data_validation/*.yml, written apart from both) are parsed
to record the raw intent and FAQ-answer confidences. Then, for each candidate pair of
thresholds, a message is "answered" when its intent confidence (and, for FAQ
questions, its answer confidence) reaches the threshold, and falls back otherwise.
The chosen pair maximises

    correct answers - COST_OF_WRONG_ANSWER * wrong answers

over the validation messages: a confident wrong answer costs a patient more than a
"Did you mean ...?". Among pairs with the same score, the one with fewer wrong answers
and then the higher thresholds comes first. The result is printed as a table for
docs/thresholds.md.

Usage: python scripts/tune_thresholds.py [--json results/thresholds.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clinic_common.settings import RETRIEVAL_INTENT  # noqa: E402
from scripts.evaluate_nlu import load_examples, predicted_label  # noqa: E402

VALIDATION_SETS = sorted((ROOT / "data_validation").glob("*.yml"))
COST_OF_WRONG_ANSWER = 3.0
GRID = [round(0.05 * step, 2) for step in range(0, 19)]


def load_training_examples() -> List[Tuple[str, str]]:
    """(text, full label) for every example under data/nlu."""
    return [
        example
        for path in sorted((ROOT / "data" / "nlu").glob("*.yml"))
        for example in load_examples(path)
    ]


def write_nlu(examples: List[Tuple[str, str]], path: Path) -> None:
    """Writes examples as a Rasa YAML NLU file."""
    by_label: Dict[str, List[str]] = defaultdict(list)
    for text, label in examples:
        by_label[label].append(text)
    lines = ['version: "3.1"', "nlu:"]
    for label in sorted(by_label):
        lines.append(f"- intent: {label}")
        lines.append("  examples: |")
        lines.extend(f"    - {text}" for text in by_label[label])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def ungated_config(source: Path, path: Path) -> None:
    """Writes the ``source`` configuration with every confidence gate switched off."""
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    for component in config["pipeline"]:
        if "threshold" in component:
            component["threshold"] = 0.0
        if "ambiguity_threshold" in component:
            component["ambiguity_threshold"] = 0.0
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def train_ungated(
    workdir: Path, train: List[Tuple[str, str]], source_config: Path
) -> Path:
    """Trains an NLU-only model on ``train`` with the gates off; returns its path."""
    data = workdir / "data"
    data.mkdir()
    write_nlu(train, data / "nlu.yml")
    shutil.copy(ROOT / "data" / "responses" / "faq.yml", data / "responses.yml")
    config = workdir / "config.yml"
    ungated_config(source_config, config)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "rasa"),
            "train",
            "nlu",
            "--config",
            str(config),
            "--nlu",
            str(data),
            "--domain",
            str(ROOT / "domain.yml"),
            "--out",
            str(workdir),
            "--fixed-model-name",
            "ungated",
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return workdir / "ungated.tar.gz"


async def score(model: Path, test: List[Tuple[str, str]]) -> List[Dict[str, Any]]:
    """Raw confidences for every validation example."""
    from rasa.core.agent import Agent

    agent = Agent.load(str(model))
    records = []
    for text, label in test:
        parse = await agent.parse_message(text)
        predicted, intent_confidence, answer_confidence = predicted_label(parse)
        selector = (parse.get("response_selector") or {}).get(RETRIEVAL_INTENT)
        ranking = (selector or {}).get("ranking") or []
        margin = (
            float(ranking[0]["confidence"]) - float(ranking[1]["confidence"])
            if len(ranking) > 1
            else 1.0
        )
        records.append(
            {
                "label": label,
                "predicted": predicted,
                "intent_confidence": intent_confidence,
                "answer_confidence": answer_confidence or 0.0,
                "answer_margin": margin,
            }
        )
    return records


def sweep(records: List[Dict[str, Any]]) -> List[Dict[str, float]]:
    """Scores every (intent threshold, answer threshold) pair of the grid."""
    rows = []
    for intent_threshold in GRID:
        for answer_threshold in GRID:
            correct = wrong = fallback = 0
            for record in records:
                is_faq = record["predicted"].startswith(f"{RETRIEVAL_INTENT}/")
                answered = record["intent_confidence"] >= intent_threshold and (
                    not is_faq or record["answer_confidence"] >= answer_threshold
                )
                if not answered:
                    fallback += 1
                elif record["predicted"] == record["label"]:
                    correct += 1
                else:
                    wrong += 1
            rows.append(
                {
                    "intent_threshold": intent_threshold,
                    "answer_threshold": answer_threshold,
                    "correct": correct,
                    "wrong": wrong,
                    "fallback": fallback,
                    "score": correct - COST_OF_WRONG_ANSWER * wrong,
                }
            )
    return rows


def main() -> int:
    """Trains, scores the validation set and prints the best thresholds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--validation",
        type=Path,
        nargs="+",
        default=VALIDATION_SETS,
        help="validation files (default: every data_validation/*.yml)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--config", type=Path, default=ROOT / "config.yml")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        model = train_ungated(Path(workdir), load_training_examples(), args.config)
        examples = [ex for path in args.validation for ex in load_examples(path)]
        records = asyncio.run(score(model, examples))

    # Best score first; among equal scores, fewer wrong answers, then the higher
    # (more cautious) thresholds.
    rows = sorted(
        sweep(records),
        key=lambda row: (
            row["score"],
            -row["wrong"],
            row["intent_threshold"] + row["answer_threshold"],
        ),
        reverse=True,
    )
    total = len(records)
    print(
        f"\n{total} validation messages, cost of a wrong answer {COST_OF_WRONG_ANSWER}"
    )
    print("intent_thr answer_thr  correct  wrong  fallback  score")
    for row in rows[:10]:
        print(
            f"{row['intent_threshold']:10.2f} {row['answer_threshold']:10.2f}"
            f" {row['correct']:8d} {row['wrong']:6d} {row['fallback']:9d}"
            f" {row['score']:6.1f}"
        )
    no_gate = next(
        r for r in rows if r["intent_threshold"] == r["answer_threshold"] == 0
    )
    print(
        f"without any gate: {no_gate['correct']} correct, {no_gate['wrong']} wrong"
        f" of {total}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"records": records, "sweep": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
