"""Settings of the action server: the clinic facts of ``clinic.yml``.

The environment is read by ``clinic_common.settings`` (``CLINIC_CONFIG`` names the
file) and the file by ``clinic_common.clinic_config``; this module parses the facts.
Nothing is read at import time: the action server imports every module of this
package when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Dict, List

from clinic_common import settings
from clinic_common.clinic_config import SECTIONS, read_clinic_file
from clinic_common.clinic_config import ClinicConfigError as ClinicConfigError

# "Did you mean" suggests a topic only if its confidence reaches this share. Chosen on
# data_validation/*.yml (625 messages): all 416 right suggestions score 0.134 or more;
# 14 of 15 out-of-scope messages score below 0.1 (the 15th, 0.35).
SUGGESTION_MIN_CONFIDENCE = 0.12

# Sections of clinic.yml that other modules parse and this one ignores:
# ``scheduling`` belongs to scheduling/config.py.
OTHER_SECTIONS = SECTIONS


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
    raw = {key: value for key, value in raw.items() if key not in OTHER_SECTIONS}
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
