"""Scheduling settings: the ``scheduling:`` section of ``clinic.yml``.

``actions.settings`` parses the clinic facts of the same file and ignores this
section; this module parses only this section; both read the file with
``clinic_common.clinic_config.read_clinic_file``. Nothing is read at import time.
The file's path and the database paths come from ``clinic_common.settings``
(``CLINIC_CONFIG``, ``SCHEDULER_DB``, ``CALLBACK_DB``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clinic_common import settings
from clinic_common.clinic_config import ClinicConfigError, read_clinic_file

SECTION = "scheduling"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order

# Visit-type keys and provider ids end up inside slot ids ("type|provider|start"),
# so they may not contain "|" or spaces.
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_PROVIDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_FIELDS = {
    "timezone",
    "slot_minutes",
    "opening_hours",
    "visit_types",
    "providers",
    "hold_minutes",
    "booking_horizon_days",
}
_DEFAULTS: Dict[str, int] = {
    "slot_minutes": 15,
    "hold_minutes": 10,
    "booking_horizon_days": 60,
}


class SchedulingConfigError(ClinicConfigError):
    """The ``scheduling:`` section of the clinic file is missing or malformed."""


@dataclass(frozen=True)
class VisitType:
    """A kind of appointment and how long it takes."""

    key: str
    name: str
    minutes: int


@dataclass(frozen=True)
class OpeningInterval:
    """One stretch of opening hours on a day, local wall-clock time."""

    start: time
    end: time


@dataclass(frozen=True)
class SchedulingConfig:
    """Everything the embedded scheduler needs to generate bookable times."""

    timezone: str
    slot_minutes: int
    # Seven entries in date.weekday() order (Monday first); empty means closed.
    opening_hours: Tuple[Tuple[OpeningInterval, ...], ...]
    visit_types: Tuple[VisitType, ...]
    providers: Tuple[str, ...]
    hold_minutes: int = 10
    booking_horizon_days: int = 60

    @property
    def tz(self) -> ZoneInfo:
        """The clinic's time zone (ZoneInfo caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)

    def intervals_on(self, day: date) -> Tuple[OpeningInterval, ...]:
        """The opening intervals of ``day``'s weekday, earliest first."""
        return self.opening_hours[day.weekday()]

    def visit_type(self, key: str) -> Optional[VisitType]:
        """The visit type with this key, or ``None`` if there is none."""
        return next((visit for visit in self.visit_types if visit.key == key), None)


def parse_scheduling_config(raw: object, source: str) -> SchedulingConfig:
    """Builds a :class:`SchedulingConfig` from the parsed ``scheduling:`` section.

    Args:
        raw: the value under ``scheduling:``, as YAML parsed it.
        source: where it came from, e.g. the file name; starts every error message.

    Raises:
        SchedulingConfigError: with a message that says what to fix.
    """
    where = f"{source}: {SECTION}"
    if not isinstance(raw, dict):
        raise SchedulingConfigError(f"{where}: expected a mapping of settings.")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise SchedulingConfigError(
            f"{where}: unknown field(s) {', '.join(map(str, unknown))}; "
            f"known fields are {', '.join(sorted(_FIELDS))}."
        )
    numbers = {
        name: _positive_int(raw.get(name, default), f"{where}.{name}")
        for name, default in _DEFAULTS.items()
    }
    slot_minutes = numbers["slot_minutes"]
    if 60 % slot_minutes:
        raise SchedulingConfigError(
            f"{where}.slot_minutes: must divide an hour evenly "
            "(5, 10, 15, 20, 30 or 60)."
        )
    return SchedulingConfig(
        timezone=_timezone(raw.get("timezone"), f"{where}.timezone"),
        slot_minutes=slot_minutes,
        opening_hours=_opening_hours(raw.get("opening_hours"), where),
        visit_types=_visit_types(raw.get("visit_types"), slot_minutes, where),
        providers=_providers(raw.get("providers"), f"{where}.providers"),
        hold_minutes=numbers["hold_minutes"],
        booking_horizon_days=numbers["booking_horizon_days"],
    )


def _positive_int(value: object, where: str) -> int:
    """``value`` if it is a whole number above zero (``True`` is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SchedulingConfigError(f"{where}: must be a whole number above 0.")
    return value


def _timezone(value: object, where: str) -> str:
    """The IANA time-zone name, checked against the system's zone database."""
    if not isinstance(value, str) or not value.strip():
        raise SchedulingConfigError(
            f"{where}: must be a time zone name such as America/Chicago."
        )
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise SchedulingConfigError(
            f"{where}: unknown time zone '{name}'; use a name such as America/Chicago."
        ) from error
    return name


def _opening_hours(
    value: object, where: str
) -> Tuple[Tuple[OpeningInterval, ...], ...]:
    """Seven tuples of intervals, Monday first, from ``{mon: ["08:00-12:00"]}``."""
    where = f"{where}.opening_hours"
    if not isinstance(value, dict) or not value:
        raise SchedulingConfigError(
            f'{where}: must map weekdays to time ranges, e.g. mon: ["08:00-12:00"].'
        )
    unknown = sorted(str(day) for day in value if day not in WEEKDAYS)
    if unknown:
        raise SchedulingConfigError(
            f"{where}: unknown weekday(s) {', '.join(unknown)}; "
            f"use {', '.join(WEEKDAYS)}."
        )
    return tuple(_day_intervals(value.get(day), f"{where}.{day}") for day in WEEKDAYS)


def _day_intervals(value: object, where: str) -> Tuple[OpeningInterval, ...]:
    """The sorted, non-overlapping intervals of one weekday (none = closed)."""
    if value is None:
        return ()
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise SchedulingConfigError(
            f'{where}: must be a list of time ranges, e.g. ["08:00-12:00"].'
        )
    intervals = sorted(
        (_interval(text, where) for text in texts), key=lambda item: item.start
    )
    for before, after in zip(intervals, intervals[1:], strict=False):
        if after.start < before.end:
            raise SchedulingConfigError(f"{where}: time ranges overlap.")
    return tuple(intervals)


def _interval(text: object, where: str) -> OpeningInterval:
    """One ``"HH:MM-HH:MM"`` range, 24-hour clock, ending after it starts."""
    match = _RANGE.match(text) if isinstance(text, str) else None
    if match is None:
        raise SchedulingConfigError(
            f'{where}: "{text}" is not a time range like "08:00-12:00".'
        )
    hour1, minute1, hour2, minute2 = (int(part) for part in match.groups())
    if max(hour1, hour2) > 23 or max(minute1, minute2) > 59:
        raise SchedulingConfigError(
            f'{where}: "{text}" is not a valid time of day (00:00 to 23:59).'
        )
    start, end = time(hour1, minute1), time(hour2, minute2)
    if end <= start:
        raise SchedulingConfigError(f'{where}: "{text}" ends before it starts.')
    return OpeningInterval(start, end)


def _visit_types(value: object, slot_minutes: int, where: str) -> Tuple[VisitType, ...]:
    """The visit types, with unique keys and lengths on the slot grid."""
    where = f"{where}.visit_types"
    if not isinstance(value, list) or not value:
        raise SchedulingConfigError(
            f"{where}: must list at least one visit type (key, name, minutes)."
        )
    visits: List[VisitType] = []
    for index, item in enumerate(value, start=1):
        visit = _visit_type(item, slot_minutes, f"{where}[{index}]")
        if any(known.key == visit.key for known in visits):
            raise SchedulingConfigError(
                f"{where}: visit type '{visit.key}' is listed twice."
            )
        visits.append(visit)
    return tuple(visits)


def _visit_type(item: object, slot_minutes: int, where: str) -> VisitType:
    """One visit type: ``{key, name, minutes}``."""
    if not isinstance(item, dict) or set(item) != {"key", "name", "minutes"}:
        raise SchedulingConfigError(
            f"{where}: must have exactly the fields key, name and minutes."
        )
    key, name, minutes = item["key"], item["name"], item["minutes"]
    if not isinstance(key, str) or not _KEY.match(key):
        raise SchedulingConfigError(
            f"{where}.key: '{key}' must be lower-case letters, digits and _, "
            "e.g. dry_needling."
        )
    if not isinstance(name, str) or not name.strip():
        raise SchedulingConfigError(f"{where}.name: must be filled in.")
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int)
        or minutes <= 0
        or minutes % slot_minutes
    ):
        raise SchedulingConfigError(
            f"{where}.minutes: must be a positive multiple of slot_minutes "
            f"({slot_minutes})."
        )
    return VisitType(key=key, name=name.strip(), minutes=minutes)


def _providers(value: object, where: str) -> Tuple[str, ...]:
    """The provider ids: at least one, unique, usable inside a slot id."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SchedulingConfigError(
            f"{where}: no providers; list at least one id, e.g. [provider-1]."
        )
    providers: List[str] = []
    for item in value:
        provider = str(item).strip() if isinstance(item, (str, int)) else ""
        if not _PROVIDER.match(provider):
            raise SchedulingConfigError(
                f"{where}: '{item}' is not a valid id (letters, digits, . _ -)."
            )
        if provider in providers:
            raise SchedulingConfigError(f"{where}: '{provider}' is listed twice.")
        providers.append(provider)
    return tuple(providers)


def clinic_config_path() -> Path:
    """The clinic file, as ``actions.settings.clinic()`` finds it."""
    return settings.load().clinic_config


def load_scheduling_config(path: Path) -> SchedulingConfig:
    """Reads and parses the ``scheduling:`` section of the clinic file ``path``."""
    raw = read_clinic_file(path, SchedulingConfigError)
    if not isinstance(raw, Mapping) or SECTION not in raw:
        raise SchedulingConfigError(f"{path}: has no '{SECTION}:' section.")
    return parse_scheduling_config(raw[SECTION], str(path))


@lru_cache(maxsize=1)
def scheduling_config() -> SchedulingConfig:
    """The scheduling settings, read once from ``$CLINIC_CONFIG`` or ``clinic.yml``."""
    return load_scheduling_config(clinic_config_path())


def default_db_path() -> Union[Path, str]:
    """The scheduler's store: ``$STORE_DATABASE_URL`` if set, else its SQLite file.

    The file is ``$SCHEDULER_DB`` or ``$STATE_DIR/scheduler.db``.
    """
    loaded = settings.load()
    return loaded.store_database_url or loaded.scheduler_db


def default_callback_db_path() -> Union[Path, str]:
    """Call-back requests: ``$STORE_DATABASE_URL`` if set, else their SQLite file.

    The file is ``$CALLBACK_DB`` or ``$STATE_DIR/callbacks.db``: a file of their
    own, as they are taken exactly when the scheduler (and so its database) is in
    trouble. On PostgreSQL the spool (see :mod:`scheduling.callbacks`) is
    ``$STATE_DIR/callbacks.db.spool``.
    """
    loaded = settings.load()
    return loaded.store_database_url or loaded.callback_db
