"""clinic.yml's reminders section: defaults, checks, and the text it makes."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any, Dict

import pytest
from testkit import PROJECT_ROOT

from clinic_common.clinic_config import (
    DEFAULT_REMINDER_TEMPLATE,
    ClinicConfigError,
    ReminderConfig,
    parse_reminder_config,
    read_clinic_file,
)
from scheduling.base import Booking, Patient, Slot
from scheduling.config import load_scheduling_config, parse_scheduling_config
from scheduling.reminders import ReminderSettings, checked_settings

SCHEDULING = parse_scheduling_config(
    {
        "timezone": "America/Chicago",
        "slot_minutes": 15,
        "opening_hours": {"mon": ["08:00-17:00"]},
        "visit_types": [{"key": "evaluation", "name": "Evaluation", "minutes": 45}],
        "providers": ["provider-1"],
    },
    "test",
)


def test_no_section_means_the_defaults() -> None:
    config = parse_reminder_config(None, "clinic.yml")
    assert config == ReminderConfig()
    assert config.offsets == (timedelta(hours=24),)
    assert (config.send_from, config.send_until) == (time(8), time(20))


def test_the_project_file_is_valid_and_fits_one_sms() -> None:
    path = PROJECT_ROOT / "clinic.yml"
    raw = read_clinic_file(path)
    assert isinstance(raw, dict)
    config = parse_reminder_config(raw["reminders"], str(path))
    assert config.template == DEFAULT_REMINDER_TEMPLATE
    settings = ReminderSettings(config, load_scheduling_config(path), raw["name"])
    assert len(checked_settings(settings, str(path)).longest_text()) <= 160


def test_the_text_names_clinic_visit_day_time_replies_and_opt_out() -> None:
    settings = ReminderSettings(ReminderConfig(), SCHEDULING, "Test Clinic")
    start = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)  # 9:00 CST, Monday
    slot = Slot("s", start, start + timedelta(minutes=45), "evaluation")
    booking = Booking("ABC234", slot, Patient("Ann Example", "+18175550100"))
    assert settings.text(booking.slot.visit_type, booking.slot.start) == (
        "Test Clinic: your evaluation visit is Mon, Nov 2 at 9:00 AM."
        " Reply 1 to confirm, 2 to reschedule, 3 to cancel. STOP to opt out."
    )


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"offsets_hours": []}, "offsets_hours must be a list"),
        ({"offsets_hours": [0]}, "positive numbers"),
        ({"offsets_hours": ["24"]}, "positive numbers"),
        ({"send_between": "8-20"}, "look like 08:00-20:00"),
        ({"send_between": "20:00-08:00"}, "end after it starts"),
        ({"quiet": True}, "unknown field(s) quiet"),
        ({"template": "{clinic_name} {visit} {day} {time} 1 2 3"}, "opt out (STOP)"),
        ({"template": "{visit} {day} {time} 1, 2, 3, STOP"}, "must use clinic_name"),
        ({"template": "{clinic} {clinic_name} {visit} {day} {time}"}, "unknown"),
        ({"template": "{clinic_name} {visit} {day} {time} {"}, "stray brace"),
        (
            {"template": "{clinic_name} {visit} {day} {time} reply CANCEL or STOP"},
            "replies 1, 2 and 3",
        ),
    ],
)
def test_a_bad_section_is_refused_saying_why(
    section: Dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ClinicConfigError) as refused:
        parse_reminder_config(section, "clinic.yml")
    assert complaint in str(refused.value)


def test_a_wording_too_long_for_one_sms_is_refused() -> None:
    long = DEFAULT_REMINDER_TEMPLATE + " We look forward to seeing you!" * 2
    settings = ReminderSettings(ReminderConfig(template=long), SCHEDULING, "Clinic")
    with pytest.raises(ClinicConfigError) as refused:
        checked_settings(settings, "clinic.yml")
    assert "shorten it to 160" in str(refused.value)
