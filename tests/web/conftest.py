"""The website widget in headless Chromium against the real assistant.

One Rasa server (with the socketio channel of credentials.yml), one action server and
one demo-page server (scripts/serve_web.py) run for the session, all on free loopback
ports; every test gets a fresh browser context, so a fresh localStorage. A failed
test leaves a screenshot in results/screenshots/<test>.png.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from testkit import failed_test_name

from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration import conftest as integration
from tests.integration.conftest import (
    Assistant,
    free_port,
    sms_env,
    stop,
    wait_until_ready,
)

# The fake Twilio API the assistant texts (reminders), as in the integration tests.
twilio_api = integration.twilio_api

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "results" / "screenshots"


def chromium_path() -> str | None:
    """Debian's chromium (scripts/setup.sh installs it), wherever it is on PATH."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class DemoSite:
    """The demo page served by scripts/serve_web.py, talking to ``assistant``."""

    def __init__(self, assistant: Assistant, port: int, log: Path) -> None:
        self.assistant = assistant
        self.origin = f"http://127.0.0.1:{port}"
        self.url = f"{self.origin}/demo/"
        self.server_url = f"http://127.0.0.1:{assistant.rasa_port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "serve_web.py"),
                "--port",
                str(port),
                "--server-url",
                self.server_url,
            ],
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until_ready(self.url, self.process, 30)

    def close(self) -> None:
        stop(self.process)


@pytest.fixture(scope="session")
def site(
    tmp_path_factory: pytest.TempPathFactory, twilio_api: FakeTwilioApi
) -> Iterator[DemoSite]:
    """The demo page and its assistant, whose SMS (reminders) go to the fake Twilio."""
    if chromium_path() is None:
        pytest.skip("chromium not found on PATH (scripts/setup.sh installs it as root)")
    web_port = free_port()
    tmp = tmp_path_factory.mktemp("widget")
    with pytest.MonkeyPatch.context() as patch:
        # Only the demo page's own origin may open a socket (channels/socketio.py).
        patch.setenv("WIDGET_ALLOWED_ORIGINS", f"http://127.0.0.1:{web_port}")
        assistant = Assistant(tmp, extra_env=sms_env(twilio_api))
    try:
        demo = DemoSite(assistant, web_port, tmp / "web.log")
        try:
            yield demo
        finally:
            demo.close()
    finally:
        assistant.close()


@pytest.fixture(scope="session")
def browser(site: DemoSite) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


class Pages:
    """Opens pages, each in a fresh browser context (so a fresh localStorage)."""

    def __init__(self, browser: Browser, site: DemoSite) -> None:
        self.browser = browser
        self.site = site
        self.contexts: List[BrowserContext] = []

    def open(self, url: str = "", **context_options: Any) -> Page:
        context = self.browser.new_context(**context_options)
        context.set_default_timeout(30_000)
        self.contexts.append(context)
        page = context.new_page()
        page.goto(url or self.site.url)
        return page

    def close(self, screenshot_name: str | None) -> None:
        for number, context in enumerate(self.contexts):
            if screenshot_name:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                suffix = f"-{number}" if number else ""
                path = SCREENSHOTS / f"{screenshot_name}{suffix}.png"
                for page in context.pages:
                    page.screenshot(path=str(path))
            context.close()


@pytest.fixture
def pages(
    browser: Browser, site: DemoSite, request: pytest.FixtureRequest
) -> Iterator[Pages]:
    opened = Pages(browser, site)
    try:
        yield opened
    finally:
        opened.close(failed_test_name(request))


@pytest.fixture
def page(pages: Pages) -> Page:
    """The demo page at a desktop size."""
    return pages.open()
