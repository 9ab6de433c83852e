"""Appointment reminders by SMS (issue 14): the text, and when each is due.

The wording, offsets and sending hours are the ``reminders:`` section of
``clinic.yml`` (:func:`clinic_common.clinic_config.reminder_config`); days and
times are shown in the clinic's time zone (the ``scheduling:`` section).

A reminder is sent by the reminder job (``scripts/reminders.py``, the schedule in
:mod:`scheduling.reminder_schedule`): it triggers the intent
``EXTERNAL_appointment_reminder`` in the patient's SMS conversation, and the action
server's ``action_send_reminder`` utters :func:`reminder_text` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from clinic_common.clinic_config import (
    ClinicConfigError,
    ReminderConfig,
    clinic,
    reminder_config,
)
from scheduling.base import Booking
from scheduling.config import SchedulingConfig, scheduling_config

# Texts longer than this go as two or more SMS segments (GSM-7).
SMS_LENGTH = 160
# The longest a day and a time are written (see _day, _time), for the length check.
_LONGEST_DAY = "Wed, Sep 30"
_LONGEST_TIME = "12:45 PM"


@dataclass(frozen=True)
class ReminderSettings:
    """The reminders' settings with what the wording needs from the rest of the file."""

    reminders: ReminderConfig
    scheduling: SchedulingConfig
    clinic_name: str

    def visit_name(self, visit_type: str) -> str:
        """The visit type's name as patients read it (in lower case, mid-sentence)."""
        visit = self.scheduling.visit_type(visit_type)
        name = visit.name if visit else visit_type.replace("_", " ")
        return name[:1].lower() + name[1:]

    def text(self, visit_type: str, start: datetime) -> str:
        """The reminder for a visit of ``visit_type`` at ``start`` (aware)."""
        local = start.astimezone(self.scheduling.tz)
        return self.reminders.template.format(
            clinic_name=self.clinic_name,
            visit=self.visit_name(visit_type),
            day=_day(local),
            time=_time(local),
        )

    def longest_text(self) -> str:
        """The wording with the longest visit name, day and time this clinic has."""
        names = [visit.key for visit in self.scheduling.visit_types] or [""]
        visit = max(names, key=lambda key: len(self.visit_name(key)))
        return self.reminders.template.format(
            clinic_name=self.clinic_name,
            visit=self.visit_name(visit),
            day=_LONGEST_DAY,
            time=_LONGEST_TIME,
        )


def _day(local: datetime) -> str:
    """``Tue, Mar 3``: short, no year, no zero padding."""
    return f"{local:%a, %b} {local.day}"


def _time(local: datetime) -> str:
    """``9:00 AM``."""
    return f"{local.hour % 12 or 12}:{local:%M %p}"


def checked_settings(settings: ReminderSettings, source: str) -> ReminderSettings:
    """``settings`` if the longest reminder fits one SMS, else ClinicConfigError."""
    longest = settings.longest_text()
    if len(longest) > SMS_LENGTH:
        raise ClinicConfigError(
            f"{source}: reminders: the template makes texts of up to {len(longest)}"
            f" characters (e.g. {longest!r}); shorten it to {SMS_LENGTH} or fewer."
        )
    return settings


@lru_cache(maxsize=1)
def reminder_settings() -> ReminderSettings:
    """The reminders' settings from ``clinic.yml``, checked once per process."""
    return checked_settings(
        ReminderSettings(reminder_config(), scheduling_config(), clinic().name),
        "clinic.yml",
    )


def reminder_text(booking: Booking) -> str:
    """The reminder SMS for ``booking``: clinic, visit, day and time, replies, STOP."""
    return reminder_settings().text(booking.slot.visit_type, booking.slot.start)
