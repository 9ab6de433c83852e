"""Which model is live, which were live before, and what each was checked at.

``models/history.json`` is small and readable::

    {"live": "candidate-20261126-015012.tar.gz",
     "pinned": false,
     "published": ["baseline-20261126-014900.tar.gz", "candidate-...tar.gz"],
     "models": {"candidate-...tar.gz": {"model_id": ..., "data_fingerprint": ...}},
     "evaluations": {"<model id>": {"heldout_sha256": ..., "accuracy": ...}},
     "log": [{"at": ..., "event": "published", ...}]}

``published`` is a stack, oldest first: ``clinicbot rollback`` goes back one step. A
model that was live before any publish (``models/clinic.tar.gz``, which
``scripts/train.sh`` overwrites) is first copied to ``baseline-<time>.tar.gz`` so a
rollback brings back exactly what was live. Model files are about 1.3 MB.

``pinned`` is set by a rollback: the model stays the one to serve after a restart even
though the data files still hold the edits it was rolled back from.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from staff.project import CODE_ROOT, Project

HISTORY_FILE = "history.json"
KEEP_PUBLISHED = 5
KEEP_LOG = 200
KEEP_EVALUATIONS = 20
OUR_PREFIXES = ("candidate-", "baseline-")


def model_id_of(model: Path) -> Optional[str]:
    """The model id Rasa wrote into a model archive (what ``GET /status`` reports)."""
    try:
        with tarfile.open(model, "r:gz") as archive:
            member = archive.extractfile("metadata.json")
            if member is None:
                return None
            return str(json.load(member).get("model_id") or "") or None
    except (OSError, tarfile.TarError, KeyError, ValueError):
        return None


def data_fingerprint(project: Project) -> str:
    """A hash of every file a model is trained from (``Project.training_inputs``)."""
    digest = hashlib.sha256()
    for path in project.training_inputs():
        root = project.root if path.is_relative_to(project.root) else CODE_ROOT
        digest.update(str(path.relative_to(root)).encode("utf-8") + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, e.g. the held-out set a result was measured on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def now_iso() -> str:
    """The current local time, to the second, for people to read."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class History:
    """The contents of ``models/history.json``."""

    path: Path
    live: Optional[str] = None
    pinned: bool = False
    published: List[str] = field(default_factory=list)
    models: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    evaluations: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    log: List[Dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, models_dir: Path) -> History:
        """Reads the history; an empty one if there is none yet."""
        path = models_dir / HISTORY_FILE
        if not path.is_file():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            path=path,
            live=data.get("live"),
            pinned=bool(data.get("pinned")),
            published=list(data.get("published") or []),
            models=dict(data.get("models") or {}),
            evaluations=dict(data.get("evaluations") or {}),
            log=list(data.get("log") or []),
        )

    def save(self) -> None:
        """Writes the history atomically: a reader never sees half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "live": self.live,
            "pinned": self.pinned,
            "published": self.published,
            "models": self.models,
            # held-out results by model id: the live ones are what is read again
            "evaluations": dict(list(self.evaluations.items())[-KEEP_EVALUATIONS:]),
            "log": self.log[-KEEP_LOG:],
        }
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".history.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, self.path)

    def file(self, name: str) -> Path:
        """The path of a model file named in the history."""
        return self.path.parent / name

    def record(self, event: str, **details: Any) -> None:
        """Adds a line to the log."""
        self.log.append({"at": now_iso(), "event": event, **details})

    def find(self, model_id: str, extra: Iterable[Path] = ()) -> Optional[Path]:
        """The model file with this id: a known one, any in models/, or ``extra``."""
        for name, info in self.models.items():
            if info.get("model_id") == model_id and self.file(name).is_file():
                return self.file(name)
        candidates = [*extra, *sorted(self.path.parent.glob("*.tar.gz"))]
        for path in candidates:
            if path.is_file() and model_id_of(path) == model_id:
                return path
        return None

    def prune(self) -> List[Path]:
        """Deletes model files of ours that are neither live nor in the stack."""
        dropped = self.published[:-KEEP_PUBLISHED]
        self.published = self.published[-KEEP_PUBLISHED:]
        keep = {*self.published, self.live}
        removed = []
        for name in [*dropped, *list(self.models)]:
            if name in keep or not name.startswith(OUR_PREFIXES):
                continue
            self.models.pop(name, None)
            path = self.file(name)
            if path.is_file():
                path.unlink()
                removed.append(path)
        return removed

    def restart_model(self, project: Project) -> Optional[Path]:
        """The model a restart should serve, if the history has one still valid.

        That is the live model when it was trained on exactly the current data (or
        was pinned by a rollback); otherwise None, and the caller trains as usual.
        """
        if not self.live or not self.file(self.live).is_file():
            return None
        trained_on = self.models.get(self.live, {}).get("data_fingerprint")
        if self.pinned or trained_on == data_fingerprint(project):
            return self.file(self.live)
        return None


# --- earlier answers of FAQ topics ---------------------------------------------------

ANSWERS_FILE = "answers.json"
KEEP_ANSWERS = 10


def earlier_answers(models_dir: Path, topic: str) -> List[Dict[str, str]]:
    """The answers ``topic`` had before, newest first: ``{"at": ..., "text": ...}``."""
    path = models_dir / ANSWERS_FILE
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return list(reversed(data.get(topic) or []))


def remember_answer(models_dir: Path, topic: str, text: str) -> None:
    """Keeps an answer that is being replaced, so the staff page can restore it."""
    path = models_dir / ANSWERS_FILE
    data: Dict[str, List[Dict[str, str]]] = {}
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
    kept = [entry for entry in data.get(topic) or [] if entry.get("text") != text]
    kept.append({"at": now_iso(), "text": text})
    data[topic] = kept[-KEEP_ANSWERS:]
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=models_dir, prefix=".answers.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
