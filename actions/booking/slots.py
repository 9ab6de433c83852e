"""The booking slots of domain.yml in named groups, each cleared as a whole.

A group is what one step of a conversation makes stale: a new time makes the offers
and the pick stale (``OFFER``), a new booking the whole booking (``BOOKING``). Each
slot is in exactly one group, with the value it takes when cleared (a flag is
cleared to ``False``, like its ``initial_value``, everything else to ``None``), so
every reset in the booking actions is written here once. ``tests/test_booking_rules.py``
checks the groups against the slots of domain.yml.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from rasa_sdk.events import EventType, SlotSet


class SlotGroup:
    """Slots that go stale together, in order, with their cleared values."""

    def __init__(self, *groups: SlotGroup, **cleared: Any) -> None:
        """The slots of ``groups`` (whole), then ``cleared``: name -> cleared value."""
        values: Dict[str, Any] = {}
        for group in groups:
            values.update(group.cleared_values())
        values.update(cleared)
        self._cleared: Mapping[str, Any] = values

    @property
    def names(self) -> Tuple[str, ...]:
        """The slot names of the group."""
        return tuple(self._cleared)

    def cleared_values(self) -> Dict[str, Any]:
        """Slot name -> cleared value: what a form validation returns to clear them."""
        return dict(self._cleared)

    def only(self, *names: str) -> SlotGroup:
        """Some slots of the group: a step that makes part of it stale.

        A name not in the group is a bug: ``KeyError``.
        """
        return SlotGroup(**{name: self._cleared[name] for name in names})

    def reset(self) -> List[EventType]:
        """The events that clear every slot of the group."""
        return [SlotSet(name, value) for name, value in self._cleared.items()]


# What the patient picked among the offered times: the time, its hold, the yes, and
# whether the clinic may text a reminder for it.
PICK = SlotGroup(
    appointment_slot=None, hold_id=None, booking_confirmed=None, reminder_consent=None
)
# The time asked for and everything found for it.
OFFER = SlotGroup(PICK, time_preference=None, offered_slots=None)
# One booking in the booking form, name and phone aside (a reschedule keeps them).
BOOKING = SlotGroup(OFFER, visit_type=None)
# The patient's name and mobile number, asked by all three forms.
CONTACT = SlotGroup(patient_name=None, patient_phone=None)
# The booking looked up by reference and phone, and the question to cancel it.
LOOKUP = SlotGroup(
    booking_reference=None, found_booking=None, cancel_pending=False, lookup_attempts=0
)
# What the patient is doing (book, reschedule, cancel, check), and whether the
# scheduler failed while doing it.
TASK = SlotGroup(booking_task=None, scheduler_down=False)
# A call back offered (scheduler down, or a person asked for) and its reason.
CALLBACK = SlotGroup(
    callback_reason=None, callback_offered=False, handoff_callback=False
)

# The booking the latest reminder was about; another task replaces it.
REMINDER = SlotGroup(reminder_reference=None)

GROUPS: Dict[str, SlotGroup] = {
    "PICK": PICK,
    "OFFER": OFFER,
    "BOOKING": BOOKING,
    "CONTACT": CONTACT,
    "LOOKUP": LOOKUP,
    "TASK": TASK,
    "CALLBACK": CALLBACK,
    "REMINDER": REMINDER,
}
