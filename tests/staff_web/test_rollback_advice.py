"""After a rollback, the staff page's advice is followed on the page, in Chromium.

The page runs the real retrain and rollback (staff/retrain.py) against a stand-in
for the Rasa server's API on loopback (tests/staff/staffkit.py); the two published
models are archives with only their metadata. Nothing is trained: once the edits are
undone, "Retrain and publish" finds the data exactly as the live model was trained
on and stops there, which is the check this test is about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from staff import faq_data
from staff.history import History, data_fingerprint
from staff.project import Settings
from staff.web import UNDO_ON_THE_PAGE, create_app
from tests.staff.staffkit import (
    RasaStandIn,
    copy_project,
    fake_model,
    running_stand_in,
    settings_for,
)
from tests.staff_web.conftest import PASSWORD, USERNAME, ServedApp
from tests.staff_web.test_staff_page import log_in_page

TOPIC = "dry_needling"
EXAMPLE = "is needling done lying down"
ANSWER = "Dry needling uses thin needles only."


@pytest.fixture
def rasa() -> Iterator[RasaStandIn]:
    with running_stand_in() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, rasa: RasaStandIn) -> Settings:
    project = copy_project(tmp_path / "project")
    configured = settings_for(project, tmp_path / "state", rasa_url=rasa.url)
    configured.state_dir.mkdir(mode=0o700)
    return configured


@pytest.fixture
def served(settings: Settings) -> Iterator[ServedApp]:
    """The staff page with the real retrain and rollback."""
    server = ServedApp(create_app(settings, USERNAME, PASSWORD))
    try:
        yield server
    finally:
        server.close()


def publish_two_models(settings: Settings, rasa: RasaStandIn, before: str) -> None:
    """As after two publishes: the second model was trained on the current data."""
    models = settings.project.models_dir
    history = History(models / "history.json")
    history.published = ["baseline-1.tar.gz", "candidate-2.tar.gz"]
    history.live = "candidate-2.tar.gz"
    for name, model_id, data in (
        ("baseline-1.tar.gz", "old", before),
        ("candidate-2.tar.gz", "new", data_fingerprint(settings.project)),
    ):
        fake_model(models / name, model_id)
        history.models[name] = {"model_id": model_id, "data_fingerprint": data}
    history.save()
    rasa.model_id = "new"


def run_job(page: Any, button: str, kind: str) -> None:
    from playwright.sync_api import expect

    page.get_by_role("link", name="Retrain").click()
    page.get_by_role("button", name=button).click()
    expect(page.locator("#job-state")).to_contain_text(f"Done: {kind}, took")


def test_in_chromium_the_rollback_advice_can_be_followed_on_the_page(
    page: Any, served: ServedApp, settings: Settings, rasa: RasaStandIn
) -> None:
    from playwright.sync_api import expect

    project = settings.project
    files = project.faq_nlu, project.faq_responses
    originals = {path: path.read_bytes() for path in files}
    trained_before = data_fingerprint(project)
    log_in_page(page, served)
    # Staff edit a topic; a model trained on the edit is published, then rolled back.
    page.get_by_role("link", name=TOPIC, exact=True).click()
    page.get_by_label("Ways patients ask it").fill(EXAMPLE)
    page.get_by_role("button", name="Add the examples").click()
    expect(page.get_by_role("status")).to_contain_text("Added 1 example(s)")
    page.locator("textarea[name=answer]").fill(ANSWER)
    page.get_by_role("button", name="Save the answer").click()
    expect(page.get_by_role("status")).to_contain_text("Changed the answer")
    publish_two_models(settings, rasa, trained_before)

    run_job(page, "Roll back", "rollback")
    expect(page.locator("#job-result")).to_have_text(
        "The earlier model baseline-1.tar.gz is live again."
    )
    expect(page.locator("#job-lines")).to_have_text(
        "baseline-1.tar.gz is live again; candidate-2.tar.gz was removed. The data "
        f"files still hold the edits it was trained on: {UNDO_ON_THE_PAGE}, or they "
        "come back."
    )
    assert rasa.model_id == "old"

    # The advice, step by step: the topic's page, 'Remove', 'Restore this answer'.
    page.get_by_role("link", name="FAQ topics").click()
    page.get_by_role("link", name=TOPIC, exact=True).click()
    page.get_by_role("button", name=f"Remove {EXAMPLE}").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Removed {EXAMPLE!r} from faq/{TOPIC}. The assistant learns it at the next "
        "retrain."
    )
    expect(page.get_by_role("heading", name="Earlier answers")).to_be_visible()
    page.get_by_role("button", name="Restore this answer").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"Restored an earlier answer of faq/{TOPIC}."
    )
    topic = faq_data.get_topic(project, TOPIC)
    expect(page.locator("textarea[name=answer]")).to_have_value(topic.answers[0].text)
    assert {path: path.read_bytes() for path in files} == originals

    # The next 'Retrain and publish' finds the data the live model was trained on.
    run_job(page, "Retrain and publish", "retrain and publish")
    expect(page.locator("#job-result")).to_have_text(
        "Nothing to do: the live model (baseline-1.tar.gz) was trained on exactly "
        "the current data."
    )
    assert rasa.loaded == ["baseline-1.tar.gz"]
