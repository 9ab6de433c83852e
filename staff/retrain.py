"""Retrain, check, publish and roll back the model, with one command each.

``retrain`` trains a new model file from the current data and lets it go live only
if it is at least as good as the live one:

1. validate: the FAQ content rules and ``rasa data validate --fail-on-warnings``;
2. train: ``rasa train`` into ``models/candidate-<time>.tar.gz`` (the live file is
   never written to);
3. held-out: ``scripts/evaluate_nlu.py`` on ``tests/nlu_heldout/heldout.yml``, for
   the new model and (once per model, then cached) the live one: overall accuracy
   must reach ``MIN_HELDOUT_ACCURACY`` and no label may drop by more than the
   tolerance;
4. stories: ``rasa test core --e2e`` on ``tests/stories`` with
   ``--fail-on-prediction-errors`` (``--e2e`` so the story messages go through the
   new NLU too, not just their labelled intents);
5. publish (with ``--publish``): ``PUT /model`` on the running server, which keeps
   answering with the old model until the new one is loaded; the previous model is
   kept for ``rollback``.

A failed step publishes nothing, deletes the candidate and says why. The checks are
in ``staff/gate.py``; retrains and rollbacks take turns (``staff/locking.py``).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from staff import gate
from staff.gate import CheckFailed, Evaluation, compare
from staff.history import (
    OUR_PREFIXES,
    History,
    data_fingerprint,
    file_sha256,
    model_id_of,
    now_iso,
)
from staff.locking import Busy, Say, retrain_lock
from staff.project import Settings
from staff.rasa_api import ApiError, RasaApi

__all__ = ["Busy", "CheckFailed", "Evaluation", "compare", "retrain", "rollback"]

DEFAULT_TOLERANCE = 0.10
DEFAULT_WAIT = 900.0
STEPS = 5


@dataclass
class Options:
    """What ``clinicbot retrain`` was asked to do."""

    publish: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    min_accuracy: Optional[float] = None  # None: MIN_HELDOUT_ACCURACY
    wait: bool = True
    wait_seconds: float = DEFAULT_WAIT


@dataclass
class Outcome:
    """What a retrain did, for the caller and the benchmark."""

    published: bool
    candidate: Optional[Path]
    total_seconds: float
    train_seconds: Optional[float] = None
    edit_to_live_seconds: Optional[float] = None
    message: str = ""


# --- running the steps ------------------------------------------------------------


class Progress:
    """Prints a line as each step starts and ends, with the time since the start."""

    def __init__(self, say: Say) -> None:
        """Starts the clock."""
        self.say = say
        self.start = time.monotonic()
        self.durations: Dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    @contextlib.contextmanager
    def step(self, number: int, name: str, doing: str) -> Iterator[List[str]]:
        """Announces a step; the caller appends a short result to the list given."""
        self.say(f"[{self.elapsed():6.1f} s] {number}/{STEPS} {name}: {doing}")
        began = time.monotonic()
        result: List[str] = []
        try:
            yield result
        except CheckFailed:
            took = time.monotonic() - began
            self.say(f"[{self.elapsed():6.1f} s] {number}/{STEPS} {name}: FAILED")
            self.durations[name] = took
            raise
        took = time.monotonic() - began
        self.durations[name] = took
        detail = f": {result[0]}" if result else ""
        self.say(
            f"[{self.elapsed():6.1f} s] {number}/{STEPS} {name}: ok ({took:.1f} s)"
            f"{detail}"
        )


# --- the live model ---------------------------------------------------------------


@dataclass
class Live:
    """The model the assistant answers with, and how we know."""

    path: Path
    model_id: str
    source: str  # "the running assistant" or "models/history.json" or MODEL_PATH


def find_live(settings: Settings, history: History, need_server: bool) -> Live:
    """The live model: the running server's, else the history's, else MODEL_PATH."""
    api = RasaApi(settings.rasa_url, settings.api_token)
    try:
        model_id = api.live_model_id()
    except ApiError as error:
        if need_server:
            raise CheckFailed(f"Cannot publish: {error} Nothing was trained.") from None
        recorded = history.file(history.live) if history.live else settings.model_path
        if not recorded.is_file():
            raise CheckFailed(
                f"There is no live model to compare with ({recorded} is missing): "
                "run make train first."
            ) from None
        return Live(recorded, model_id_of(recorded) or "", recorded.name)
    path = history.find(model_id, extra=[settings.model_path])
    if path is None:
        raise CheckFailed(
            f"The running assistant serves a model (id {model_id}) that is not in "
            f"{settings.project.models_dir}; cannot compare with it."
        )
    return Live(path, model_id, "the running assistant")


def _live_evaluation(
    settings: Settings, history: History, live: Live, work: Path
) -> Evaluation:
    """The live model's held-out results, from the cache when still valid."""
    heldout_sha = file_sha256(settings.project.heldout)
    cached = history.evaluations.get(live.model_id) if live.model_id else None
    if cached and cached.get("heldout_sha256") == heldout_sha:
        return Evaluation.from_json(cached)
    evaluation = gate.evaluate(settings.project, live.path, work, "live-heldout")
    if live.model_id:
        history.evaluations[live.model_id] = {
            "heldout_sha256": heldout_sha,
            **evaluation.as_json(),
        }
    return evaluation


# --- retrain ----------------------------------------------------------------------


def _newest_edit(settings: Settings) -> Optional[float]:
    times = [p.stat().st_mtime for p in settings.project.edited_files() if p.exists()]
    return max(times) if times else None


def retrain(settings: Settings, options: Options, say: Say = print) -> Outcome:
    """Validates, trains, checks and (with ``publish``) publishes a new model."""
    with retrain_lock(
        settings.project.models_dir,
        "retrain --publish" if options.publish else "retrain",
        options.wait,
        options.wait_seconds,
        say,
    ):
        return _retrain_locked(settings, options, say)


def _retrain_locked(settings: Settings, options: Options, say: Say) -> Outcome:
    project = settings.project
    progress = Progress(say)
    history = History.load(project.models_dir)
    live = find_live(settings, history, need_server=options.publish)
    fingerprint = data_fingerprint(project)
    live_fingerprint = history.models.get(live.path.name, {}).get("data_fingerprint")
    if options.publish and live_fingerprint == fingerprint:
        message = (
            f"Nothing to do: the live model ({live.path.name}) was trained on exactly "
            "the current data."
        )
        say(message)
        return Outcome(False, None, progress.elapsed(), message=message)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = project.results_dir / stamp
    work.mkdir(parents=True, exist_ok=True)
    candidate = project.models_dir / f"candidate-{stamp}.tar.gz"
    min_accuracy = (
        settings.min_heldout_accuracy
        if options.min_accuracy is None
        else options.min_accuracy
    )
    say(
        f"Retraining from the current data; comparing with the live model "
        f"{live.path.name} ({live.source}). Logs: {work}"
    )
    try:
        with progress.step(1, "validate", "content rules, rasa data validate") as done:
            gate.validate(project, work)
            done.append("no problems")
        with progress.step(2, "train", f"rasa train -> {candidate.name}"):
            code = gate.run_logged(
                gate.rasa(
                    "train",
                    "--config",
                    str(project.config),
                    "--domain",
                    str(project.domain),
                    "--data",
                    str(project.root / "data"),
                    "--out",
                    str(project.models_dir),
                    "--fixed-model-name",
                    candidate.name.removesuffix(".tar.gz"),
                ),
                work / "train.log",
                project.root,
            )
            if code != 0 or not candidate.is_file():
                raise CheckFailed(
                    "Training failed. Last lines of the log:\n"
                    + gate.tail(work / "train.log")
                )
        train_seconds = progress.durations["train"]
        with progress.step(3, "held-out", "evaluating on the held-out set") as result:
            new = gate.evaluate(project, candidate, work, "heldout")
            old = _live_evaluation(settings, history, live, work)
            problems = compare(new, old, options.tolerance, min_accuracy)
            if problems:
                raise CheckFailed(
                    "The new model is worse than the live one:\n"
                    + "\n".join(f"  - {problem}" for problem in problems)
                )
            result.append(
                f"{new.accuracy:.1%} right (live {old.accuracy:.1%}, minimum "
                f"{min_accuracy:.0%}); no label dropped more than "
                f"{options.tolerance:.0%}"
            )
        with progress.step(4, "stories", "rasa test core --e2e, tests/stories") as done:
            gate.conversation_tests(project, candidate, work)
            done.append("every conversation test passes")
        model_id = model_id_of(candidate) or ""
        history.models[candidate.name] = {
            "model_id": model_id,
            "data_fingerprint": fingerprint,
            "trained_at": now_iso(),
            "train_seconds": round(train_seconds, 1),
            "heldout_accuracy": new.accuracy,
        }
        history.evaluations[model_id] = {
            "heldout_sha256": file_sha256(project.heldout),
            **new.as_json(),
        }
        if not options.publish:
            history.models.pop(candidate.name)
            history.save()
            candidate.unlink()
            message = (
                f"All checks passed in {progress.elapsed():.1f} s. Nothing was "
                "published: run 'clinicbot retrain --publish' to make a new model live."
            )
            say(message)
            return Outcome(
                False, None, progress.elapsed(), train_seconds, None, message
            )
        _publish(settings, history, live, candidate, progress)
    except BaseException as failure:  # Ctrl-C too: never leave a candidate behind
        if candidate.is_file():
            candidate.unlink()
        history.models.pop(candidate.name, None)
        if isinstance(failure, CheckFailed):
            say(f"Stopped after {progress.elapsed():.1f} s; nothing was published.")
            history.record("rejected", model=candidate.name, reason=str(failure))
            history.save()
        raise

    published_at = time.time()
    newest = _newest_edit(settings)
    edit_to_live = published_at - newest if newest else None
    total = progress.elapsed()
    say(f"Done in {total:.1f} s: {candidate.name} is live.")
    say(
        f"Benchmark: training {train_seconds:.1f} s; retrain {total:.1f} s; "
        + (
            f"newest data edit to live {edit_to_live:.1f} s."
            if edit_to_live is not None
            else "no data edit found."
        )
    )
    return Outcome(
        True, candidate, total, train_seconds, edit_to_live, f"{candidate.name} live"
    )


def _snapshot(history: History, live: Live) -> str:
    """The stack entry for the live model, copying it if a script may overwrite it."""
    if live.path.parent == history.path.parent and live.path.name.startswith(
        OUR_PREFIXES
    ):
        return live.path.name
    name = f"baseline-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"
    shutil.copy2(live.path, history.file(name))
    history.models[name] = {"model_id": live.model_id, "copied_from": str(live.path)}
    return name


def _publish(
    settings: Settings,
    history: History,
    live: Live,
    candidate: Path,
    progress: Progress,
) -> None:
    api = RasaApi(settings.rasa_url, settings.api_token)
    with progress.step(5, "publish", f"PUT /model on {settings.rasa_url}") as result:
        model_id = history.models[candidate.name]["model_id"]
        try:
            api.load_model(candidate)
            now_live = api.live_model_id()
        except ApiError as error:
            raise CheckFailed(str(error)) from None
        if now_live != model_id:
            raise CheckFailed(
                f"The assistant reports model {now_live} after loading {model_id}; "
                "check it with GET /status."
            )
        previous = _snapshot(history, live)
        if not history.published or history.published[-1] != previous:
            history.published.append(previous)
        history.published.append(candidate.name)
        history.live, history.pinned = candidate.name, False
        history.record("published", model=candidate.name, previous=previous)
        history.prune()
        history.save()
        result.append("live; the previous model is kept for 'clinicbot rollback'")


# --- rollback and restart ---------------------------------------------------------


UNDO_ADVICE = (
    "undo them before the next 'clinicbot retrain --publish' ('clinicbot faq show "
    "TOPIC' lists a topic's examples and earlier answers; 'clinicbot faq "
    "remove-example TOPIC \"text\"' and 'clinicbot faq restore-answer TOPIC N' undo "
    "an added example and a changed answer)"
)


def rollback(
    settings: Settings, wait: bool = True, say: Say = print, undo: str = UNDO_ADVICE
) -> Path:
    """Makes the previously published model live again (``undo``: how to undo edits)."""
    with retrain_lock(settings.project.models_dir, "rollback", wait, DEFAULT_WAIT, say):
        history = History.load(settings.project.models_dir)
        if len(history.published) < 2:
            raise CheckFailed(
                "There is no earlier model to go back to: nothing has been published "
                "with 'clinicbot retrain --publish' yet."
            )
        current, previous = history.published[-1], history.published[-2]
        target = history.file(previous)
        if not target.is_file():
            raise CheckFailed(f"The earlier model {target} is missing.")
        api = RasaApi(settings.rasa_url, settings.api_token)
        try:
            serving = api.live_model_id()
            if serving != history.models.get(current, {}).get("model_id"):
                say(
                    f"Note: the assistant was not serving {current} (the last "
                    "published model) but another; rolling back anyway."
                )
            api.load_model(target)
            now_live = api.live_model_id()
        except ApiError as error:
            raise CheckFailed(f"Cannot roll back: {error}") from None
        expected = history.models.get(previous, {}).get("model_id") or model_id_of(
            target
        )
        if now_live != expected:
            raise CheckFailed(
                f"The assistant reports model {now_live} after loading {previous}."
            )
        history.published.pop()
        history.live, history.pinned = previous, True
        history.record("rolled back", model=previous, replaced=current)
        history.prune()
        history.save()
        say(
            f"{previous} is live again; {current} was removed. The data files still "
            f"hold the edits it was trained on: {undo}, or they come back."
        )
        return target


def restart_model(settings: Settings) -> Optional[Path]:
    """The model scripts/run.sh should serve instead of training, if any."""
    return History.load(settings.project.models_dir).restart_model(settings.project)
