"""A patient's name and number are in the databases only, and gone after forget.

One patient books by REST and again by SMS (the fake Twilio API), with a name and a
number nobody else uses. Every file the system wrote outside its databases (the
state folder: logs, keys, spool files) is then searched for the name and the number
in any way people write it: nothing. ``clinicbot forget`` then removes the patient
from the databases too: after a WAL checkpoint, the database files' bytes hold
neither (deleted content is overwritten, ``secure_delete``).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Iterator, List

import pytest

from clinic_common import privacy
from staff import retention
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import Assistant
from tests.integration.test_booking import REFERENCE, finish_booking, start_booking
from tests.integration.test_sms import Phone, choices

pytestmark = pytest.mark.integration

NAME = "Quintessa Vandermolen"
E164 = "+16825550177"
WRITTEN = (
    E164,
    "16825550177",
    "6825550177",
    "(682) 555-0177",
    "682-555-0177",
    "682.555.0177",
    "682 555 0177",
    "555-0177",
)
# What the patient's details look like in any file: the name's words in any case,
# and the number in each format (in JSON, "+" may be written as \u002b).
NEEDLES = [word.lower().encode() for word in NAME.split()] + [
    text.encode() for text in WRITTEN
]
DATABASE = re.compile(r"\.db(-wal|-shm|-journal)?$")


def files(folder: Path, databases: bool) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and bool(DATABASE.search(path.name)) == databases:
            yield path


def hits(paths: Iterator[Path]) -> List[str]:
    found = []
    for path in paths:
        content = path.read_bytes().lower()
        found += [f"{path}: {n.decode()}" for n in NEEDLES if n.lower() in content]
    return found


@pytest.fixture
def patient_booked(assistant: Assistant, twilio_api: FakeTwilioApi) -> Assistant:
    """The patient booked once by REST and once by SMS."""
    offers = start_booking(assistant, "phi-web-1")
    finish_booking(assistant, "phi-web-1", offers[0]["payload"], NAME, WRITTEN[3])
    phone = Phone(assistant, twilio_api)
    phone.number = E164
    types = choices(phone.say("I'd like to book a visit"))
    phone.say(str(next(n for n, t in types.items() if t == "Dry needling")))
    phone.say("as soon as possible")
    phone.say("1")
    phone.say(NAME.lower())
    assert "(682) 555-0177" in phone.say(WRITTEN[4])
    assert REFERENCE.search(phone.say("1"))  # book it and text me a reminder
    return assistant


def test_no_patient_data_in_files_and_none_in_databases_after_forget(
    patient_booked: Assistant, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = Path(patient_booked.env["STATE_DIR"])
    assert not hits(files(state, databases=False))
    assert hits(files(state, databases=True))  # the search does find them

    for name, value in patient_booked.env.items():
        monkeypatch.setenv(name, value)
    privacy._key.cache_clear()  # the servers' log key, for the outbox's rows
    report = retention.forget(retention.Stores.from_env(), "(682) 555 0177")
    privacy._key.cache_clear()

    assert report.counts["conversations (tracker store)"] == 2
    assert report.counts["bookings (name and phone)"] == 2
    for path in files(state, databases=True):
        if path.suffix == ".db":
            with sqlite3.connect(path) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not hits(files(state, databases=True))
