"""Shared fixtures of the clinic assistant's tests.

Async tests are marked ``@pytest.mark.asyncio`` explicitly, so they run both in
pytest-asyncio's strict mode and once ``asyncio_mode = "auto"`` is configured.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Optional

import pytest
import yaml
from rasa.shared.core.domain import Domain
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

TESTS_DIR = Path(__file__).resolve().parent
for _path in (TESTS_DIR.parent, TESTS_DIR):  # importable without scripts/env.sh too
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from testkit import (  # noqa: E402
    CALL_REPORT,
    DOMAIN_FILES,
    TEST_CLINIC,
    ClinicConfigFactory,
    TrackerFactory,
)

from actions import settings  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


@pytest.fixture(scope="session")
def domain() -> Dict[str, Any]:
    """The domain as the action server receives it: domain.yml plus the FAQ answers."""
    as_dict: Dict[str, Any] = Domain.load(
        [str(path) for path in DOMAIN_FILES]
    ).as_dict()
    faq_answers = [
        name for name in as_dict["responses"] if name.startswith("utter_faq/")
    ]
    assert faq_answers, (
        "the utter_faq/<topic> answers of data/responses/faq.yml are missing"
    )
    return as_dict


@pytest.fixture
def dispatcher() -> CollectingDispatcher:
    """A dispatcher that collects what an action utters."""
    return CollectingDispatcher()


@pytest.fixture
def make_tracker() -> TrackerFactory:
    """Builds a ``rasa_sdk.Tracker`` whose latest message has the given parse data."""

    def factory(
        text: Optional[str] = "",
        intent: Optional[str] = None,
        confidence: float = 1.0,
        intent_ranking: Optional[List[Dict[str, Any]]] = None,
        entities: Optional[List[Dict[str, Any]]] = None,
        response_selector: Optional[Dict[str, Any]] = None,
        slots: Optional[Dict[str, Any]] = None,
    ) -> Tracker:
        if intent_ranking is None:
            intent_ranking = (
                [{"name": intent, "confidence": confidence}] if intent else []
            )
        latest_message: Dict[str, Any] = {
            "text": text,
            "intent": {"name": intent, "confidence": confidence} if intent else {},
            "intent_ranking": intent_ranking,
            "entities": entities or [],
        }
        if response_selector is not None:
            latest_message["response_selector"] = response_selector
        return Tracker(
            sender_id="test-patient",
            slots=dict(slots or {}),
            latest_message=latest_message,
            events=[],
            paused=False,
            followup_action=None,
            active_loop={},
            latest_action_name="action_listen",
        )

    return factory


@pytest.fixture
def clinic_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClinicConfigFactory]:
    """Points ``CLINIC_CONFIG`` at a temporary clinic.yml; call it to change the facts.

    Test modules that run actions use it for every test
    (``pytestmark = pytest.mark.usefixtures("clinic_config")``), so they never read the
    real clinic.yml, which the clinic edits.

    By default the made-up clinic of ``testkit.TEST_CLINIC`` has its contact fields and
    hours empty. ``clinic_config(phone="...")`` rewrites the file and clears the cached
    ``clinic()``, so the next action run reads the new facts.
    """
    path = tmp_path / "clinic.yml"

    def write(**fields: Any) -> Path:
        path.write_text(yaml.safe_dump({**TEST_CLINIC, **fields}), encoding="utf-8")
        settings.clinic.cache_clear()
        return path

    write()
    monkeypatch.setenv("CLINIC_CONFIG", str(path))
    settings.clinic.cache_clear()
    yield write
    settings.clinic.cache_clear()


@pytest.fixture(scope="session")
def rasa_domain() -> Domain:
    """The domain as the Rasa server loads it: domain.yml plus the FAQ answers."""
    return Domain.load([str(path) for path in DOMAIN_FILES])
