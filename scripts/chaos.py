"""Fault drill of the scaled profile under load: ``make chaos``.

Starts the scaled profile (scripts/run_scaled.py: two Rasa servers, two action
servers behind nginx, PostgreSQL, Redis) in a temporary state folder, with the SMS
channel pointed at a loopback fake of Twilio's API (tests/fakes/twilio_api.py).
Patients text it through nginx's Twilio webhook (signed, each from its own number),
a few of them booking, while one fault at a time is made. As ``make run-scaled``
does, a part that stops is started again (``ScaledProfile.restart_stopped``, each
second); nothing else is done by hand:

- one Rasa server killed (kill -9), until it answers again;
- an action server killed (kill -9) while patients are in the middle of a booking;
- PostgreSQL restarted (``pg_ctl stop -m fast``, which cuts every connection, then
  ``start``);
- Redis stopped;
- the scheduler's bookings table locked for 10 s (PostgreSQL, ``STORE_DATABASE_URL``:
  ``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE``; SQLite: an exclusive transaction).

For each fault it prints the failed requests (a webhook refusal, or no reply within
``REPLY_TIMEOUT``), the "please try again" replies, the recovery time (from the fault
to the last message that was not answered normally) and whether the part answers
again by itself within ``RECOVERY_LIMIT``; then, for the whole drill: every patient
message got an answer or a clear "please try again"; no message the webhook
acknowledged is missing from the conversations in PostgreSQL (unless its patient was
asked to send it again); no booking is made twice, or half made (a reference told to
a patient and not booked, or booked and never told). Exit status 1 if a check failed.

The SMS load client here (:class:`Patients`) is also benchmarks/bench_scale.py's.

Usage: python -m scripts.chaos [--faults NAME,...] [--conversations N]
       [--bookings N] [--json PATH] (default $STATE_DIR/chaos.json)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import aiohttp
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from clinic_common import settings
from scripts.evaluate_nlu import load_examples
from scripts.faults import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, PUBLIC_URL
from scripts.launcher import (
    ACTION_PROBE,
    LOOPBACK,
    RASA_PROBE,
    Process,
    expand,
    free_port,
)
from scripts.run_scaled import DATABASE, DB_USER, Options, ScaledProfile
from tests.fakes.twilio_api import FakeTwilioApi

REPLY_TIMEOUT = 60.0  # seconds a patient waits for an answer before it counts as lost
POLL = 0.01  # seconds between two looks at the fake's messages
# What a patient is told when the message was not read: the SMS channel's failure
# note, the rate limit's and the lock store's "please resend".
TRY_AGAIN = ("try again", "send your message again", "resend")
QUESTIONS = (
    "what is in the injection?",
    "how long does the treatment take?",
    "is there parking?",
    "what are your opening hours?",
    "does it hurt?",
)
# A booking by typed answers (tests/transcripts/booking_typed.yml).
BOOKING = (
    "can I book a chiropractic appointment?",
    "next tuesday afternoon",
    "the first one",
    "{name}",
    "(817) 555 {number:04d}",
    "yes",
    "no thanks",  # no text reminder
)
NAMES = ("Oluwaseun Adeyemi", "Maria Lopez", "Chen Wei", "Anna Berg")
WARM_UP = 4.0  # seconds of load before the fault: bookings in the middle
AFTER_FAULT = 15.0  # seconds of load after the fault was made (or undone)
RECOVERY_LIMIT = 60.0  # seconds a broken part has to come back by itself
PATIENCE = 2.0  # seconds a patient who got no answer waits before writing again
_numbers = itertools.count(1)
REFERENCE = re.compile(r"reference is ([A-Z0-9]+)")


def new_phone() -> str:
    """A patient's number never used before in this process (E.164)."""
    return f"+1682{next(_numbers):07d}"


def heldout_texts() -> List[str]:
    """The held-out patient messages, without one-word ones (SMS keywords: STOP)."""
    return [text for text, _ in load_examples() if len(text.split()) > 1]


# --- The SMS load client ---------------------------------------------------------


@dataclass
class Reply:
    """One message a patient sent and what came back."""

    phone: str
    text: str
    sent: float  # monotonic time of the post
    status: int = 0  # the webhook's HTTP status, 0 without an answer
    latency_s: Optional[float] = None  # until the first reply was sent to Twilio
    texts: List[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        """The webhook accepted the message (Twilio would not send it again)."""
        return self.status == 200

    @property
    def try_again(self) -> bool:
        """The patient was asked to send it again."""
        return any(marker in t.lower() for t in self.texts for marker in TRY_AGAIN)

    @property
    def answered(self) -> bool:
        """Acknowledged and answered, other than by "please try again"."""
        return self.acknowledged and bool(self.texts) and not self.try_again

    @property
    def failed(self) -> bool:
        """Neither an answer nor a "please try again": what a patient must never get."""
        return not self.texts


class Patients:
    """Patients texting a Twilio webhook; their replies read from the Twilio fake.

    Use as ``async with Patients(...) as patients``. Each patient has one message
    in flight: its reply is what the fake accepts for its number after the post.
    One task looks at the fake's messages every ``POLL`` s and wakes the patients
    who got one, so that hundreds of patients waiting cost nothing.
    """

    def __init__(self, twilio: FakeTwilioApi, webhook: str) -> None:
        self.twilio = twilio
        self.webhook = webhook
        self._inbox: Dict[str, List[Tuple[float, str]]] = {}
        self._arrived: Dict[str, asyncio.Event] = {}
        self._seen = 0
        self._watcher: Optional[asyncio.Task[None]] = None
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> Patients:
        """Opens the HTTP session (never through a proxy) and starts watching."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=REPLY_TIMEOUT),
            trust_env=False,
        )
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stops watching, closes the session."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self._session is not None:
            await self._session.close()

    async def _watch(self) -> None:
        while True:
            now = time.monotonic()
            messages = self.twilio.messages[self._seen :]
            self._seen += len(messages)
            for message in messages:
                self._inbox.setdefault(message.to, []).append((now, message.body))
                if message.to in self._arrived:
                    self._arrived[message.to].set()
            await asyncio.sleep(POLL)

    async def text(self, phone: str, text: str) -> Reply:
        """Posts ``text`` from ``phone`` as Twilio would; waits for the reply."""
        assert self._session is not None, "use Patients in 'async with'"
        form = {
            "MessageSid": "SM" + os.urandom(16).hex(),
            "From": phone,
            "To": FROM_NUMBER,
            "Body": text,
            "NumMedia": "0",
        }
        signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL, form)
        arrived = self._arrived.setdefault(phone, asyncio.Event())
        inbox = self._inbox.setdefault(phone, [])
        before = len(inbox)
        reply = Reply(phone, text, time.monotonic())
        try:
            async with self._session.post(
                self.webhook,
                data=urllib.parse.urlencode(form),
                headers={
                    "X-Twilio-Signature": signature,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            ) as answer:
                reply.status = answer.status
                await answer.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return reply
        if reply.status != 200:
            return reply
        deadline = reply.sent + REPLY_TIMEOUT
        while len(inbox) == before and time.monotonic() < deadline:
            arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
        if len(inbox) > before:
            reply.latency_s = inbox[before][0] - reply.sent
            reply.texts = [body for _, body in inbox[before:]]
        return reply


# --- The profile ------------------------------------------------------------------


def sms_settings(twilio: FakeTwilioApi) -> Dict[str, str]:
    """The SMS channel pointed at the fake; no per-sender limit (many patients)."""
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_MESSAGING_SERVICE_SID": "",
        "TWILIO_WEBHOOK_URL": PUBLIC_URL,
        "TWILIO_API_BASE": twilio.base_url,
        "RATE_LIMIT_PER_SECOND": "0",
    }


def profile_environment(twilio: FakeTwilioApi) -> Dict[str, str]:
    """This process's environment for a profile in its own state folder."""
    own = ("STATE_DIR", "TRACKER_DB", "SCHEDULER_DB", "CALLBACK_DB", "CHANNEL_DB")
    env = {k: v for k, v in os.environ.items() if k not in (*own, "ENDPOINTS")}
    return {**env, **sms_settings(twilio), "STAFF_PASSWORD": ""}


def scaled_profile(
    state: Path, rasa_servers: int, action_servers: int, env: Mapping[str, str]
) -> ScaledProfile:
    """The scaled profile (not started) on free loopback ports, model $MODEL_PATH."""
    port = free_port()
    options = Options(
        rasa_servers=rasa_servers,
        action_servers=action_servers,
        port=port,
        listen=LOOPBACK,
        public_url=f"http://{LOOPBACK}:{port}",
        staff_port=free_port(taken=(port,)),
    )
    return ScaledProfile(state, settings.load(env).model_path, options, env)


def postgres_engine(profile: ScaledProfile) -> sa.engine.Engine:
    """The assistant's database, as the assistant's role."""
    return sa.create_engine(
        profile.postgres.url(DATABASE, DB_USER, profile.env["POSTGRES_PASSWORD"])
    )


# --- The drill ----------------------------------------------------------------------


@dataclass
class FaultReport:
    """What one fault did to the patients."""

    fault: str
    sent: int = 0
    failed: int = 0  # refused by the webhook or not answered in time
    refused: int = 0  # of which the webhook's answer was not 200 (or none)
    try_again: int = 0
    recovery_s: float = 0.0  # from the fault to the last message not answered
    back_by_itself: bool = True
    note: str = ""


class Drill:
    """The running profile, its patients, and everything they sent."""

    def __init__(self, profile: ScaledProfile, twilio: FakeTwilioApi) -> None:
        self.profile = profile
        self.twilio = twilio
        self.replies: List[Reply] = []
        self.questions = heldout_texts()
        self._bookings = itertools.count(100)

    def process(self, log_name: str) -> Process:
        """The profile's process whose log is ``log_name`` (e.g. ``rasa-1``)."""
        return next(p for p in self.profile.processes if p.log.stem == log_name)

    def probe(self, log_name: str) -> str:
        """The URL that answers 200 when the server ``rasa-N`` or ``actions-N`` does."""
        kind, number = log_name.split("-")
        if kind == "rasa":
            port = self.profile.rasa_ports[int(number) - 1]
            return expand(RASA_PROBE, {"RASA_PORT": str(port)})
        port = self.profile.action_ports[int(number) - 1]
        return expand(ACTION_PROBE, {"ACTION_PORT": str(port)})

    async def _questions(self, patients: Patients, stop: asyncio.Event) -> None:
        """A patient asking question after question, a new number every 8."""
        phone = new_phone()
        for count in itertools.count():
            if stop.is_set():
                return
            if count and count % 8 == 0:
                phone = new_phone()
            question = self.questions[next(_numbers) % len(self.questions)]
            text = f"{question} ({count})"  # each message told apart in the tracker
            reply = await patients.text(phone, text)
            self.replies.append(reply)
            if reply.failed:  # as a patient would, not at once: no tight loop
                await asyncio.sleep(PATIENCE)

    async def _booking(self, patients: Patients) -> None:
        """A patient booking by typed answers, each after the previous reply."""
        number = next(self._bookings)
        phone = f"+1817555{number:04d}"
        for step in BOOKING:
            text = step.format(name=NAMES[number % len(NAMES)], number=number)
            self.replies.append(await patients.text(phone, text))

    async def under_load(
        self,
        report: FaultReport,
        fault: Callable[[], None],
        conversations: int,
        bookings: int,
    ) -> None:
        """Runs ``fault`` (in a thread) while patients text; fills ``report``."""
        first = len(self.replies)
        stop = asyncio.Event()
        webhook = f"{self.profile.url}/webhooks/twilio/webhook"
        async with Patients(self.twilio, webhook) as patients:
            talking = [
                asyncio.create_task(self._questions(patients, stop))
                for _ in range(conversations)
            ]
            booking = [
                asyncio.create_task(self._booking(patients)) for _ in range(bookings)
            ]
            await asyncio.sleep(WARM_UP)  # the bookings are under way
            began = time.monotonic()
            await asyncio.to_thread(fault)
            await asyncio.sleep(AFTER_FAULT)
            stop.set()
            await asyncio.gather(*booking, *talking)
        replies = self.replies[first:]
        report.sent = len(replies)
        report.failed = sum(r.failed for r in replies)
        report.refused = sum(not r.acknowledged for r in replies)
        report.try_again = sum(r.try_again for r in replies)
        report.recovery_s = max(
            [r.sent - began for r in replies if not r.answered] + [0.0]
        )


def kill_part(drill: Drill, log_name: str, report: FaultReport) -> Callable[[], None]:
    """One part killed (kill -9); the time until it answers again."""

    def fault() -> None:
        process = drill.process(log_name)
        probe = drill.probe(log_name)
        began = time.monotonic()
        process.kill()
        try:
            while process.popen.poll() is not None:  # until the supervision's start
                if time.monotonic() - began > RECOVERY_LIMIT:
                    raise RuntimeError("not started again")
                time.sleep(0.2)
            process.wait_ready(probe, RECOVERY_LIMIT)
        except RuntimeError as error:
            report.back_by_itself = False
            report.note = str(error).splitlines()[0]
            return
        report.note = f"answering again after {time.monotonic() - began:.1f} s"

    return fault


def restart_postgres(drill: Drill, report: FaultReport) -> Callable[[], None]:
    """PostgreSQL stopped (fast: clients cut off) and started again."""

    def fault() -> None:
        began = time.monotonic()
        drill.profile.postgres.stop()
        drill.profile.postgres.start()
        report.note = f"pg_ctl stop -m fast, start: {time.monotonic() - began:.1f} s"

    return fault


def stop_start_redis(drill: Drill, report: FaultReport) -> Callable[[], None]:
    """Redis stopped (SIGTERM); the profile's supervision starts it again."""

    def fault() -> None:
        began = time.monotonic()
        drill.process("redis").stop()
        deadline = began + RECOVERY_LIMIT
        while not drill.profile.redis.ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        report.back_by_itself = drill.profile.redis.ready()
        report.note = f"answering again after {time.monotonic() - began:.1f} s"

    return fault


def lock_scheduler(drill: Drill, report: FaultReport) -> Callable[[], None]:
    """The scheduler's bookings table locked for 10 s, in whichever store it is.

    The scheduler's store is ``STORE_DATABASE_URL`` when set (the scaled profile's
    PostgreSQL), else its SQLite file.
    """
    config = settings.load(drill.profile.env)

    def fault() -> None:
        if not config.store_database_url:
            with contextlib.closing(sqlite3.connect(config.scheduler_db)) as db:
                db.execute("BEGIN EXCLUSIVE")
                time.sleep(10)
                db.rollback()
            report.note = f"SQLite {config.scheduler_db.name}: BEGIN EXCLUSIVE"
            return
        engine = sa.create_engine(config.store_database_url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    sa.text("LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE")
                )
                time.sleep(10)
        finally:
            engine.dispose()
        report.note = "PostgreSQL: LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE"

    return fault


FAULTS: Dict[str, Callable[[Drill, FaultReport], Callable[[], None]]] = {
    "rasa-killed": lambda d, r: kill_part(d, "rasa-1", r),
    "action-server-killed": lambda d, r: kill_part(d, "actions-1", r),
    "postgres-restarted": restart_postgres,
    "redis-stopped": stop_start_redis,
    "scheduler-locked": lock_scheduler,
}


# --- The checks over the whole drill ---------------------------------------------


def stored_user_texts(profile: ScaledProfile) -> Dict[str, List[str]]:
    """Each sender's user messages in the tracker store (PostgreSQL)."""
    engine = postgres_engine(profile)
    stored: Dict[str, List[str]] = {}
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT sender_id, data FROM events WHERE type_name = 'user'")
            )
            for sender, data in rows:
                stored.setdefault(sender, []).append(json.loads(data).get("text"))
    finally:
        engine.dispose()
    return stored


def booked(profile: ScaledProfile) -> List[Tuple[str, str]]:
    """(reference, patient's phone) of every active booking, on either store."""
    config = settings.load(profile.env)
    query = "SELECT reference, patient_phone FROM bookings WHERE status = 'booked'"
    if not config.store_database_url:
        with contextlib.closing(sqlite3.connect(config.scheduler_db)) as db:
            return [(str(a), str(b)) for a, b in db.execute(query)]
    engine = sa.create_engine(config.store_database_url)
    try:
        with engine.connect() as connection:
            return [(str(a), str(b)) for a, b in connection.execute(sa.text(query))]
    finally:
        engine.dispose()


def checks(drill: Drill, booking_patients: int) -> Dict[str, str]:
    """The drill's overall checks: "" when one holds, else what went wrong."""
    replies = drill.replies
    failed = [r for r in replies if r.failed]
    stored = stored_user_texts(drill.profile)
    lost = [
        r
        for r in replies
        if r.acknowledged and not r.try_again and r.text not in stored.get(r.phone, [])
    ]
    told = {ref for r in replies for t in r.texts for ref in REFERENCE.findall(t)}
    bookings = booked(drill.profile)
    phones = [phone for _, phone in bookings]
    twice = sorted({p for p in phones if phones.count(p) > 1})
    references = {reference for reference, _ in bookings}
    results = {
        "every message answered or 'please try again'": f"{len(failed)} not"
        if failed
        else "",
        "nothing acknowledged lost (trackers in PostgreSQL)": f"{len(lost)} lost"
        if lost
        else "",
        "no booking made twice": f"{len(twice)} numbers booked twice" if twice else "",
        "no booking half made (told = booked)": ""
        if told == references
        else f"told {sorted(told - references)}, not told {sorted(references - told)}",
    }
    if booking_patients:  # else the two booking checks hold for want of bookings
        results["bookings were made during the faults"] = "" if bookings else "none"
    return results


def fault_table(reports: Sequence[FaultReport]) -> str:
    """The reports as a markdown table."""
    lines = [
        "| fault | messages | failed (refused) | 'try again' | recovery s |"
        " back by itself | note |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {r.fault} | {r.sent} | {r.failed} ({r.refused}) | {r.try_again} |"
        f" {r.recovery_s:.1f} |"
        f" {'yes' if r.back_by_itself else 'NO'} | {r.note} |"
        for r in reports
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def running_profile(
    twilio: FakeTwilioApi, rasa_servers: int, action_servers: int
) -> Iterator[ScaledProfile]:
    """A started scaled profile in a temporary state folder (removed afterwards).

    The folder is outside pytest's and is made readable to PostgreSQL and Redis,
    which run under their own accounts when this runs as root.
    """
    state = Path(tempfile.mkdtemp(prefix="chaos-"))
    done = threading.Event()
    try:
        with scaled_profile(
            state, rasa_servers, action_servers, profile_environment(twilio)
        ) as profile:
            supervision = threading.Thread(target=supervise, args=(profile, done))
            supervision.start()
            try:
                yield profile
            finally:
                done.set()
                supervision.join()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def supervise(profile: ScaledProfile, done: threading.Event) -> None:
    """What ``make run-scaled`` does while it runs: a stopped part is started again."""
    while not done.wait(1):
        profile.restart_stopped()


def run(names: Sequence[str], conversations: int, bookings: int, out: Path) -> int:
    """The drill: each fault in turn under load; the exit status.

    Prints the report and writes it as JSON to ``out``.
    """
    with (
        FakeTwilioApi(ACCOUNT_SID, AUTH_TOKEN) as twilio,
        running_profile(twilio, 2, 2) as profile,
    ):
        drill = Drill(profile, twilio)
        reports = []
        for name in names:
            report = FaultReport(name)
            print(f"{name} ...", flush=True)
            asyncio.run(
                drill.under_load(
                    report, FAULTS[name](drill, report), conversations, bookings
                )
            )
            reports.append(report)
        results = checks(drill, bookings)
        made = len(booked(profile))
    print(fault_table(reports))
    print(f"{made} bookings made, {len(drill.replies)} messages in all")
    for what, problem in results.items():
        print(
            f"{'FAIL' if problem else 'ok  '} {what}{': ' + problem if problem else ''}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"faults": [asdict(r) for r in reports], "checks": results}, indent=2
        )
    )
    everything_back = all(r.back_by_itself for r in reports)
    ok = everything_back and not any(results.values())
    return 0 if ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses the options and runs the drill."""
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--bookings", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = [name for name in args.faults.split(",") if name]
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    out = args.json or settings.load().state_dir / "chaos.json"
    return run(names, args.conversations, args.bookings, out)


if __name__ == "__main__":
    sys.exit(main())
