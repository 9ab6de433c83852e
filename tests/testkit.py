"""Helpers shared by the test modules (the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
import yaml
from rasa_sdk import Tracker

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The project's own packages: docs/architecture.md's rooms.
PROJECT_PACKAGES = frozenset(
    {
        "actions",
        "benchmarks",
        "channels",
        "clinic_common",
        "clinic_core",
        "clinic_nlu",
        "scheduling",
        "scripts",
        "staff",
    }
)
DOMAIN_FILES = (
    PROJECT_ROOT / "domain.yml",
    PROJECT_ROOT / "data" / "responses" / "faq.yml",
)
NLU_DIR = PROJECT_ROOT / "data" / "nlu"
HELDOUT_FILE = PROJECT_ROOT / "tests" / "nlu_heldout" / "heldout.yml"
STORIES_DIR = PROJECT_ROOT / "tests" / "stories"
KNOWN_MISSES_DIR = PROJECT_ROOT / "tests" / "stories_known_nlu_misses"

# Facts of a made-up clinic: the tests never depend on what clinic.yml holds today.
TEST_CLINIC: Dict[str, str] = {
    "name": "Test Spine Clinic",
    "city": "Springfield",
    "state": "Illinois",
    "address": "",
    "phone": "",
    "hours": "",
    "website": "",
}
FILLED_CONTACT: Dict[str, str] = {
    "address": "42 Elm Street, Suite 7, Springfield, IL 62701",
    "phone": "(555) 010-4477",
    "website": "https://spine-clinic.example",
}
TEST_HOURS = "Mon-Thu 7:30 AM-4:00 PM"

# Fixture types: the `clinic_config` and `make_tracker` fixtures of conftest.py.
ClinicConfigFactory = Callable[..., Path]
TrackerFactory = Callable[..., Tracker]

# Keys of a CollectingDispatcher message that are not placeholder values.
_MESSAGE_KEYS = {
    "text",
    "buttons",
    "elements",
    "custom",
    "template",
    "response",
    "image",
    "attachment",
}


def selector(
    ranking: Sequence[Tuple[str, float]], retrieval_intent: str = "faq"
) -> Dict[str, Any]:
    """Response-selector parse data as Rasa 3.6 makes it, from (topic, confidence)."""
    entries = [
        {
            "id": index,
            "confidence": confidence,
            "intent_response_key": f"{retrieval_intent}/{topic}",
        }
        for index, (topic, confidence) in enumerate(ranking)
    ]
    top: Dict[str, Any] = entries[0] if entries else {"id": None, "confidence": 0.0}
    key = top.get("intent_response_key")
    return {
        "all_retrieval_intents": [retrieval_intent],
        retrieval_intent: {
            "response": {
                "id": top["id"],
                "responses": None,
                "response_templates": None,
                "confidence": top["confidence"],
                "intent_response_key": key,
                "utter_action": f"utter_{key}" if key else None,
                "template_name": f"utter_{key}" if key else None,
            },
            "ranking": entries,
        },
    }


def render(message: Dict[str, Any], domain: Dict[str, Any]) -> str:
    """What Rasa would send for a dispatched message: its response filled with kwargs.

    Mirrors ``rasa.core.actions.action.RemoteAction._utter_responses``: the kwargs of
    ``utter_message`` are the values of the response's placeholders. Buttons are
    rendered as "title payload" lines.
    """
    from rasa.core.nlg.interpolator import interpolate_text

    values = {key: value for key, value in message.items() if key not in _MESSAGE_KEYS}
    parts: List[str] = []
    name = message.get("response")
    if name:
        # The variation without a channel: what the web and REST channels get.
        variations = [v for v in domain["responses"][name] if not v.get("channel")]
        assert len(variations) == 1, f"{name}: the tests expect one variation"
        parts.append(interpolate_text(variations[0]["text"], values))
    if message.get("text"):
        parts.append(str(message["text"]))
    parts.extend(
        f"{button['title']} {button['payload']}"
        for button in message.get("buttons") or []
    )
    return "\n".join(parts)


def nlu_examples(path: Path) -> List[Tuple[str, str]]:
    """(intent, example) pairs of a Rasa NLU YAML file."""
    pairs: List[Tuple[str, str]] = []
    for block in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu") or []:
        if "intent" not in block:
            continue
        for line in str(block.get("examples") or "").splitlines():
            line = line.strip()
            if line.startswith("- "):
                pairs.append((str(block["intent"]), line[2:].strip()))
    return pairs


def training_examples() -> List[Tuple[str, str]]:
    """(intent, example) pairs of every file in data/nlu."""
    return [
        pair for path in sorted(NLU_DIR.glob("*.yml")) for pair in nlu_examples(path)
    ]


def normalise(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation: for duplicate checks."""
    text = re.sub(r"\s+", " ", text.lower()).strip()
    return re.sub(r"[\s.,;:!?]+$", "", text)


def first_faq_answers() -> Dict[str, str]:
    """The first variation of each FAQ answer, by topic (as a web patient sees it)."""
    document = yaml.safe_load(DOMAIN_FILES[1].read_text(encoding="utf-8"))
    return {
        name.split("/", 1)[1]: variants[0]["text"]
        for name, variants in document["responses"].items()
    }


def domain_text(response: str, channel: Optional[str] = None) -> str:
    """The text of a response in domain.yml for a channel, without any condition.

    The variation for ``channel`` if the response has one, else its default one
    (no channel, no condition): what a patient on that channel reads.
    """
    document = yaml.safe_load(DOMAIN_FILES[0].read_text(encoding="utf-8"))
    variations = [
        variation
        for variation in document["responses"][response]
        if not variation.get("condition")
    ]
    for wanted in (channel, None):
        for variation in variations:
            if variation.get("channel") == wanted:
                return str(variation["text"])
    raise KeyError(f"{response} has no variation for channel {channel!r}")


# The "call" phase report of each test, kept by the hook in tests/conftest.py so that
# browser fixtures can keep a screenshot of a failed test.
CALL_REPORT = pytest.StashKey[pytest.TestReport]()


def failed_test_name(request: pytest.FixtureRequest) -> Optional[str]:
    """A file-safe name of the running test if it failed, else None."""
    report = request.node.stash.get(CALL_REPORT, None)
    if report is None or not report.failed:
        return None
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)


def post_rest(rasa_port: int, body: bytes, timeout: float = 60) -> Tuple[int, Any]:
    """Posts ``body`` (JSON) to the REST channel on ``rasa_port``.

    Returns the status and the parsed replies, or an error's text.
    """
    request = urllib.request.Request(
        f"http://127.0.0.1:{rasa_port}/webhooks/rest/webhook",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


@contextlib.contextmanager
def extension_on(name: str) -> Iterator[None]:
    """The Rasa server extension ``name`` on, as config.yml switches it on there.

    Off again afterwards unless it was already on.
    """
    from clinic_core import extensions  # imports Rasa: only for the tests that use it

    was_on = name in extensions.switched_on()
    extensions.switch_on([name])
    yield
    if not was_on:
        extensions.switch_off([name])
