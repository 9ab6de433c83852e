"""Fixtures of the staff page tests: a temporary project copy, the app, a fake retrain.

The app edits a temporary copy of the project's data (tests/staff/staffkit.py),
never the repository's own files. ``fake_retrain_for_tests`` stands in for the
heavy part of a retrain (rasa train, the evaluations: minutes of CPU); it takes the
real retrain lock, so the locking is the real one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from testkit import failed_test_name

from staff import retrain
from staff.locking import Say, retrain_lock
from staff.project import Settings
from staff.web import create_app
from tests.staff.staffkit import copy_project, settings_for

USERNAME, PASSWORD = "staff", "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "results" / "screenshots"

# A held-out result as scripts/evaluate_nlu.py writes it, for the report.
FAKE_EVALUATION: Dict[str, Any] = {
    "accuracy": 0.9,
    "per_label": {"faq/dry_needling": 0.8, "faq/relief_timing": 1.0, "greet": 1.0},
    "errors": [
        {
            "text": "is it the same as acupuncture",
            "expected": "faq/dry_needling",
            "predicted": "nlu_fallback",
            "confidence": 0.5,
        }
    ],
}


class FakeRetrain:
    """TEST ONLY: a retrain's progress without training anything.

    Holds the real retrain lock (``options.wait`` as given), says a line per step,
    writes a held-out result where a retrain would, and waits for ``release`` (set
    by default) before finishing.
    """

    def __init__(self, step_seconds: float = 0.0) -> None:
        self.step_seconds = step_seconds
        self.release = threading.Event()
        self.release.set()
        self.calls: List[retrain.Options] = []

    def __call__(
        self, settings: Settings, options: retrain.Options, say: Say
    ) -> retrain.Outcome:
        self.calls.append(options)
        with retrain_lock(
            settings.project.models_dir, "retrain", options.wait, 0.0, say
        ):
            start = time.monotonic()
            for number, name in enumerate(
                ("validate", "train", "held-out", "stories"), 1
            ):
                say(f"[{time.monotonic() - start:6.1f} s] {number}/5 {name}: ok")
                time.sleep(self.step_seconds)
            work = settings.project.results_dir / f"fake-{time.time_ns()}"
            work.mkdir(parents=True)
            (work / "heldout.json").write_text(json.dumps(FAKE_EVALUATION))
            self.release.wait(30)
        return retrain.Outcome(False, None, 0.1, message="All checks passed (fake).")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    project = copy_project(tmp_path / "project")
    configured = settings_for(project, tmp_path / "state")
    configured.state_dir.mkdir(mode=0o700)
    return configured


@pytest.fixture
def fake_retrain() -> FakeRetrain:
    return FakeRetrain()


@pytest.fixture
async def client(
    settings: Settings, fake_retrain: FakeRetrain
) -> AsyncIterator[TestClient]:
    app = create_app(settings, USERNAME, PASSWORD, retrain_runner=fake_retrain)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


def origin(client: TestClient) -> Dict[str, str]:
    return {"Origin": str(client.make_url("/")).rstrip("/")}


async def log_in(client: TestClient, password: str = PASSWORD) -> Any:
    return await client.post(
        "/login",
        data={"username": USERNAME, "password": password},
        headers=origin(client),
        allow_redirects=False,
    )


@pytest.fixture
async def staff(client: TestClient) -> TestClient:
    """A client that is logged in."""
    response = await log_in(client)
    assert response.status == 303
    return client


async def wait_for_job(client: TestClient, timeout: float = 20) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: Dict[str, Any] = await (await client.get("/api/job")).json()
        if job.get("kind") and not job["running"]:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


# --- the browser test ---------------------------------------------------------------


class ServedApp:
    """The staff page on a free loopback port, served from a thread."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served(settings: Settings) -> Iterator[ServedApp]:
    app = create_app(
        settings, USERNAME, PASSWORD, retrain_runner=FakeRetrain(step_seconds=0.7)
    )
    server = ServedApp(app)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def page(served: ServedApp, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh headless Chromium page; a screenshot if the test fails."""
    from playwright.sync_api import sync_playwright

    from tests.web.conftest import chromium_path

    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium not found on PATH (scripts/setup.sh installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        context = browser.new_context()
        context.set_default_timeout(15_000)
        opened = context.new_page()
        try:
            yield opened
        finally:
            name = failed_test_name(request)
            if name:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                opened.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
            context.close()
            browser.close()
