"""The staff page (staff/web.py): login, CSRF, FAQ edits, the inbox, retraining.

The retrain is ``FakeRetrain`` (conftest.py, test only): it takes the real retrain
lock but trains nothing; the real retrain and publish are covered end to end by
tests/staff/test_retrain_e2e.py. Everything else is the real staff code on a
temporary copy of the project.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict

import pytest
from aiohttp.test_utils import TestClient
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from staff import faq_data
from staff.locking import retrain_lock
from staff.project import Settings
from tests.staff.staffkit import snapshot
from tests.staff_web.conftest import (
    FakeRetrain,
    ServedApp,
    log_in,
    origin,
    wait_for_job,
)

ROUTES = [
    ("GET", "/"),
    ("GET", "/app.js"),
    ("GET", "/topic/dry_needling"),
    ("POST", "/topic/dry_needling/examples"),
    ("POST", "/topic/dry_needling/answer"),
    ("GET", "/inbox"),
    ("POST", "/inbox/abcd1234/add"),
    ("POST", "/inbox/abcd1234/dismiss"),
    ("GET", "/model"),
    ("POST", "/api/retrain"),
    ("POST", "/api/publish"),
    ("POST", "/api/rollback"),
    ("GET", "/api/job"),
    ("GET", "/report/confusion.png"),
    ("POST", "/logout"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_a_login(
    client: TestClient, settings: Settings, method: str, path: str
) -> None:
    before = snapshot(settings.project)
    forged = {"Cookie": "staff_session=abc.def"}
    for headers in ({}, forged):
        response = await client.request(
            method, path, headers={**origin(client), **headers}, allow_redirects=False
        )
        assert response.status == 401, (method, path, headers)
        assert "Log in" in await response.text()
    assert snapshot(settings.project) == before


async def test_a_wrong_password_is_refused(client: TestClient) -> None:
    wrong = await log_in(client, password="correct horse battery!")
    assert wrong.status == 401
    assert "Wrong user name or password" in await wrong.text()
    assert "staff_session" not in wrong.cookies
    assert (await client.get("/")).status == 401

    right = await log_in(client)
    assert right.status == 303
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert (await client.get("/")).status == 200


async def test_a_post_from_elsewhere_is_refused(
    staff: TestClient, settings: Settings
) -> None:
    before = snapshot(settings.project)
    form = {"examples": "does dry needling hurt a lot afterwards"}
    for headers in ({}, {"Origin": "http://evil.example"}):
        response = await staff.post(
            "/topic/dry_needling/examples", data=form, headers=headers
        )
        assert response.status == 403
    assert snapshot(settings.project) == before

    accepted = await staff.post(
        "/topic/dry_needling/examples", data=form, headers=origin(staff)
    )
    assert accepted.status == 200
    assert snapshot(settings.project) != before


async def test_adding_examples_writes_the_data_file(
    staff: TestClient, settings: Settings
) -> None:
    texts = ["is dry needling like getting a tattoo", "can needling help my knots"]
    response = await staff.post(
        "/topic/dry_needling/examples",
        data={"examples": "\n".join(texts)},
        headers=origin(staff),
    )
    assert response.status == 200
    assert "Added 2 example(s) to faq/dry_needling." in await response.text()
    topic = faq_data.get_topic(settings.project, "dry_needling")
    assert topic.examples[-2:] == tuple(texts)

    listed = await (await staff.get("/")).text()
    assert f"<td>{len(topic.examples)}</td>" in listed


async def test_a_refused_edit_shows_the_reason_and_writes_nothing(
    staff: TestClient, settings: Settings
) -> None:
    existing = faq_data.get_topic(settings.project, "relief_timing").examples[0]
    before = snapshot(settings.project)
    response = await staff.post(
        "/topic/dry_needling/examples",
        data={"examples": existing},
        headers=origin(staff),
    )
    assert response.status == 422
    page = await response.text()
    assert "Nothing was changed" in page
    assert "one text cannot teach the model two answers" in page
    answer = await staff.post(
        "/topic/dry_needling/answer", data={"answer": ""}, headers=origin(staff)
    )
    assert answer.status == 422
    assert "Nothing was changed" in await answer.text()
    assert snapshot(settings.project) == before


def write_tracker_store(settings: Settings, texts: Dict[str, float]) -> None:
    """One conversation with each text not understood, at the given times."""
    project = settings.project
    domain = Domain.load([str(project.domain), str(project.faq_responses)])
    events: list[Any] = [SessionStarted(timestamp=min(texts.values()) - 1)]
    for text, at in texts.items():
        parse = {
            "intent": {"name": "nlu_fallback", "confidence": 0.4},
            "intent_ranking": [{"name": "nlu_fallback", "confidence": 0.4}],
            "text": text,
        }
        events.append(UserUttered(text, parse["intent"], [], parse, timestamp=at))
        events.append(ActionExecuted("action_clarify", timestamp=at + 0.1))
    store = SQLTrackerStore(domain, dialect="sqlite", db=str(settings.tracker_db))
    tracker = DialogueStateTracker.from_events("patient-1", events, domain.slots)
    asyncio.run(store.save(tracker))


async def test_the_inbox_lists_missed_messages_without_phone_numbers(
    staff: TestClient, settings: Settings
) -> None:
    now = time.time()
    await asyncio.to_thread(
        write_tracker_store,
        settings,
        {
            "can you call me back on 817-555-0100": now - 7200,
            'is the shot safe for kids <18 & "teens"': now - 60,
        },
    )
    page = await (await staff.get("/inbox")).text()
    assert "can you call me back on [phone]" in page
    assert "555" not in page and "0100" not in page
    # untrusted text is escaped, and the newest comes first
    assert "safe for kids &lt;18 &amp; &quot;teens&quot;" in page
    assert page.index("shot") < page.index("[phone]")

    group = page.split('action="/inbox/')[1].split("/")[0]
    dismissed = await staff.post(f"/inbox/{group}/dismiss", headers=origin(staff))
    assert dismissed.status == 200
    after = await dismissed.text()
    assert "Dismissed &#x27;is the shot safe for kids" in after
    assert "<td>is the shot" not in after and "<td>can you call me back" in after


async def test_a_second_retrain_is_told_one_is_running(
    staff: TestClient, fake_retrain: FakeRetrain
) -> None:
    fake_retrain.release.clear()
    first, second = await asyncio.gather(
        staff.post("/api/retrain", headers=origin(staff)),
        staff.post("/api/publish", headers=origin(staff)),
    )
    statuses = sorted([first.status, second.status])
    assert statuses == [202, 409]
    refused = first if first.status == 409 else second
    assert "already running" in (await refused.json())["message"]
    fake_retrain.release.set()
    job = await wait_for_job(staff)
    assert job["ok"] is True and "4/5 stories: ok" in job["lines"][-1]
    assert len(fake_retrain.calls) == 1 and fake_retrain.calls[0].wait is False


async def test_a_retrain_running_elsewhere_is_reported_not_waited_for(
    staff: TestClient, settings: Settings
) -> None:
    with retrain_lock(settings.project.models_dir, "retrain", False, 0, print):
        assert (await staff.post("/api/retrain", headers=origin(staff))).status == 202
        job = await wait_for_job(staff)
    assert job["ok"] is False
    assert "Another retrain or rollback is running" in job["message"]


async def test_rollback_without_history_says_so_in_plain_language(
    staff: TestClient,
) -> None:
    assert (await staff.post("/api/rollback", headers=origin(staff))).status == 202
    job = await wait_for_job(staff)
    assert job["ok"] is False
    assert "no earlier model to go back to" in job["message"]


async def test_the_report_has_scores_and_a_confusion_plot(staff: TestClient) -> None:
    assert (await staff.get("/report/confusion.png")).status == 404
    await staff.post("/api/retrain", headers=origin(staff))
    await wait_for_job(staff)
    page = await (await staff.get("/model")).text()
    assert "<td>faq/dry_needling</td>" in page and "<td>80%</td>" in page
    plot = await staff.get("/report/confusion.png")
    assert plot.content_type == "image/png"
    assert (await plot.read()).startswith(b"\x89PNG")


def test_the_page_does_not_start_without_a_password() -> None:
    env = {**os.environ, "STAFF_PASSWORD": "", "RASA_TELEMETRY_ENABLED": "false"}
    started = subprocess.run(
        [sys.executable, "-m", "staff.web", "--port", "9"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2
    assert "STAFF_PASSWORD is not set" in started.stderr


def test_in_chromium_log_in_edit_and_retrain(
    page: Any, served: ServedApp, settings: Settings
) -> None:
    from playwright.sync_api import expect

    missed = {"do you validate parking": time.time() - 60}
    with ThreadPoolExecutor(1) as pool:  # Playwright's own loop runs in this thread
        pool.submit(write_tracker_store, settings, missed).result()
    page.goto(served.url + "/")
    page.get_by_label("User name").fill("staff")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="FAQ topics")).to_be_visible()
    page.get_by_role("link", name="dry_needling").click()

    page.get_by_label("Ways patients ask it").fill("does needling feel like a pinch")
    page.get_by_role("button", name="Add the examples").click()
    expect(page.get_by_role("status")).to_contain_text("Added 1 example(s)")
    expect(page.get_by_text("does needling feel like a pinch")).to_be_visible()

    page.get_by_role("link", name="Missed messages").click()
    expect(page.get_by_text("do you validate parking")).to_be_visible()

    page.get_by_role("link", name="Retrain").click()
    page.get_by_role("button", name="Retrain (check only)").click()
    expect(page.locator("#job-state")).to_contain_text("Running: retrain")
    expect(page.locator("#job-lines")).to_contain_text("1/5 validate: ok")
    expect(page.locator("#job-state")).to_contain_text("Done: retrain, took")
    expect(page.get_by_role("heading", name="Confusion plot")).to_be_visible()
    plot = page.get_by_role("img", name="held-out questions")
    expect(plot).to_be_visible()
    page.wait_for_function("() => document.querySelector('img').naturalWidth > 0")
