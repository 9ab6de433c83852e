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

A turn may first set the scene with ``before: <step>``, on each channel, just
before the patient's message (see :meth:`Patient.before`); each works on the real
databases of the running assistant, nothing is mocked:

- ``scheduler down``: the scheduler's database file is moved away and replaced by
  one that is not a database (as ``make faults`` does), until the end of the
  channel's conversation;
- ``the hour taken``: the first whole hour with an open dry needling time is booked
  for every provider through the scheduler's own API; the patient's ``<TAKEN>``
  is that hour, as they would type it ("Monday December 7 at 9:00 AM");
- ``two hours later``: the conversation's stored events are moved two hours back
  in the conversations' database (written again with new ids, so the server reads
  them afresh), as if the patient came back after the session expired;
- ``a reminder``: the first open dry needling time from tomorrow on is booked for
  the patient's number with their consent to reminders (through the scheduler's
  own API), and its reminder is triggered as the reminder job does: Rasa's HTTP API
  ``trigger_intent`` with ``EXTERNAL_appointment_reminder`` and the booking's
  reference, into the patient's SMS conversation (``output_channel=twilio``). A turn
  with a step and no message of the patient's records what the step brought: here
  the reminder, as the Twilio fake was asked to send it. The test phone's number,
  new each run, is shown as ``<PHONE>``.

A flow of one channel only names it (``channels: [sms]``: reminders go by SMS). A
turn whose ``patient`` or ``choose`` is a mapping (``{web: ..., sms: ...}``) sends
each channel its own message, and is skipped on a channel the mapping leaves out:
by SMS the read-back also asks about reminders, which the web asks next.

To write the replies of a new or changed flow, run with ``RECORD_TRANSCRIPTS=1``:
the files' replies are replaced by what the assistant says now. Read the diff
before committing it: that review is the point.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml
from transcript_lint import problems

from actions.booking.parsing import display_phone
from channels.twilio_sms import CHANNEL_NAME as SMS_CHANNEL
from scheduling.base import Patient as BookingPatient
from scheduling.config import scheduling_config
from scheduling.sqlite_backend import SqliteScheduler
from staff.rasa_api import RasaApi
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import Assistant
from tests.integration.test_sms import Phone

pytestmark = pytest.mark.integration

FOLDER = Path(__file__).resolve().parents[1] / "transcripts"
FLOWS = sorted(FOLDER.glob("*.yml"))
RECORD = os.environ.get("RECORD_TRANSCRIPTS") == "1"
SMS_QUIET_SECONDS = 0.4  # a turn's SMS (split if long) come within this of each other
LATER_SECONDS = 2 * 3600  # "two hours later": past domain.yml's 60-minute session

WHEN = re.compile(
    r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d{1,2}, "
    r"\d{1,2}:\d{2} [AP]M C[SD]T\b"
)
REFERENCE = re.compile(r"\b(reference(?: is)?|reference) ([A-Z0-9]{6})\b")
# The reminder's day and time (scheduling/reminders.py): "Tue, Dec 8 at 9:00 AM".
REMINDER_DAY = re.compile(
    r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*, [A-Z][a-z]+ \d{1,2}\b"
)
REMINDER_TIME = re.compile(r"\b\d{1,2}:\d{2} [AP]M\b")
CHANNELS = ("web", "sms")
REMINDER_INTENT = "EXTERNAL_appointment_reminder"
REMINDED_NAME = "Marisol Quintanilla"


def normalise(text: str) -> str:
    """The text with dates, times and reference codes replaced by placeholders."""
    text = WHEN.sub("<DATE TIME>", text)
    text = REMINDER_TIME.sub("<TIME>", REMINDER_DAY.sub("<DAY>", text))
    return REFERENCE.sub(lambda match: f"{match.group(1)} <REF>", text)


def for_channel(turn: Dict[str, Any], channel: str) -> Optional[Dict[str, Any]]:
    """The turn as ``channel`` plays it, or None if it is not that channel's.

    A ``patient`` or ``choose`` mapping gives each channel its own message.
    """
    played = dict(turn)
    for key in ("patient", "choose"):
        if isinstance(turn.get(key), dict):
            if channel not in turn[key]:
                return None
            played[key] = turn[key][channel]
    return played


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
        self.taken = ""  # the hour "the hour taken" booked, for "<TAKEN>"
        self.own_number = ""  # the SMS number as the assistant shows it, if it does
        self.scheduler_moved: List[Tuple[Path, Path]] = []

    def mark(self, channel: str) -> int:
        """How many SMS the patient has received: what comes later is this turn's."""
        return len(self.phone.received()) if channel == "sms" else 0

    def typed(self, turn: Dict[str, Any], channel: str) -> str:
        """What the patient types; "<REF>" is their latest booking reference."""
        typed = turn["patient"]
        assert isinstance(typed, str), f"quote {typed!r} in the flow file"
        return typed.replace("<REF>", self.references[channel]).replace(
            "<TAKEN>", self.taken
        )

    def before(self, step: str, channel: str) -> None:
        """Sets the scene of a turn (the steps are in the module docstring)."""
        if step == "scheduler down":
            self.scheduler_down()
        elif step == "the hour taken":
            self.take_an_hour()
        elif step == "two hours later":
            self.two_hours_later(self.sender if channel == "web" else self.phone.number)
        elif step == "a reminder":
            assert channel == "sms", "reminders go by SMS: channels: [sms]"
            self.reminder()
        else:
            raise AssertionError(f"unknown step 'before: {step}'")

    def scheduler_down(self) -> None:
        database = self.assistant.scheduler_db
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{database}{suffix}")
            if path.exists():
                away = path.with_name(path.name + ".away")
                path.rename(away)
                self.scheduler_moved.append((away, path))
        database.write_bytes(b"not a database " * 64)

    def scheduler_back(self) -> None:
        if self.scheduler_moved:
            self.assistant.scheduler_db.unlink()
        for away, path in self.scheduler_moved:
            away.rename(path)
        self.scheduler_moved = []

    def take_an_hour(self) -> None:
        config = scheduling_config()
        scheduler = SqliteScheduler(self.assistant.scheduler_db, config)
        now = datetime.now(timezone.utc)
        start = next(
            slot.start
            for slot in scheduler.find_slots(
                "dry_needling", now, now + timedelta(days=30), 100
            )
            if slot.start.astimezone(config.tz).minute == 0
        )
        while slots := scheduler.find_slots(
            "dry_needling", start, start + timedelta(hours=1), 1
        ):
            scheduler.book(
                slots[0],
                BookingPatient("Someone Else", "+18175550100"),
                uuid.uuid4().hex,
            )
        local = start.astimezone(config.tz)
        hour = local.strftime("%I:%M %p").lstrip("0")
        self.taken = f"{local:%A %B} {local.day} at {hour}"

    def reminder(self) -> None:
        """Books a visit with consent and triggers its reminder, as the job does."""
        config = scheduling_config()
        scheduler = SqliteScheduler(self.assistant.scheduler_db, config)
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
        slot = scheduler.find_slots(
            "dry_needling", tomorrow, tomorrow + timedelta(days=30), 1
        )[0]
        booking = scheduler.book(
            slot,
            BookingPatient(REMINDED_NAME, self.phone.number),
            uuid.uuid4().hex,
            reminder_consent=True,
        )
        self.references["sms"] = booking.reference
        # The number is the test phone's, new each run: shown as "<PHONE>".
        self.own_number = display_phone(self.phone.number)
        api = RasaApi(
            f"http://127.0.0.1:{self.assistant.rasa_port}",
            self.assistant.servers.token,
        )
        api.trigger_intent(
            self.phone.number,
            REMINDER_INTENT,
            {"booking_reference": booking.reference},
            SMS_CHANNEL,
        )

    def two_hours_later(self, sender: str) -> None:
        with sqlite3.connect(self.assistant.tracker_db) as database:
            rows = database.execute(
                "SELECT sender_id, type_name, timestamp, intent_name, action_name,"
                " data FROM events WHERE sender_id = ? ORDER BY id",
                (sender,),
            ).fetchall()
            assert rows, "no conversation to come back to"
            # Copies first, then the originals out: the copies get new, higher ids,
            # which is how the server's cache sees that the conversation changed.
            last = database.execute("SELECT max(id) FROM events").fetchone()[0]
            for *columns, timestamp, intent, action, data in rows:
                event = json.loads(data)
                if event.get("timestamp") is not None:
                    event["timestamp"] -= LATER_SECONDS
                database.execute(
                    "INSERT INTO events (sender_id, type_name, timestamp,"
                    " intent_name, action_name, data) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        *columns,
                        None if timestamp is None else timestamp - LATER_SECONDS,
                        intent,
                        action,
                        json.dumps(event),
                    ),
                )
            database.execute(
                "DELETE FROM events WHERE sender_id = ? AND id <= ?", (sender, last)
            )

    def remember_reference(self, channel: str, text: str) -> None:
        match = REFERENCE.search(text)
        if match:
            self.references[channel] = match.group(2)

    def web(self, turn: Dict[str, Any], before: int) -> List[Dict[str, Any]]:
        """The replies to the patient's message (``before``: unused on the web)."""
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

    def sms(self, turn: Dict[str, Any], before: int) -> List[str]:
        """What the patient received since ``before`` (their message's answer)."""
        if "choose" in turn:
            assert self.phone.post(self.sms_choices[turn["choose"]]) == 200
        elif "patient" in turn:
            assert self.phone.post(self.typed(turn, "sms")) == 200
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
        if self.own_number:
            bodies = [body.replace(self.own_number, "<PHONE>") for body in bodies]
        return [normalise(body) for body in bodies]


def play(
    assistant: Assistant, twilio: FakeTwilioApi, flow: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """The flow's turns with what the assistant answers now."""
    patient = Patient(assistant, twilio)
    played: List[Dict[str, Any]] = [
        {key: turn[key] for key in ("before", "patient", "choose") if key in turn}
        for turn in flow["turns"]
    ]
    # The whole web conversation first, then the SMS one: interleaved, the two
    # would compete for the same open time.
    for channel, answer in (("web", patient.web), ("sms", patient.sms)):
        if channel not in flow.get("channels", CHANNELS):
            continue
        with scene(patient):
            for turn, record in zip(flow["turns"], played, strict=True):
                mine = for_channel(turn, channel)
                if mine is None:
                    continue
                before = patient.mark(channel)
                if "before" in mine:
                    patient.before(mine["before"], channel)
                try:
                    record[channel] = answer(mine, before)
                except (KeyError, StopIteration) as error:
                    so_far = yaml.dump(played, Dumper=_Dumper, width=10_000)
                    raise AssertionError(
                        f"cannot play {turn}; so far:\n{so_far}"
                    ) from error
    return played


@contextmanager
def scene(patient: Patient) -> Iterator[None]:
    """One channel's conversation; the scheduler is back at its end, always."""
    try:
        yield
    finally:
        patient.scheduler_back()


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
