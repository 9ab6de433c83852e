"""The clinic facts file (``clinic.yml``): how it is read, its facts, its errors.

One reader for the file's two parsers: the clinic facts (here, so the Rasa server's
components, the channels and the action server share them without importing one
another) and the ``scheduling:`` section (``scheduling/config.py``); both report
an unreadable file in the same words. Each parser caches what it parsed
(``clinic()``, ``scheduling_config()``). Nothing is read at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Type

import yaml

from clinic_common import settings

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


@dataclass(frozen=True)
class ClinicInfo:
    """Facts about the clinic. An empty string means "not known": never shown."""

    name: str
    city: str
    state: str
    address: str = ""
    phone: str = ""
    hours: str = ""
    website: str = ""

    def contact_details(self) -> str:
        """The known ways to reach the clinic, joined; empty if none is known."""
        parts = [
            f"{label} {value}"
            for label, value in (
                ("Phone:", self.phone),
                ("Address:", self.address),
                ("Website:", self.website),
            )
            if value
        ]
        return "; ".join(parts)

    def contact_sentence(self) -> str:
        """A sentence with the contact details, led by a space; empty if none."""
        details = self.contact_details()
        return f" You can reach us here: {details}" if details else ""

    def template_values(self) -> Dict[str, str]:
        """Values for the ``{clinic_*}`` placeholders of the responses."""
        return {
            "clinic_name": self.name,
            "clinic_city": self.city,
            "clinic_state": self.state,
        }


def parse_clinic_config(raw: object, source: str) -> ClinicInfo:
    """Builds a :class:`ClinicInfo` from parsed YAML, with clear errors."""
    if not isinstance(raw, dict):
        raise ClinicConfigError(f"{source}: expected a mapping of clinic facts.")
    raw = {key: value for key, value in raw.items() if key not in SECTIONS}
    known = {field.name for field in fields(ClinicInfo)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ClinicConfigError(
            f"{source}: unknown field(s) {', '.join(unknown)}; "
            f"known fields are {', '.join(sorted(known))}."
        )
    values: Dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            value = ""
        if not isinstance(value, (str, int)):
            raise ClinicConfigError(f"{source}: field '{key}' must be text.")
        values[key] = str(value).strip()
    missing: List[str] = [
        name for name in ("name", "city", "state") if not values.get(name)
    ]
    if missing:
        raise ClinicConfigError(
            f"{source}: field(s) {', '.join(missing)} must be filled in."
        )
    return ClinicInfo(**values)


@lru_cache(maxsize=1)
def clinic() -> ClinicInfo:
    """The clinic facts, read once from ``$CLINIC_CONFIG`` or ``clinic.yml``."""
    path = settings.load().clinic_config
    return parse_clinic_config(read_clinic_file(path), str(path))
