"""Whole transcripts: every message a patient receives, in order, on the web and by SMS.

Each file in tests/transcripts/ is one conversation flow, written to be read by a
clinic manager: what the patient sends (``patient: ...``, or ``choose: <title>`` for
a button on the web and its number by SMS) and, for each turn, exactly what comes
back on the web (REST: text and buttons) and by SMS (the texts the Twilio fake was
asked to send). Dates, times and booking references are normalised (``<DATE TIME>``,
``<REF>``) so the files do not depend on the day.

The test plays each flow against the real servers as a new patient on both
channels and compares the whole transcript with the file, then runs the
conversation lint (tests/transcript_lint.py) over it.

To write the replies of a new or changed flow, run with ``RECORD_TRANSCRIPTS=1``:
the files' replies are replaced by what the assistant says now. Read the diff
before committing it: that review is the point.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml
from transcript_lint import problems

from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import Assistant
from tests.integration.test_sms import Phone

pytestmark = pytest.mark.integration

FOLDER = Path(__file__).resolve().parents[1] / "transcripts"
FLOWS = sorted(FOLDER.glob("*.yml"))
RECORD = os.environ.get("RECORD_TRANSCRIPTS") == "1"
SMS_QUIET_SECONDS = 0.4  # a turn's SMS (split if long) come within this of each other

WHEN = re.compile(
    r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d{1,2}, "
    r"\d{1,2}:\d{2} [AP]M C[SD]T\b"
)
REFERENCE = re.compile(r"\b(reference(?: is)?|reference) ([A-Z0-9]{6})\b")


def normalise(text: str) -> str:
    """The text with dates, times and reference codes replaced by placeholders."""
    text = WHEN.sub("<DATE TIME>", text)
    return REFERENCE.sub(lambda match: f"{match.group(1)} <REF>", text)


class Patient:
    """One new patient on both channels at once."""

    def __init__(self, assistant: Assistant, twilio: FakeTwilioApi) -> None:
        self.assistant = assistant
        self.sender = f"transcript-{uuid.uuid4().hex[:10]}"
        self.phone = Phone(assistant, twilio)
        self.twilio = twilio
        self.web_buttons: List[Dict[str, str]] = []
        self.sms_choices: Dict[str, str] = {}
        # The latest booking reference each channel was given, for "<REF>".
        self.references: Dict[str, str] = {"web": "", "sms": ""}

    def typed(self, turn: Dict[str, Any], channel: str) -> str:
        """What the patient types; "<REF>" is their latest booking reference."""
        typed = turn["patient"]
        assert isinstance(typed, str), f"quote {typed!r} in the flow file"
        return typed.replace("<REF>", self.references[channel])

    def remember_reference(self, channel: str, text: str) -> None:
        match = REFERENCE.search(text)
        if match:
            self.references[channel] = match.group(2)

    def web(self, turn: Dict[str, Any]) -> List[Dict[str, Any]]:
        if "choose" in turn:
            payload = next(
                button["payload"]
                for button in self.web_buttons
                if normalise(button["title"]) == turn["choose"]
            )
        else:
            payload = self.typed(turn, "web")
        replies = self.assistant.replies(self.sender, payload)
        self.web_buttons = [b for r in replies for b in r.get("buttons") or []]
        messages: List[Dict[str, Any]] = []
        for reply in replies:
            self.remember_reference("web", str(reply.get("text") or ""))
            message: Dict[str, Any] = {"text": normalise(str(reply.get("text") or ""))}
            if reply.get("buttons"):
                message["buttons"] = [normalise(b["title"]) for b in reply["buttons"]]
            messages.append(message)
        return messages

    def sms(self, turn: Dict[str, Any]) -> List[str]:
        if "choose" in turn:
            text = self.sms_choices[turn["choose"]]
        else:
            text = self.typed(turn, "sms")
        before = len(self.phone.received())
        assert self.phone.post(text) == 200
        self.twilio.wait_for_messages(self.phone.number, before + 1, timeout=60)
        while True:  # a long answer may come as several SMS
            count = len(self.phone.received())
            time.sleep(SMS_QUIET_SECONDS)
            if len(self.phone.received()) == count:
                break
        bodies = self.phone.received()[before:]
        self.sms_choices = {}
        for number, title in re.findall(r"^(\d+)\. (.+)$", bodies[-1], re.M):
            self.sms_choices.setdefault(normalise(title), number)  # the first of equals
        for body in bodies:
            self.remember_reference("sms", body)
        return [normalise(body) for body in bodies]


def play(
    assistant: Assistant, twilio: FakeTwilioApi, flow: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """The flow's turns with what the assistant answers now."""
    patient = Patient(assistant, twilio)
    played: List[Dict[str, Any]] = [
        {key: turn[key] for key in ("patient", "choose") if key in turn}
        for turn in flow["turns"]
    ]
    # The whole web conversation first, then the SMS one: interleaved, the two
    # would compete for the same open time.
    for channel, answer in (("web", patient.web), ("sms", patient.sms)):
        for turn, record in zip(flow["turns"], played, strict=True):
            try:
                record[channel] = answer(turn)
            except (KeyError, StopIteration) as error:
                so_far = yaml.dump(played, Dumper=_Dumper, width=10_000)
                raise AssertionError(
                    f"cannot play {turn}; so far:\n{so_far}"
                ) from error
    return played


class _Dumper(yaml.SafeDumper):
    """One message a line; an SMS of several paragraphs as a literal block."""


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def load(path: Path) -> Tuple[str, Dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return header, yaml.safe_load(text)


@pytest.mark.parametrize("path", FLOWS, ids=[path.stem for path in FLOWS])
def test_transcript(
    assistant: Assistant, twilio_api: FakeTwilioApi, path: Path
) -> None:
    header, flow = load(path)
    played = play(assistant, twilio_api, flow)
    if RECORD:
        flow["turns"] = played
        path.write_text(
            header
            + yaml.dump(
                flow, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000
            ),
            encoding="utf-8",
        )
    assert played == flow["turns"]
    assert problems(played) == []


def test_there_are_transcripts() -> None:
    assert len(FLOWS) >= 10
