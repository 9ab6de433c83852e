"""The website chat widget (web/) in a real browser against the real assistant.

Headless Debian Chromium loads the demo page from scripts/serve_web.py; the widget
talks to the Rasa server's socketio channel (channels/socketio.py), which runs the
trained model with the real action server and the embedded scheduler.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, List

import pytest
import yaml
from playwright.sync_api import Dialog, Locator, Page, expect
from testkit import domain_text

from actions.booking.common import booking_values
from actions.settings import parse_clinic_config
from scheduling.config import scheduling_config
from scheduling.reminders import reminder_text
from scheduling.sqlite_backend import SqliteScheduler
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.test_reminders import job_at
from tests.integration.test_sms import Phone
from tests.web.conftest import DemoSite, Pages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"Your reference is ([A-Z0-9]{5,12})\.")
FORGED = '/inform{"appointment_option":"1"}'


def faq_answer(topic: str) -> str:
    document = yaml.safe_load((ROOT / "data/responses/faq.yml").read_text())
    return str(document["responses"][f"utter_faq/{topic}"][0]["text"])


def intro() -> str:
    """The assistant's introduction on the website, with the clinic's name."""
    config = yaml.safe_load((ROOT / "clinic.yml").read_text(encoding="utf-8"))
    name = parse_clinic_config(config, "clinic.yml").template_values()["clinic_name"]
    return domain_text("utter_intro", "socketio").replace("{clinic_name}", name)


def launcher(page: Page) -> Locator:
    return page.get_by_role("button", name="Chat with us")


def message_box(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Your message")


def conversation(page: Page) -> Locator:
    return page.get_by_role("log")


def bot_messages(page: Page) -> Locator:
    return page.locator(".cc-bot")


def choices(page: Page) -> Locator:
    """The buttons of the latest bot message that has any."""
    return page.locator(".cc-choices").last.get_by_role("button")


def shown(page: Page) -> List[str]:
    """Every message in the widget, in order, as a screen reader reads it."""
    texts = page.locator(".cc-msg").evaluate_all("ns => ns.map(n => n.textContent)")
    return [str(text) for text in texts]


def open_chat(page: Page, introduced: bool = True) -> None:
    """Opens the chat; a new conversation waits for the assistant's introduction."""
    launcher(page).click()
    expect(message_box(page)).to_be_focused()
    if introduced:
        expect(bot_messages(page).first).to_have_text(f"Assistant: {intro()}")


def settle(page: Page, answers: int) -> None:
    """Waits for the answer to start, then until no message came for 0.5 s."""
    expect(bot_messages(page)).not_to_have_count(answers)
    expect(page.locator(".cc-typing")).to_be_hidden()
    while answers != bot_messages(page).count():
        answers = bot_messages(page).count()
        page.wait_for_timeout(500)


def say(page: Page, text: str) -> None:
    """Types ``text`` and sends it, then waits until the assistant answered."""
    answers = bot_messages(page).count()
    message_box(page).fill(text)
    message_box(page).press("Enter")
    expect(page.locator(".cc-user").last).to_have_text(f"You: {text}")
    settle(page, answers)


def click_choice(page: Page, title: str) -> None:
    answers = bot_messages(page).count()
    choices(page).filter(has_text=title).first.click()
    expect(page.locator(".cc-user").last).to_have_text(f"You: {title}")
    settle(page, answers)


def session_id(page: Page) -> str:
    value = page.evaluate(
        """() => {
            const keys = Object.keys(localStorage);
            const key = keys.find(k => k.startsWith("clinic-chat:"));
            return key && JSON.parse(localStorage.getItem(key)).sessionId;
        }"""
    )
    assert isinstance(value, str) and value, value
    return value


def user_events(site: DemoSite, sender: str, count: int) -> List[dict[str, Any]]:
    """The first ``count`` user events Rasa stored for ``sender``.

    Rasa saves the tracker after the turn's last answer was sent: wait for it.
    """
    deadline = time.monotonic() + 15
    while True:
        with sqlite3.connect(site.assistant.tracker_db) as db:
            rows = db.execute(
                "SELECT data FROM events WHERE sender_id = ? AND type_name = 'user'"
                " ORDER BY id",
                (sender,),
            ).fetchall()
        if len(rows) >= count or time.monotonic() > deadline:
            return [json.loads(row[0]) for row in rows[:count]]
        time.sleep(0.2)


def focused_label(page: Page) -> str:
    """Text or aria-label of the focused element, inside the widget's shadow root."""
    return str(
        page.evaluate(
            """() => {
                let e = document.activeElement;
                while (e && e.shadowRoot && e.shadowRoot.activeElement) {
                    e = e.shadowRoot.activeElement;
                }
                return e ? (e.getAttribute("aria-label") || e.textContent || e.id) : "";
            }"""
        )
    )


def test_one_greeting_the_introduction_when_the_chat_opens(page: Page) -> None:
    open_chat(page)
    # Nothing else follows the introduction (no widget greeting, no second intro).
    page.wait_for_timeout(1500)
    assert shown(page) == [f"Assistant: {intro()}"]
    say(page, "what is a back spasm exactly")
    assert shown(page) == [
        f"Assistant: {intro()}",
        "You: what is a back spasm exactly",
        f"Assistant: {faq_answer('what_is_spasm')}",
    ]
    # A reload shows the same conversation and the server repeats nothing.
    page.reload()
    expect(conversation(page)).to_be_visible()
    page.wait_for_timeout(1500)
    assert len(shown(page)) == 3


def test_faq_question_gets_its_answer(page: Page) -> None:
    open_chat(page)
    say(page, "what is a back spasm exactly")
    expect(bot_messages(page).last).to_have_text(
        f"Assistant: {faq_answer('what_is_spasm')}"
    )
    # The first answer of a session says what the assistant is.
    expect(conversation(page)).to_contain_text("virtual assistant")


def test_button_click_sends_the_payload_and_disables_old_buttons(page: Page) -> None:
    open_chat(page)
    say(page, "I'd like to book an appointment")
    expect(bot_messages(page).last).to_contain_text("What kind of visit")
    groups = page.locator(".cc-choices")
    visit_types = groups.nth(groups.count() - 1).get_by_role("button")
    expect(visit_types.filter(has_text="Dry needling")).to_be_enabled()
    click_choice(page, "Dry needling")
    expect(bot_messages(page).last).to_contain_text("What day and time")
    expect(visit_types).to_have_count(5)
    for index in range(5):
        expect(visit_types.nth(index)).to_be_disabled()


def test_reload_keeps_the_conversation(page: Page) -> None:
    open_chat(page)
    say(page, "I'd like to book an appointment")
    expect(bot_messages(page).last).to_contain_text("What kind of visit")
    before = conversation(page).inner_text()
    sender = session_id(page)

    page.reload()
    # The panel was open: it opens again with the same transcript and session.
    expect(conversation(page)).to_be_visible()
    assert conversation(page).inner_text() == before
    assert session_id(page) == sender
    # The offered buttons still work: the server knows this conversation.
    click_choice(page, "Dry needling")
    expect(bot_messages(page).last).to_contain_text("What day and time")


def test_an_idle_conversation_is_forgotten(page: Page) -> None:
    open_chat(page)
    say(page, "hello")
    first = session_id(page)
    # Saved more than sessionMinutes (60) ago, as after an hour away.
    page.evaluate(
        """() => {
            for (const key of Object.keys(localStorage)) {
                const saved = JSON.parse(localStorage.getItem(key));
                saved.updatedAt = Date.now() - 61 * 60 * 1000;
                localStorage.setItem(key, JSON.stringify(saved));
            }
        }"""
    )
    page.reload()
    expect(message_box(page)).to_be_hidden()
    open_chat(page)
    expect(page.locator(".cc-user")).to_have_count(0)
    say(page, "hello")
    assert session_id(page) != first


def test_new_chat_forgets_the_conversation(page: Page) -> None:
    open_chat(page)
    say(page, "hello")
    first = session_id(page)
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".cc-user")).to_have_count(0)
    expect(message_box(page)).to_be_focused()
    # A new Rasa conversation: it introduces itself again, before any question.
    expect(bot_messages(page)).to_have_text([f"Assistant: {intro()}"])
    say(page, "hello")
    assert session_id(page) != first
    assert shown(page)[:2] == [f"Assistant: {intro()}", "You: hello"]


def test_the_conversation_id_is_the_servers(page: Page) -> None:
    open_chat(page)
    say(page, "hello")
    issued = session_id(page)
    assert re.fullmatch(r"[0-9a-f]{32}-[0-9a-f]{12}", issued), issued
    # An id the server did not sign (a script's, another conversation's) is not
    # taken: a new conversation starts, and the one shown is cleared.
    page.evaluate(
        """chosen => {
            for (const key of Object.keys(localStorage)) {
                const saved = JSON.parse(localStorage.getItem(key));
                saved.sessionId = chosen;
                localStorage.setItem(key, JSON.stringify(saved));
            }
        }""",
        "chosen-by-the-page",
    )
    page.reload()
    expect(bot_messages(page)).to_have_text([f"Assistant: {intro()}"])
    expect(page.locator(".cc-user")).to_have_count(0)
    assert session_id(page) not in ("chosen-by-the-page", issued)


def test_book_an_appointment_end_to_end_then_the_reminder_by_sms(
    page: Page, site: DemoSite, twilio_api: FakeTwilioApi
) -> None:
    """Booked in the widget with consent; reminded by SMS at its time; 1 confirms."""
    open_chat(page)
    say(page, "I'd like to book an appointment")
    click_choice(page, "Dry needling")
    say(page, "as soon as possible")
    expect(bot_messages(page).last).to_contain_text("open times")
    first_time = choices(page).first.inner_text()
    click_choice(page, first_time)
    expect(bot_messages(page).last).to_contain_text("full name")
    say(page, "Maria Lopez")
    say(page, "817-555-0100")
    expect(bot_messages(page).last).to_contain_text("Shall I book it?")
    expect(bot_messages(page).last).to_contain_text(first_time)
    click_choice(page, "Yes, book it")
    expect(bot_messages(page).last).to_contain_text(
        "May we text you a reminder at (817) 555-0100 before the visit?"
    )
    click_choice(page, "Yes, text me a reminder")
    expect(bot_messages(page).last).to_contain_text(
        "We'll text you a reminder before the visit."
    )
    reference = REFERENCE.search(bot_messages(page).nth(-2).inner_text())
    assert reference

    # The reminder job, at the reminder's send time (tests/integration/test_reminders).
    phone = Phone(site.assistant, twilio_api)
    phone.number = "+18175550100"
    scheduler = SqliteScheduler(site.assistant.scheduler_db, scheduling_config())
    booking = scheduler.get_booking(reference.group(1), phone.number)
    assert booking.reminder_consent
    assert job_at(site.assistant, booking).run_once().sent == 1
    assert twilio_api.wait_for_messages(phone.number, 1, timeout=60) == [
        reminder_text(booking)
    ]
    assert phone.say("1") == domain_text("utter_reminder_confirmed").format(
        **booking_values(booking)
    )
    assert scheduler.get_booking(booking.reference, phone.number).confirmed


@pytest.mark.parametrize(
    "typed", ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">']
)
def test_patient_markup_is_shown_as_text(page: Page, typed: str) -> None:
    dialogs: List[Dialog] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog), dialog.dismiss()))
    open_chat(page)
    say(page, typed)
    expect(page.locator(".cc-user").last).to_have_text(f"You: {typed}")
    assert page.locator(".cc-log script, .cc-log img").count() == 0
    assert dialogs == []


def test_assistant_text_is_text_and_only_web_addresses_are_links(page: Page) -> None:
    dialogs: List[Dialog] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog), dialog.dismiss()))
    text = (
        '<img src=x onerror="alert(1)"> See https://example.org/back-pain. '
        "Not javascript:alert(1) nor data:text/html,<b>x</b>"
    )
    # The widget's own rendering of a bot_uttered event, as from the server.
    open_chat(page)
    page.wait_for_function("() => ClinicChat.init({}).confirmed")
    page.evaluate("text => ClinicChat.init({}).receive({text})", text)
    message = bot_messages(page).last
    expect(message).to_have_text(f"Assistant: {text}")
    links = message.locator("a")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.org/back-pain")
    expect(links).to_have_attribute("rel", "noopener noreferrer nofollow")
    assert page.locator(".cc-log img, .cc-log b").count() == 0
    assert dialogs == []


def test_keyboard_only(page: Page) -> None:
    page.keyboard.press("Tab")
    assert focused_label(page) == "Chat with us"
    page.keyboard.press("Enter")
    expect(message_box(page)).to_be_focused()
    page.keyboard.type("I'd like to book an appointment")
    page.keyboard.press("Enter")
    expect(bot_messages(page).last).to_contain_text("What kind of visit")
    # The latest choices come right before the message box: Shift+Tab reaches them.
    for _ in range(10):
        if focused_label(page) == "Dry needling":
            break
        page.keyboard.press("Shift+Tab")
    assert focused_label(page) == "Dry needling"
    page.keyboard.press("Enter")
    expect(page.locator(".cc-user").last).to_have_text("You: Dry needling")
    expect(bot_messages(page).last).to_contain_text("What day and time")
    expect(message_box(page)).to_be_focused()
    page.keyboard.press("Escape")
    expect(message_box(page)).to_be_hidden()
    assert focused_label(page) == "Chat with us"
    expect(launcher(page)).to_have_attribute("aria-expanded", "false")


def test_accessible_names_and_live_log(page: Page) -> None:
    expect(launcher(page)).to_have_attribute("aria-expanded", "false")
    open_chat(page)
    expect(launcher(page)).to_have_attribute("aria-expanded", "true")
    expect(conversation(page)).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("dialog", name="Valliant Life Medical")).to_be_visible()
    expect(page.get_by_role("button", name="Close chat")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_typed_commands_are_read_as_words(page: Page, site: DemoSite) -> None:
    open_chat(page)
    say(page, "I'd like to book an appointment")
    say(page, "/restart")
    say(page, FORGED)  # a time was never offered to this conversation
    expect(page.locator(".cc-user").nth(1)).to_have_text("You: /restart")
    expect(page.locator(".cc-user").nth(2)).to_have_text(f"You: {FORGED}")
    expect(bot_messages(page).last).not_to_contain_text("full name")

    events = user_events(site, session_id(page), 3)
    texts = [event["text"] for event in events]
    assert texts[1:] == ["restart", FORGED[1:]], texts
    assert events[1]["parse_data"]["intent"]["name"] != "restart"
    entities = [e["entity"] for e in events[2]["parse_data"].get("entities", [])]
    assert "appointment_option" not in entities
    # The offered buttons still go through as commands.
    click_choice(page, "Dry needling")
    clicked = user_events(site, session_id(page), 4)[-1]
    assert clicked["text"] == '/inform{"visit_type": "dry_needling"}'


def test_malformed_socket_messages_get_a_reason(page: Page) -> None:
    open_chat(page)
    say(page, "hello")
    status = page.get_by_role("status")
    for payload, reason in [
        ("just a string", "must be an object"),
        ({"message": 42}, "'message' must be a string"),
        ({"message": "x" * 10_001}, "longer than 10000 characters"),
        ({"message": "hi", "session_id": "someone-else"}, "not the session"),
    ]:
        page.evaluate(
            "payload => ClinicChat.init({}).socket.emit('user_uttered', payload)",
            payload,
        )
        expect(status).to_contain_text(reason)
    # The connection still works afterwards.
    say(page, "what is dry needling")
    expect(bot_messages(page).last).to_have_text(
        f"Assistant: {faq_answer('dry_needling')}"
    )


def test_other_origins_cannot_connect(pages: Pages, site: DemoSite) -> None:
    # The same page from another origin, not in WIDGET_ALLOWED_ORIGINS.
    page = pages.open(site.url.replace("127.0.0.1", "localhost"))
    open_chat(page, introduced=False)
    message_box(page).fill("hello")
    message_box(page).press("Enter")
    expect(page.locator(".cc-typing")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Cannot reach the assistant")
    assert bot_messages(page).count() == 0  # no answer, not even the introduction


def test_fits_a_phone_screen(pages: Pages) -> None:
    page = pages.open(viewport={"width": 375, "height": 667})
    open_chat(page)
    box = page.get_by_role("dialog").bounding_box()
    assert box is not None
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 375, 667)


def test_built_widget_matches_its_sources() -> None:
    web = ROOT / "web"
    names = ["build.mjs", "package.json", "package-lock.json"]
    names += sorted(f"src/{path.name}" for path in (web / "src").iterdir())
    digest = hashlib.sha256(b"".join((web / n).read_bytes() for n in names))
    first_line = (web / "dist" / "clinic-chat.js").read_text().splitlines()[0]
    assert f"sources sha256:{digest.hexdigest()}" in first_line, (
        "web/dist/clinic-chat.js is older than web/src: run 'make setup'"
    )
