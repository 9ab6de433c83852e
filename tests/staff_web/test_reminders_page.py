"""The staff page's reminders: a day's bookings with their reminder state, no more.

The page reads the configured (embedded) scheduler: here a SQLite file of the test's
own, with the project's clinic.yml.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest
from aiohttp.test_utils import TestClient

from clinic_common.clinic_config import clinic, reminder_config
from scheduling import get_scheduler
from scheduling.base import Patient
from scheduling.config import scheduling_config
from scheduling.reminders import ReminderStore, reminder_settings
from scheduling.sqlite_backend import SqliteScheduler
from tests.staff_web.conftest import ServedApp
from tests.staff_web.test_staff_page import log_in_page

ANN = Patient("Ann Example", "+18175550100")
BOB = Patient("Bob Example", "+18175550111")
CACHES = (get_scheduler, scheduling_config, reminder_settings, reminder_config, clinic)


@pytest.fixture
def day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Tuple[date, str, str]]:
    """A day with two bookings: Ann's reminder sent, Bob without consent.

    Yields the day and Ann's and Bob's visit times as the page shows them.
    """
    path = tmp_path / "scheduler.db"
    monkeypatch.setenv("SCHEDULER_BACKEND", "sqlite")
    monkeypatch.setenv("SCHEDULER_DB", str(path))
    monkeypatch.delenv("STORE_DATABASE_URL", raising=False)
    for cached in CACHES:
        cached.cache_clear()
    scheduler = SqliteScheduler(path, scheduling_config())
    now = datetime.now(timezone.utc)
    window = (now + timedelta(days=2), now + timedelta(days=9))
    [first] = scheduler.find_slots("evaluation", *window, 1)
    ann = scheduler.book(first, ANN, "a", reminder_consent=True)
    [second] = scheduler.find_slots(
        "evaluation", first.end, first.end + timedelta(hours=2), 1
    )
    scheduler.book(second, BOB, "b")
    store = ReminderStore(path)
    assert store.claim(ann.reference, timedelta(hours=24), now)
    store.record(ann.reference, timedelta(hours=24), "sent")
    tz = scheduling_config().tz
    local = first.start.astimezone(tz)
    yield local.date(), f"{local:%I:%M %p}", f"{second.start.astimezone(tz):%I:%M %p}"
    for cached in CACHES:
        cached.cache_clear()


async def test_a_day_shows_time_visit_short_name_and_state(
    staff: TestClient, day: Tuple[date, str, str]
) -> None:
    when, ann_time, bob_time = day
    response = await staff.get(f"/reminders?date={when.isoformat()}")
    assert response.status == 200
    page = await response.text()
    rows = page.split("<tbody>")[1].split("</tbody>")[0]
    assert rows == (
        f"<tr><td>{ann_time}</td><td>evaluation / consultation</td><td>Ann E.</td>"
        "<td>sent</td></tr>"
        f"<tr><td>{bob_time}</td><td>evaluation / consultation</td><td>Bob E.</td>"
        "<td>not allowed</td></tr>"
    )
    assert ANN.phone not in page and "Example" not in page


async def test_a_bad_date_is_refused_with_the_picker(staff: TestClient) -> None:
    response = await staff.get("/reminders?date=next-tuesday")
    assert response.status == 400
    page = await response.text()
    assert "next-tuesday is not a date" in page and 'type="date"' in page


def test_in_chromium_staff_pick_a_day_and_see_the_states(
    page: Any, served: ServedApp, day: Tuple[date, str, str]
) -> None:
    from playwright.sync_api import expect

    when, ann_time, _ = day
    log_in_page(page, served)
    page.get_by_role("link", name="Reminders").click()
    page.get_by_label("Day").fill(when.isoformat())
    page.get_by_role("button", name="Show").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td")).to_have_text(
        [ann_time, "evaluation / consultation", "Ann E.", "sent"]
    )
    expect(rows.nth(1).locator("td").nth(3)).to_have_text("not allowed")
