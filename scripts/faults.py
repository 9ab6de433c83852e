"""Fault drill: break each part of a running assistant and show what patients get.

``make faults`` starts the assistant as ``make run`` does (supervised, in a
temporary state directory, on free loopback ports, with a saved API token that
starts with "-"), with the SMS channel pointed at a loopback fake of Twilio's API
(tests/fakes/twilio_api.py). Then, one fault at a time, patients write to it on the
web (REST) and by SMS, and the drill prints for each fault what every patient got,
in order, and whether anything a patient typed was lost:

- the action server down (held down), before a first message and mid-form;
- the action server and the Rasa server killed (kill -9): how long until they are
  back, and the answers meanwhile;
- the conversations' database locked for 10 s: answered, and every message stored;
- the scheduler's database locked for 10 s, and unreadable: the call back is taken;
- Twilio answering 503 for 20 s, off the network for 30 s, or too slow: every SMS
  reply is delivered once it is back; a repeated MessageSid; a 3,000-character text;
- a name in Spanish and a bare phone number through a whole booking;
- finally, every log of every part is searched for the patients' details.

It ends with exit status 1 if any check failed. It takes about four minutes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from twilio.request_validator import RequestValidator

from scripts.launcher import Process, free_port
from tests.fakes.twilio_api import FakeTwilioApi

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("VENV") or ROOT / ".venv")
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fault-drill-token"
FROM_NUMBER = "+18175550000"
PUBLIC_URL = "https://sms.clinic.test/webhooks/twilio/webhook"

NAME = "Marisol Quintanilla"
PHONE = "8175550188"
RED_FLAGS = {
    "emergency (en)": "I have crushing chest pain and cannot breathe",
    "crisis (en)": "I want to kill myself",
    "emergency (es)": "tengo dolor de pecho y no puedo respirar",
    "crisis (es)": "me quiero morir",
}
FAQ = "what is in the injection?"
# Settings of the caller that would point the drill's stack elsewhere: everything of
# the drill's own lives in its state directory.
NOT_INHERITED = (
    "STAFF_PASSWORD",
    "RASA_API_TOKEN",
    "SCHEDULER_DB",
    "CALLBACK_DB",
    "CHANNEL_DB",
)
# Words of the guidance each red flag must get.
GUIDANCE = {"emergency": "911", "crisis": "988"}


@dataclass
class Check:
    """One line of the report."""

    fault: str
    what: str
    got: List[str]
    ok: bool
    lost: int = 0


@dataclass
class Drill:
    """The assistant under test and what the patients saw."""

    state: Path
    ports: Dict[str, int]
    twilio: FakeTwilioApi
    process: Optional[Process] = None
    checks: List[Check] = field(default_factory=list)
    secrets: List[str] = field(default_factory=list)

    # --- the stack -----------------------------------------------------------------

    def environment(self) -> Dict[str, str]:
        """``make run``'s environment for this drill."""
        env = {
            key: value for key, value in os.environ.items() if key not in NOT_INHERITED
        }
        env.update(
            STATE_DIR=str(self.state),
            TRACKER_DB=str(self.state / "tracker.db"),
            RASA_PORT=str(self.ports["rasa"]),
            ACTION_PORT=str(self.ports["action"]),
            ACTION_SERVER_URL=f"http://127.0.0.1:{self.ports['action']}/webhook",
            WEB_PORT=str(self.ports["web"]),
            HEALTH_PORT=str(self.ports["health"]),
            STAFF_PORT=str(self.ports["staff"]),
            RASA_TELEMETRY_ENABLED="false",
            SCHEDULER_BACKEND="sqlite",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM_NUMBER=FROM_NUMBER,
            TWILIO_MESSAGING_SERVICE_SID="",
            TWILIO_WEBHOOK_URL=PUBLIC_URL,
            TWILIO_API_BASE=self.twilio.base_url,
        )
        return env

    def start(self) -> float:
        """Starts ``scripts/run.sh``; returns the seconds until every part is up."""
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.state / "rasa_api_token").write_text("-Xq3" + "a" * 39 + "\n")
        began = time.monotonic()
        self.process = Process(
            ["bash", str(ROOT / "scripts" / "run.sh")],
            self.environment(),
            self.state / "make-run.out",
        ).start()
        self.wait_healthy(600)
        return time.monotonic() - began

    def stop(self) -> None:
        """Ctrl-C to the whole stack, as a person would."""
        if self.process is not None:
            self.process.stop(signal.SIGINT, grace=90)

    def health(self) -> Tuple[int, Dict[str, object]]:
        """The health endpoint's status and report."""
        url = f"http://127.0.0.1:{self.ports['health']}/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except OSError:
            return 0, {}

    def wait_healthy(self, timeout: float) -> float:
        """Seconds until the health endpoint says every part is up."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.process is not None and not self.process.alive():
                raise RuntimeError("make run ended; see make-run.out")
            if self.health()[0] == 200:
                return time.monotonic() - began
            time.sleep(0.5)
        raise RuntimeError(f"not healthy after {timeout} s")

    def supervisorctl(self, *args: str) -> str:
        """Runs supervisorctl against the drill's supervisord."""
        return subprocess.run(
            [str(VENV / "bin" / "supervisorctl")]
            + ["-c", str(self.state / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def pid(self, part: str) -> int:
        """The running pid of a part."""
        match = re.search(
            rf"^{part}\s+RUNNING\s+pid (\d+)", self.supervisorctl("status"), re.M
        )
        if not match:
            raise RuntimeError(f"{part} is not running")
        return int(match.group(1))

    # --- patients ----------------------------------------------------------------

    def _replies(self, sender: str, message: str) -> List[Dict[str, Any]]:
        """A web patient's message, posted to the REST channel; its replies."""
        self.secrets.append(message)
        body = json.dumps({"sender": sender, "message": message}).encode()
        url = f"http://127.0.0.1:{self.ports['rasa']}/webhooks/rest/webhook"
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            replies: List[Dict[str, Any]] = json.loads(answer.read())
        return replies

    def rest(self, sender: str, message: str) -> List[str]:
        """A web patient's message; the texts of the replies, in order."""
        try:
            return [str(reply.get("text")) for reply in self._replies(sender, message)]
        except OSError as error:
            return [f"<no answer: {error}>"]

    def buttons(self, sender: str, message: str) -> List[str]:
        """The payloads of the buttons a REST reply offers."""
        return [
            str(button["payload"])
            for reply in self._replies(sender, message)
            for button in reply.get("buttons") or []
        ]

    def sms(self, phone: str, text: str, sid: Optional[str] = None) -> int:
        """Posts a signed text as Twilio would; returns the webhook's status."""
        self.secrets.append(text)
        form = {
            "MessageSid": sid or "SM" + uuid.uuid4().hex,
            "From": phone,
            "To": FROM_NUMBER,
            "Body": text,
            "NumMedia": "0",
        }
        signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL, form)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['rasa']}/webhooks/twilio/webhook",
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def sms_say(self, phone: str, text: str, timeout: float = 60) -> List[str]:
        """Texts and waits for the one SMS that answers it."""
        before = len(self.twilio.sent_to(phone))
        status = self.sms(phone, text)
        if status != 200:
            return [f"<webhook answered {status}>"]
        bodies = self.twilio.wait_for_messages(phone, before + 1, timeout=timeout)
        return bodies[before:] or ["<no SMS>"]

    def check(
        self, fault: str, what: str, got: List[str], ok: bool, lost: int = 0
    ) -> None:
        """Records one line of the report and prints it at once."""
        self.checks.append(Check(fault, what, got, ok, lost))
        mark = "ok  " if ok and not lost else "FAIL"
        print(f"[{mark}] {fault}: {what}", flush=True)
        for text in got:  # an SMS is shown a paragraph a line
            for paragraph in text.split("\n\n"):
                print(f"         < {' / '.join(paragraph.splitlines())[:200]}")
        if lost:
            print(f"         lost: {lost}", flush=True)


def new_phone() -> str:
    """A phone number no other patient of the drill has."""
    return f"+1682555{uuid.uuid4().int % 10000:04d}"


def guidance_ok(label: str, texts: List[str]) -> bool:
    """Whether the last reply has the red flag's guidance, in the patient's tongue."""
    kind = label.split()[0]
    last = texts[-1] if texts else ""
    spanish = "(es)" in label
    in_spanish = any(word in last for word in ("Llame", "llame", "emergencia"))
    return GUIDANCE[kind] in last and (in_spanish if spanish else not in_spanish)


def to_time_question(drill: Drill, sender: str) -> None:
    """Book, dry needling: the patient is asked for a day and time."""
    drill.rest(sender, "I'd like to book an appointment")
    drill.rest(sender, "dry needling")


def to_readback(drill: Drill, sender: str) -> None:
    """All the way to "Shall I book it?"."""
    to_time_question(drill, sender)
    offers = drill.buttons(sender, "as soon as possible")
    drill.rest(sender, offers[0])
    drill.rest(sender, NAME)
    drill.rest(sender, PHONE)


# --- the faults -----------------------------------------------------------------------


def action_server_down(drill: Drill) -> None:
    """Red flags, FAQ and answers with the action server held down."""
    fault = "action server down"
    mid_form = {label: f"af-{uuid.uuid4().hex[:8]}" for label in RED_FLAGS}
    for sender in mid_form.values():
        to_time_question(drill, sender)
    faq_sender, answer_sender = (
        f"af-{uuid.uuid4().hex[:8]}",
        f"af-{uuid.uuid4().hex[:8]}",
    )
    to_time_question(drill, faq_sender)
    to_time_question(drill, answer_sender)
    sms_phones = {label: new_phone() for label in RED_FLAGS}
    for phone in sms_phones.values():
        drill.sms_say(phone, "I'd like to book an appointment")
        drill.sms_say(phone, "2")
    drill.supervisorctl("stop", "action_server")
    try:
        for label, text in RED_FLAGS.items():
            # (who, how they write, their id, mid-booking: the guidance alone)
            patients = (
                ("new web patient", drill.rest, f"new-{uuid.uuid4().hex[:8]}", False),
                ("web, mid-booking", drill.rest, mid_form[label], True),
                ("SMS, mid-booking", drill.sms_say, sms_phones[label], True),
                ("new SMS patient", drill.sms_say, new_phone(), False),
            )
            for who, say, sender, mid_booking in patients:
                got = say(sender, text)
                alone = len(got) == 1 or not mid_booking
                ok = alone and guidance_ok(label, got)
                drill.check(fault, f"{who}, {label}", got, ok)
        got = drill.rest(faq_sender, FAQ)
        drill.check(
            fault,
            "web, mid-booking, an FAQ question",
            got,
            len(got) == 2 and "anesthetic" in got[0] and "unavailable" in got[1],
        )
        got = drill.rest(answer_sender, "tomorrow at 10am")
        drill.check(
            fault,
            "web, mid-booking, an answer",
            got,
            len(got) == 1 and "unavailable" in got[0],
        )
        got = drill.rest(
            f"new-{uuid.uuid4().hex[:8]}", "I'd like to book an appointment"
        )
        drill.check(
            fault,
            "new web patient, book",
            got,
            len(got) == 2 and "unavailable" in got[1],
        )
    finally:
        drill.supervisorctl("start", "action_server")


def killed(drill: Drill, part: str) -> None:
    """Kills a part (-9): time until healthy again; what a patient got meanwhile."""
    fault = f"{part} killed (kill -9)"
    pid = drill.pid(part)
    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    got = (
        drill.rest(f"kill-{uuid.uuid4().hex[:8]}", FAQ)
        if part == "action_server"
        else []
    )
    drill.wait_healthy(240)
    new_pid = drill.pid(part)
    drill.check(
        fault,
        f"restarted by the supervisor (pid {pid} -> {new_pid}) in "
        f"{time.monotonic() - began:.1f} s",
        [],
        new_pid != pid,
    )
    if got:
        drill.check(
            fault,
            "a web patient's FAQ question meanwhile",
            got,
            any("anesthetic" in text for text in got),
        )


def scheduler_locked(drill: Drill, mode: str) -> None:
    """A patient confirms a booking while the scheduler's database is in trouble."""
    fault = f"scheduler database {mode}"
    sender = f"sch-{uuid.uuid4().hex[:8]}"
    to_readback(drill, sender)
    database = drill.state / "scheduler.db"
    before = callbacks(drill)
    release: Callable[[], None]
    if mode == "locked for 10 s":
        locker = sqlite3.connect(database, timeout=30, check_same_thread=False)
        locker.execute("BEGIN EXCLUSIVE")
        timer = threading.Timer(10, locker.rollback)
        timer.start()

        def release() -> None:
            timer.join()
            locker.close()
    else:
        moved = database.with_name("scheduler.db.drill")
        database.rename(moved)
        database.write_bytes(b"not a database " * 64)

        def release() -> None:
            database.unlink()
            moved.rename(database)

    try:
        got = drill.rest(sender, "yes")  # then: may we text a reminder?
        got += drill.rest(sender, "no thanks")  # the booking is tried now
        got += drill.rest(sender, "yes")  # "Yes, call me back"
        got += drill.rest(sender, NAME) if "full name" in got[-1] else []
        got += drill.rest(sender, PHONE) if "mobile number" in got[-1] else []
    finally:
        release()
    stored = callbacks(drill) - before
    drill.check(
        fault,
        "confirm the booking, then accept a call back",
        got,
        "call you back" in got[-1],
        lost=1 - stored,
    )


def tracker_locked(drill: Drill) -> None:
    """Patients write while the conversations' database is locked for 10 s."""
    fault = "tracker database locked for 10 s"
    sender = f"tl-{uuid.uuid4().hex[:8]}"
    drill.rest(sender, "hello")
    locker = sqlite3.connect(drill.state / "tracker.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    began = time.monotonic()
    try:
        emergency = drill.rest(sender, RED_FLAGS["emergency (en)"])
        faq = drill.rest(sender, FAQ)
    finally:
        time.sleep(max(0.0, 10 - (time.monotonic() - began)))
        locker.execute("ROLLBACK")
        locker.close()
    drill.check(fault, "a red flag", emergency, guidance_ok("emergency", emergency))
    drill.check(fault, "an FAQ question", faq, any("anesthetic" in t for t in faq))
    drill.rest(sender, "thanks")  # the next turn writes the kept ones too
    with sqlite3.connect(drill.state / "tracker.db") as connection:
        said = [
            json.loads(data).get("text")
            for (data,) in connection.execute(
                "SELECT data FROM events WHERE sender_id = ? AND type_name = 'user'"
                " ORDER BY id",
                (sender,),
            )
        ]
    wanted = ["hello", RED_FLAGS["emergency (en)"], FAQ, "thanks"]
    lost = len([text for text in wanted if text not in said])
    drill.check(
        fault, "every message stored once the lock is gone", [], said == wanted, lost
    )


def callbacks(drill: Drill) -> int:
    """How many call-back requests staff can see."""
    result = subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "staff", "callbacks"],
        cwd=ROOT,
        env=drill.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return len(
        [line for line in result.stdout.splitlines() if re.match(r"^\s*\d+\s", line)]
    )


def twilio_fault(
    drill: Drill, what: str, start: Callable[[], None], lasts: float
) -> None:
    """Patients text while Twilio's API fails; every reply must arrive afterwards."""
    fault = f"Twilio {what}"
    phones = [new_phone() for _ in range(3)]
    start()
    for phone in phones:
        drill.sms(phone, "why do muscles spasm like that")
    time.sleep(lasts)
    delivered = {
        phone: drill.twilio.wait_for_messages(phone, 1, timeout=240) for phone in phones
    }
    got = [bodies[0] if bodies else "<nothing>" for bodies in delivered.values()]
    lost = sum(1 for bodies in delivered.values() if not bodies)
    drill.check(fault, f"{len(phones)} patients text during it", got, lost == 0, lost)


def sms_edges(drill: Drill) -> None:
    """A repeated MessageSid and a 3,000-character text."""
    phone = new_phone()
    sid = "SM" + uuid.uuid4().hex
    drill.sms(phone, "what is dry needling", sid)
    drill.sms(phone, "what is dry needling", sid)
    time.sleep(5)
    got = drill.twilio.sent_to(phone)
    drill.check("Twilio posts a MessageSid twice", "answered once", got, len(got) == 1)
    phone = new_phone()
    # A patient's long story: the question first, as the first 1,000 characters
    # are what the assistant reads (like every channel).
    story = "My lower back has tightened into a hard knot every evening for weeks. "
    long_text = ("What is a back spasm? " + story * 60)[:3000]
    got = drill.sms_say(phone, long_text)
    drill.check(
        "a 3,000-character text",
        "answered with the back-spasm answer",
        got,
        bool(got) and "knot" in got[-1] and "contract and tighten" in got[-1],
    )


def names_and_numbers(drill: Drill) -> None:
    """A Spanish name and a bare phone number through a whole booking."""
    sender = f"nm-{uuid.uuid4().hex[:8]}"
    to_readback(drill, sender)
    drill.rest(sender, "yes")  # then: may we text a reminder?
    got = drill.rest(sender, "no reminder")
    drill.check(
        "names and numbers",
        f"{NAME}, {PHONE}: booked",
        got,
        any("You're booked" in text for text in got),
    )


def logs_hold_no_patient_details(drill: Drill) -> None:
    """Every log of every part, searched for what patients typed and who they are."""
    details = {
        NAME,
        NAME.split()[1],
        PHONE,
        "817-555-0188",
        "(817) 555-0188",
        "+18175550188",
    }
    details |= {text for text in drill.secrets if len(text) > 12}
    details |= {
        phone
        for message in drill.twilio.messages
        for phone in (message.to, message.to[2:])
    }
    found: List[str] = []
    for path in sorted((drill.state / "logs").glob("*.log*")) + [
        drill.state / "make-run.out"
    ]:
        text = path.read_text(encoding="utf-8", errors="replace").lower()
        found += [f"{path.name}: {d[:30]}" for d in details if d.lower() in text]
    drill.check(
        "all logs",
        f"searched for {len(details)} patient details",
        found,
        not found,
        lost=0,
    )


def main() -> int:
    """Runs the drill and prints the report."""
    with (
        tempfile.TemporaryDirectory(prefix="faults-") as tmp,
        FakeTwilioApi(ACCOUNT_SID, AUTH_TOKEN) as twilio,
    ):
        ports = {
            name: free_port() for name in ("rasa", "action", "web", "health", "staff")
        }
        drill = Drill(Path(tmp) / "state", ports, twilio)
        try:
            took = drill.start()
            out = (drill.state / "make-run.out").read_text(errors="replace")
            drill.check(
                "start-up",
                f"a saved token starting with '-': started in {took:.0f} s",
                [line for line in out.splitlines() if "token" in line.lower()][:1],
                "-Xq3" not in (drill.state / "rasa_api_token").read_text(),
            )
            action_server_down(drill)
            killed(drill, "action_server")
            killed(drill, "rasa_server")
            tracker_locked(drill)
            scheduler_locked(drill, "locked for 10 s")
            scheduler_locked(drill, "unreadable")
            twilio_fault(drill, "503 for 20 s", lambda: twilio.fail_for(20, 503), 20)
            twilio_fault(
                drill,
                "off the network for 30 s",
                lambda: twilio.refuse_connections_for(30),
                30,
            )
            twilio_fault(
                drill, "too slow (3 timeouts)", lambda: twilio.slow_next(3, 20), 0
            )
            sms_edges(drill)
            names_and_numbers(drill)
        finally:
            drill.stop()
        logs_hold_no_patient_details(drill)
    failed = [check for check in drill.checks if not check.ok or check.lost]
    print(f"\n{len(drill.checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
