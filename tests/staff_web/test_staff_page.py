"""The staff page (staff/web.py): login, CSRF, FAQ edits, the inbox, retraining.

The retrain is ``FakeRetrain`` (conftest.py, test only): it takes the real retrain
lock but trains nothing; the real retrain and publish are covered end to end by
tests/staff/test_retrain_e2e.py. Everything else is the real staff code on a
temporary copy of the project.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from aiohttp.test_utils import TestClient
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from staff import faq_data
from staff.locking import retrain_lock
from staff.project import Settings
from staff.web import without_paths
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
    ("GET", "/topic/dry_needling"),
    ("POST", "/topic/dry_needling/examples"),
    ("POST", "/topic/dry_needling/answer"),
    ("POST", "/topic/dry_needling/remove"),
    ("POST", "/topic/dry_needling/restore"),
    ("GET", "/inbox"),
    ("POST", "/inbox/abcd1234/add"),
    ("POST", "/inbox/abcd1234/dismiss"),
    ("GET", "/model"),
    ("GET", "/reminders"),
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


def write_tracker_store(
    settings: Settings,
    texts: Dict[str, float],
    out_of_scope: Optional[Dict[str, Tuple[float, str]]] = None,
) -> None:
    """One conversation with each text not understood, at the given times.

    ``out_of_scope``: texts the model was sure are out of scope (answered "Sorry, I
    can't help with that"), with their time and the FAQ topic it ranked first.
    """
    out_of_scope = out_of_scope or {}
    project = settings.project
    domain = Domain.load([str(project.domain), str(project.faq_responses)])
    times = [*texts.values(), *(at for at, _ in out_of_scope.values())]
    events: list[Any] = [SessionStarted(timestamp=min(times) - 1)]
    for text, at in texts.items():
        parse = {
            "intent": {"name": "nlu_fallback", "confidence": 0.4},
            "intent_ranking": [{"name": "nlu_fallback", "confidence": 0.4}],
            "text": text,
        }
        events.append(UserUttered(text, parse["intent"], [], parse, timestamp=at))
        events.append(ActionExecuted("action_clarify", timestamp=at + 0.1))
    for text, (at, topic) in out_of_scope.items():
        ranking = [{"intent_response_key": f"faq/{topic}", "confidence": 0.3}]
        parse = {
            "intent": {"name": "out_of_scope", "confidence": 0.98},
            "intent_ranking": [{"name": "out_of_scope", "confidence": 0.98}],
            "response_selector": {"faq": {"response": ranking[0], "ranking": ranking}},
            "text": text,
        }
        events.append(UserUttered(text, parse["intent"], [], parse, timestamp=at))
        events.append(ActionExecuted("utter_out_of_scope", timestamp=at + 0.1))
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


# --- issue 11: the staff-page defects, each seen in Chromium ------------------------


def log_in_page(page: Any, served: ServedApp) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/")
    page.get_by_label("User name").fill("staff")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="FAQ topics")).to_be_visible()


async def test_the_login_page_script_is_served_without_a_login(
    client: TestClient,
) -> None:
    script = await client.get("/app.js")
    assert script.status == 200
    assert script.content_type == "application/javascript"
    assert (await client.get("/api/job")).status == 401  # the data still needs one


def test_in_chromium_the_login_page_loads_its_script(
    page: Any, served: ServedApp
) -> None:
    refused: List[str] = []
    page.on(
        "response",
        lambda response: refused.append(response.url) if response.status >= 400 else 0,
    )
    page.goto(served.url + "/login")
    page.wait_for_load_state("networkidle")
    assert refused == []


def test_in_chromium_out_of_scope_questions_are_listed_with_the_guessed_topic(
    page: Any, served: ServedApp, settings: Settings
) -> None:
    from playwright.sync_api import expect

    now = time.time()
    out_of_scope = {
        "can my dog come in": (now - 120, "clinic_services"),
        "do you sell gift cards": (now - 60, "chiropractic_care"),
    }
    with ThreadPoolExecutor(1) as pool:
        pool.submit(write_tracker_store, settings, {}, out_of_scope).result()
    log_in_page(page, served)
    page.get_by_role("link", name="Missed messages").click()

    rows = page.locator("tr").filter(has=page.get_by_role("combobox"))
    expect(rows).to_have_count(2)
    dog = rows.filter(has_text="can my dog come in")
    expect(dog.locator("td").nth(1)).to_have_text("1x in 1 conversation(s)")
    expect(dog.locator("td").nth(3)).to_have_text("out of scope")
    # the model's guess is preselected, under its readable title
    expect(dog.get_by_role("combobox")).to_have_value("clinic_services")
    selected = dog.locator("option:checked")
    expect(selected).to_have_text("What does the clinic do?")
    cards = rows.filter(has_text="do you sell gift cards")
    expect(cards.locator("option:checked")).to_have_text("Chiropractic care")
    options = cards.locator("option").all_text_contents()
    assert "dry_needling" not in options and "Dry needling (no medication)" in options

    cards.get_by_role("button", name="Add to topic").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Added it to faq/chiropractic_care."
    )
    examples = faq_data.get_topic(settings.project, "chiropractic_care").examples
    assert examples[-1] == "do you sell gift cards"


def test_in_chromium_a_refused_add_keeps_what_was_typed(
    page: Any, served: ServedApp, settings: Settings
) -> None:
    from playwright.sync_api import expect

    existing = faq_data.get_topic(settings.project, "relief_timing").examples[0]
    typed = f"does needling feel like a pinch\n{existing}\nis needling done lying down"
    before = snapshot(settings.project)
    log_in_page(page, served)
    page.goto(served.url + "/topic/dry_needling")
    page.get_by_label("Ways patients ask it").fill(typed)
    page.get_by_role("button", name="Add the examples").click()

    expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")
    expect(page.get_by_label("Ways patients ask it")).to_have_value(typed)
    # no file path in what staff read
    expect(page.get_by_role("alert").get_by_role("listitem")).to_have_text(
        [
            f"{existing!r} is already an example of faq/relief_timing; one text "
            "cannot teach the model two answers."
        ]
    )
    assert snapshot(settings.project) == before


def test_in_chromium_an_example_can_be_removed_and_an_answer_restored(
    page: Any, served: ServedApp, settings: Settings
) -> None:
    from playwright.sync_api import expect

    files = settings.project.faq_nlu, settings.project.faq_responses
    before = {path: path.read_text(encoding="utf-8") for path in files}
    original = faq_data.get_topic(settings.project, "dry_needling").answers[0].text
    log_in_page(page, served)
    page.goto(served.url + "/topic/dry_needling")
    page.get_by_label("Ways patients ask it").fill("is needling done lying down")
    page.get_by_role("button", name="Add the examples").click()
    expect(page.get_by_role("status")).to_contain_text("Added 1 example(s)")
    page.locator("textarea[name=answer]").fill("Dry needling uses thin needles only.")
    page.get_by_role("button", name="Save the answer").click()
    expect(page.get_by_role("status")).to_contain_text("Changed the answer")

    page.get_by_role("button", name="Remove is needling done lying down").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Removed 'is needling done lying down' from faq/dry_needling."
    )
    removed = page.get_by_role("button", name="Remove is needling done lying down")
    expect(removed).to_have_count(0)
    expect(page.get_by_role("heading", name="Earlier answers")).to_be_visible()
    page.get_by_role("button", name="Restore this answer").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Restored an earlier answer of faq/dry_needling."
    )
    expect(page.locator("textarea[name=answer]")).to_have_value(original)
    assert {path: path.read_text(encoding="utf-8") for path in files} == before


def test_in_chromium_job_buttons_are_disabled_while_a_job_runs(
    page: Any, served: ServedApp
) -> None:
    from playwright.sync_api import expect

    log_in_page(page, served)
    page.get_by_role("link", name="Retrain").click()
    names = ("Retrain (check only)", "Retrain and publish", "Roll back")
    buttons = [page.get_by_role("button", name=name) for name in names]
    for button in buttons:
        expect(button).to_be_enabled()
    buttons[0].click()
    expect(page.locator("#job-state")).to_contain_text("Running: retrain")
    for button in buttons:
        expect(button).to_be_disabled()
    # a reload while it runs: still disabled
    page.reload()
    expect(page.locator("#job-state")).to_contain_text("Running: retrain")
    for button in buttons:
        expect(button).to_be_disabled()
    expect(page.locator("#job-state")).to_contain_text("Done: retrain, took")
    for button in buttons:
        expect(button).to_be_enabled()


async def test_job_messages_show_no_file_paths(
    settings: Settings, staff: TestClient
) -> None:
    missing = settings.project.models_dir / "candidate-1.tar.gz"
    assert without_paths(f"The earlier model {missing} is missing.") == (
        "The earlier model candidate-1.tar.gz is missing."
    )
    assert (await staff.post("/api/rollback", headers=origin(staff))).status == 202
    job = await wait_for_job(staff)
    assert str(settings.project.root) not in json.dumps(job)
