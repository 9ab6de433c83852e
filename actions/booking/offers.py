"""Finding the open times to offer, and how an offered time is kept in the tracker.

``OfferFinder`` receives the scheduler, the clock and the clinic's scheduling
settings, so it is tested with a fixed clock against a real scheduler; the booking
actions build one per search (``actions/booking/common.py``, ``offer_finder``).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable, Dict, List

from actions.booking.parsing import describe_time
from scheduling.base import Scheduler, Slot
from scheduling.config import SchedulingConfig
from scheduling.timeparse import parse_time_preference

MAX_OFFERS = 5
# When nothing is open in the window the patient asked for, look this far beyond it.
WIDEN_SEARCH = timedelta(days=14)


def slot_entry(slot: Slot, tz: tzinfo) -> Dict[str, Any]:
    """How an offered slot is kept in the tracker (no patient data)."""
    local = slot.start.astimezone(tz)
    return {
        "id": slot.slot_id,
        "start": local.isoformat(),
        "end": slot.end.astimezone(tz).isoformat(),
        "visit_type": slot.visit_type,
        "provider": slot.provider,
        "label": describe_time(local),
    }


def slot_from_entry(entry: Dict[str, Any]) -> Slot:
    """The scheduler's ``Slot`` back from a tracker entry."""
    return Slot(
        slot_id=str(entry["id"]),
        start=datetime.fromisoformat(entry["start"]),
        end=datetime.fromisoformat(entry["end"]),
        visit_type=str(entry["visit_type"]),
        provider=str(entry.get("provider") or ""),
    )


class OfferFinder:
    """Up to five open slots in the preferred window, else the nearest after it."""

    def __init__(
        self,
        scheduler: Scheduler,
        now: Callable[[], datetime],
        config: SchedulingConfig,
    ) -> None:
        """``now`` is read at each search: the window is relative to that moment."""
        self._scheduler = scheduler
        self._now = now
        self._config = config

    async def find(self, visit_type: str, time_text: str) -> List[Dict[str, Any]]:
        """Tracker entries of the open slots, each saying whether it is ``in_window``.

        A time the clinic is closed, or fully booked, gets the nearest open times
        (``in_window`` false), and the patient is told so. The scheduler calls run
        in a worker thread, so a slow backend never blocks the action server.
        Raises ``TimePreferenceError`` or ``BackendUnavailable``.
        """
        config = self._config
        window = parse_time_preference(
            time_text, self._now(), config.tz, config.booking_horizon_days
        )
        find_slots = self._scheduler.find_slots
        slots = await asyncio.to_thread(
            find_slots, visit_type, window.start, window.end, MAX_OFFERS
        )
        in_window = bool(slots)
        if not slots:
            slots = await asyncio.to_thread(
                find_slots,
                visit_type,
                window.end,
                window.end + WIDEN_SEARCH,
                MAX_OFFERS,
            )
        return [
            slot_entry(slot, config.tz) | {"in_window": in_window} for slot in slots
        ]
