"""The clinic facts file (``clinic.yml``): where it is, how it is read, its errors.

One reader for the file's two parsers: the clinic facts (``actions/settings.py``)
and the ``scheduling:`` section (``scheduling/config.py``), so neither imports the
other and both report an unreadable file in the same words. Each parser caches
what it parsed (``clinic()``, ``scheduling_config()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Type

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLINIC_CONFIG = PROJECT_ROOT / "clinic.yml"
# Top-level keys of the file that are sections of their own, not clinic facts.
SECTIONS = frozenset({"scheduling"})


class ClinicConfigError(ValueError):
    """The clinic facts file is missing, unreadable or malformed."""


def read_clinic_file(
    path: Path, error: Type[ClinicConfigError] = ClinicConfigError
) -> object:
    """The parsed YAML of the file; a missing or broken file raises ``error``."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as problem:
        raise error(f"Cannot read clinic config {path}: {problem}") from problem
    except yaml.YAMLError as problem:
        raise error(f"{path} is not valid YAML: {problem}") from problem
