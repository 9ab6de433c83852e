"""The clinic facts file (``clinic.yml``): how it is read, its facts, its errors.

One reader for the file's parsers: the clinic facts and the ``reminders:`` section
(here, so the Rasa server's components, the channels, the action server and the
reminder job share them without importing one another) and the ``scheduling:``
section (``scheduling/config.py``); all report an unreadable file in the same
words. Each parser caches what it parsed (``clinic()``, ``reminder_config()``,
``scheduling_config()``). Nothing is read at import time.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, fields
from datetime import time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Type

import yaml

from clinic_common import settings

# Top-level keys of the file that are sections of their own, not clinic facts.
SECTIONS = frozenset({"scheduling", "reminders"})


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


# --- reminders (issue 14) ------------------------------------------------------

REMINDERS_SECTION = "reminders"
# The placeholders a reminder's wording may use, and those it must use.
REMINDER_FIELDS = frozenset({"clinic_name", "visit", "day", "time"})
DEFAULT_REMINDER_TEMPLATE = (
    "{clinic_name}: your {visit} visit is {day} at {time}."
    " Reply 1 to confirm, 2 to reschedule, 3 to cancel. STOP to opt out."
)
# A reply the reminder offers must be one of these digits, never a word that
# Twilio and the carriers take as an opt-out (CANCEL, STOP, ...).
_REPLIES = (re.compile(r"\b1\b"), re.compile(r"\b2\b"), re.compile(r"\b3\b"))
_OPT_OUT = re.compile(r"\bSTOP\b")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True)
class ReminderConfig:
    """When and what the reminder job sends (``reminders:`` in ``clinic.yml``).

    ``offsets``: how long before the visit each reminder is due, longest first.
    ``send_from``/``send_until``: local hours (the clinic's time zone, from the
    ``scheduling:`` section) a text may be sent in; a reminder due outside is sent
    at the last allowed time before.
    ``template``: the wording, with the :data:`REMINDER_FIELDS` placeholders.
    """

    offsets: Tuple[timedelta, ...] = (timedelta(hours=24),)
    send_from: time = time(8, 0)
    send_until: time = time(20, 0)
    template: str = DEFAULT_REMINDER_TEMPLATE


def parse_reminder_config(raw: object, source: str) -> ReminderConfig:
    """The ``reminders:`` section (None: every default), with clear errors.

    The wording must use only known placeholders, name the clinic, the visit, the
    day and time, offer the replies 1, 2 and 3, and say STOP opts out. Its length
    with real values is checked where the visit names are known
    (:func:`scheduling.reminders.reminder_settings`).
    """
    if raw is None:
        return ReminderConfig()
    where = f"{source}: {REMINDERS_SECTION}"
    if not isinstance(raw, Mapping):
        raise ClinicConfigError(f"{where}: expected a mapping.")
    unknown = sorted(set(raw) - {"offsets_hours", "send_between", "template"})
    if unknown:
        raise ClinicConfigError(f"{where}: unknown field(s) {', '.join(unknown)}.")
    default = ReminderConfig()
    send_from, send_until = _send_between(raw.get("send_between", "08:00-20:00"), where)
    return ReminderConfig(
        offsets=_offsets(raw.get("offsets_hours", [24]), where),
        send_from=send_from,
        send_until=send_until,
        template=_template(raw.get("template", default.template), where),
    )


def _offsets(value: object, where: str) -> Tuple[timedelta, ...]:
    """Hours before the visit, as a list of positive numbers, longest first."""
    if not isinstance(value, list) or not value:
        raise ClinicConfigError(f"{where}: offsets_hours must be a list of hours.")
    offsets = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or item <= 0:
            raise ClinicConfigError(
                f"{where}: offsets_hours must be positive numbers, got {item!r}."
            )
        offsets.add(timedelta(hours=item))
    return tuple(sorted(offsets, reverse=True))


def _send_between(value: object, where: str) -> Tuple[time, time]:
    """``"08:00-20:00"``: the local hours texts may be sent in."""
    match = _HOURS.match(value) if isinstance(value, str) else None
    if match is None:
        raise ClinicConfigError(f"{where}: send_between must look like 08:00-20:00.")
    start = time(int(match[1]), int(match[2]))
    end_minutes = int(match[3]) * 60 + int(match[4])
    if end_minutes > 24 * 60 or end_minutes <= start.hour * 60 + start.minute:
        raise ClinicConfigError(f"{where}: send_between must end after it starts.")
    end = time.max if end_minutes == 24 * 60 else time(*divmod(end_minutes, 60))
    return start, end


def _template(value: object, where: str) -> str:
    """The wording, if it uses the right placeholders and has the required parts."""
    if not isinstance(value, str) or not value.strip():
        raise ClinicConfigError(f"{where}: template must be text.")
    text = " ".join(value.split())
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as error:
        raise ClinicConfigError(f"{where}: template has a stray brace.") from error
    if used - REMINDER_FIELDS:
        raise ClinicConfigError(
            f"{where}: template uses unknown placeholder(s)"
            f" {', '.join(sorted(used - REMINDER_FIELDS))}."
        )
    if REMINDER_FIELDS - used:
        raise ClinicConfigError(
            f"{where}: template must use {', '.join(sorted(REMINDER_FIELDS - used))}."
        )
    plain = string.Formatter().vformat(text, (), {name: "" for name in used})
    if not all(reply.search(plain) for reply in _REPLIES) or not _OPT_OUT.search(plain):
        raise ClinicConfigError(
            f"{where}: template must offer the replies 1, 2 and 3 and say how to"
            " opt out (STOP)."
        )
    return text


@lru_cache(maxsize=1)
def reminder_config() -> ReminderConfig:
    """The ``reminders:`` section, read once from ``$CLINIC_CONFIG``/``clinic.yml``."""
    path = settings.load().clinic_config
    raw = read_clinic_file(path)
    section = raw.get(REMINDERS_SECTION) if isinstance(raw, Mapping) else None
    return parse_reminder_config(section, str(path))
