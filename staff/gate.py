"""The checks a new model must pass before it may go live.

Each check runs the project's own tools in a subprocess, with its output in a log
file of the retrain's results folder, and raises ``CheckFailed`` with a reason staff
can act on:

- ``validate``: the FAQ content rules, then ``rasa data validate --fail-on-warnings``
  (as ``make validate`` runs it);
- ``evaluate`` and ``compare``: ``scripts/evaluate_nlu.py`` on the held-out set;
  overall accuracy must reach the minimum, and no label may drop by more than the
  tolerance (or one of its questions, whichever is more) against the live model;
- ``conversation_tests``: ``rasa test core --e2e`` on ``tests/stories`` with
  ``--fail-on-prediction-errors``. ``--e2e`` sends each story message through the
  new NLU too; without it Rasa only checks the actions for the labelled intents.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from staff import faq_data
from staff.project import CODE_ROOT, Project

# A label that drops is shown with this many of its newly missed questions.
SHOW_ERRORS = 3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CheckFailed(Exception):
    """The new model may not go live, or a command could not run; says why."""


@dataclass
class Evaluation:
    """Held-out results of one model (``scripts/evaluate_nlu.py --json``)."""

    accuracy: float
    per_label: Dict[str, float]
    errors: List[Dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Evaluation:
        """From evaluate_nlu.py's JSON (or its copy in the history)."""
        return cls(
            accuracy=float(data["accuracy"]),
            per_label={k: float(v) for k, v in data["per_label"].items()},
            errors=list(data.get("errors") or []),
        )

    def as_json(self) -> Dict[str, Any]:
        """For the history's cache."""
        return {
            "accuracy": self.accuracy,
            "per_label": self.per_label,
            "errors": self.errors,
        }


def compare(
    candidate: Evaluation,
    live: Optional[Evaluation],
    tolerance: float,
    min_accuracy: float,
) -> List[str]:
    """Why the candidate is worse than the live model; empty when it is not.

    A label the live model was not evaluated on (a new topic) has nothing to be
    compared with; the overall minimum still applies.
    """
    problems = []
    live_note = f" (live model: {live.accuracy:.1%})" if live else ""
    if candidate.accuracy < min_accuracy:
        problems.append(
            f"Held-out accuracy would be {candidate.accuracy:.1%}, below the minimum "
            f"of {min_accuracy:.0%}{live_note}."
        )
    counts = heldout_counts()
    for label, before in sorted((live.per_label if live else {}).items()):
        after = candidate.per_label.get(label)
        # A label may always lose one of its questions: with 4-7 held-out questions
        # per label, a stricter rule refuses nearly every edit on one borderline
        # message.
        allowed = max(tolerance, 1.0 / counts[label] if counts.get(label) else 0.0)
        if after is None or before - after <= allowed + 1e-9:
            continue
        misses = [e for e in candidate.errors if e.get("expected") == label]
        shown = "; ".join(
            f"{e['text']!r} now gets {e['predicted']}" for e in misses[:SHOW_ERRORS]
        )
        problems.append(
            f"{label}: {after:.0%} of its held-out questions answered right, down "
            f"from {before:.0%} (at most {allowed:.0%}, or one question, may be "
            f"lost). {shown}."
        )
    return problems


@lru_cache(maxsize=1)
def heldout_counts() -> Dict[str, int]:
    """How many held-out questions each label has."""
    from scripts.evaluate_nlu import load_examples

    return dict(Counter(label for _, label in load_examples()))


# --- running the project's tools ----------------------------------------------------


def _tool_env() -> Dict[str, str]:
    """The environment of the Rasa commands: no telemetry, the project importable."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env.update(
        {
            "RASA_TELEMETRY_ENABLED": "false",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "PYTHONPATH": f"{CODE_ROOT}{os.pathsep + path if path else ''}",
        }
    )
    return env


def tail(log: Path, lines: int = 12) -> str:
    """The last lines of a log, indented, to show under a failure."""
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(f"    {line}" for line in text[-lines:])


def run_logged(command: Sequence[str], log: Path, cwd: Path) -> int:
    """Runs a command with its output in ``log``; returns its exit code."""
    with open(log, "wb") as output:
        return subprocess.run(
            list(command),
            cwd=cwd,
            env=_tool_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode


def rasa(*args: str) -> List[str]:
    """A command line of the venv's ``rasa``."""
    return [str(Path(sys.executable).parent / "rasa"), *args]


def validate(project: Project, work: Path) -> None:
    """The FAQ content rules, then ``rasa data validate --fail-on-warnings``."""
    problems = faq_data.data_problems(project)
    if problems:
        raise CheckFailed(
            "The FAQ data breaks the content rules:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
    log = work / "validate.log"
    command = rasa(
        "data",
        "validate",
        "--fail-on-warnings",
        "--domain",
        str(project.domain),
        "--data",
        str(project.root / "data"),
        "--config",
        str(project.config),
    )
    if run_logged(command, log, project.root) != 0:
        raise CheckFailed(
            f"rasa data validate found problems. Last lines of {log}:\n" + tail(log)
        )


def evaluate(project: Project, model: Path, work: Path, name: str) -> Evaluation:
    """Held-out evaluation of one model, through scripts/evaluate_nlu.py."""
    result = work / f"{name}.json"
    command = [
        sys.executable,
        str(CODE_ROOT / "scripts" / "evaluate_nlu.py"),
        "--model",
        str(model),
        "--data",
        str(project.heldout),
        "--json",
        str(result),
    ]
    log = work / f"{name}.log"
    if run_logged(command, log, project.root) != 0 or not result.is_file():
        raise CheckFailed(
            f"The held-out evaluation of {model.name} did not run. Last lines of "
            f"{log}:\n{tail(log)}"
        )
    return Evaluation.from_json(json.loads(result.read_text(encoding="utf-8")))


def failed_stories(folder: Path, log: Path) -> List[str]:
    """The failing conversation tests, as readable lines.

    With ``--fail-on-prediction-errors`` Rasa stops at the first wrong prediction
    and prints the story with "# predicted: ..." comments instead of writing
    ``failed_test_stories.yml``; both are read.
    """
    failed = folder / "failed_test_stories.yml"
    if failed.is_file():
        document = yaml.safe_load(failed.read_text(encoding="utf-8")) or {}
        names = [str(story.get("story")) for story in document.get("stories") or []]
        if names:
            return names
    text = _ANSI.sub("", log.read_text(encoding="utf-8", errors="replace"))
    _, marker, story = text.partition("Failed Story:")
    if not marker:
        return []
    lines = [line.strip() for line in story.strip().splitlines()]
    return [
        line for line in lines if line and not line.startswith(("version:", "stories:"))
    ][:12]


def conversation_tests(project: Project, model: Path, work: Path) -> None:
    """``rasa test core --e2e`` on tests/stories: every story must pass."""
    out = work / "stories"
    # No tracker store, no action server: the stories never touch patient data.
    endpoints = work / "endpoints.yml"
    endpoints.write_text("# in-memory tracker store\n", encoding="utf-8")
    command = rasa(
        "test",
        "core",
        "--e2e",
        "--model",
        str(model),
        "--stories",
        str(project.stories),
        "--fail-on-prediction-errors",
        "--no-plot",
        "--endpoints",
        str(endpoints),
        "--out",
        str(out),
    )
    log = work / "stories.log"
    code = run_logged(command, log, project.root)
    failed = failed_stories(out, log)
    if code != 0 or failed:
        details = "\n".join(f"    {line}" for line in failed) or tail(log)
        raise CheckFailed(
            f"A conversation test in {project.stories} fails with the new model "
            f"(log: {log}):\n{details}"
        )
