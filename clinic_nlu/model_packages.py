"""The files of the pinned model packages (``requirements-model.txt``).

Neither package is imported: the spaCy model's ``__init__`` is broken, and the
sentence encoder's prints on import. Their files are found by the package's folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class ModelMissingError(RuntimeError):
    """A pinned model package, or the file needed from it, is not installed."""


def package_file(package: str, name: str, what: str) -> Path:
    """The file (or folder) ``name`` of the installed ``package``.

    Raises:
        ModelMissingError: naming ``what`` (e.g. "spaCy model") and the fix.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            f"The {what} package '{package}' is not installed; run 'make setup'."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.exists():
        raise ModelMissingError(f"No {what} at {path}; run 'make setup'.")
    return path
