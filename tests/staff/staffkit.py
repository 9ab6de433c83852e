"""Helpers of the staff tool tests: a temporary copy of the project's data files.

The tests edit the copy, never the repository's own files. (No ``__init__.py`` in this
folder: as a package it would be called ``staff`` and hide the real one.)
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Dict, Optional

from staff.project import CODE_ROOT, Project, Settings

DATA_PATHS = (
    "config.yml",
    "domain.yml",
    "data",
    "data_validation",
    "tests/nlu_heldout",
    "tests/stories",
    "tests/stories_known_nlu_misses",
    "actions/faq_titles.yml",
)


def copy_project(destination: Path) -> Project:
    """Copies the data files a staff command reads or writes into ``destination``."""
    for relative in DATA_PATHS:
        source, target = CODE_ROOT / relative, destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return Project(destination)


def settings_for(
    project: Project,
    state_dir: Path,
    rasa_url: str = "http://127.0.0.1:9",
    api_token: Optional[str] = "test-token",
    min_accuracy: float = 0.9,
) -> Settings:
    """Settings of a test: its own state folder, tracker store and model path."""
    return Settings(
        project=project,
        state_dir=state_dir,
        tracker_db=state_dir / "tracker.db",
        model_path=project.models_dir / "clinic.tar.gz",
        rasa_url=rasa_url,
        api_token=api_token,
        min_heldout_accuracy=min_accuracy,
    )


def snapshot(project: Project) -> Dict[str, str]:
    """A hash of every file under the copy, to show a refused edit wrote nothing."""
    return {
        str(path.relative_to(project.root)): hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        for path in sorted(project.root.rglob("*"))
        if path.is_file() and ".lock" not in path.name
    }


def comment_lines(path: Path) -> list[str]:
    """The comment lines of a YAML file, in order."""
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith("#")
    ]
