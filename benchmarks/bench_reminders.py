"""1,000 bookings whose reminders fall due in the same hour: all reminded, once.

A fresh embedded scheduler (SQLite in a temporary directory, or PostgreSQL with
``--database-url``) gets 1,000 bookings with consent, all visits between 9:00 and
10:00 tomorrow (250 providers, 15-minute visits), so that their 24-hour reminders
are due between 9:00 and 10:00 today. Then, at 10:00 by a fixed clock, two reminder
job runners (processes, as on two machines) run one pass each at the same time.
They send as the real job does, over HTTP to Rasa's
``POST /conversations/{id}/trigger_intent``, here a loopback stand-in that answers
at once and counts the calls, so the figure is the job's own cost: listing,
claiming, checking and sending.

Prints how long until every reminder was sent, reminders per second, and checks
that each booking got exactly one (exit 1 if not).

Usage (make bench-reminders; well under a minute on SQLite)::

    .venv/bin/python benchmarks/bench_reminders.py [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, List, Tuple

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from clinic_common.clinic_config import ReminderConfig  # noqa: E402
from scheduling.base import Booking, Patient  # noqa: E402
from scheduling.config import SchedulingConfig, parse_scheduling_config  # noqa: E402
from scheduling.reminders import (  # noqa: E402
    ReminderSchedule,
    ReminderSettings,
    ReminderStore,
)
from scheduling.sqlite_backend import SqliteScheduler  # noqa: E402

BOOKINGS = 1000
PROVIDERS = 250  # x 4 quarter hours = 1,000 visits in one hour
RUNNERS = 2
# Monday 2 March 2026, 10:00 in Chicago: the reminders of tomorrow 9:00-10:00 are due.
NOW = datetime(2026, 3, 2, 16, 0, tzinfo=timezone.utc)


def bench_config() -> SchedulingConfig:
    """Tuesdays 9:00-10:00 only, 15-minute visits, 250 providers: 1,000 visits."""
    return parse_scheduling_config(
        {
            "timezone": "America/Chicago",
            "slot_minutes": 15,
            "opening_hours": {"tue": ["09:00-10:00"]},
            "visit_types": [{"key": "visit", "name": "Visit", "minutes": 15}],
            "providers": [f"provider-{n}" for n in range(PROVIDERS)],
            "booking_horizon_days": 7,
        },
        "benchmark",
    )


class FakeRasa(BaseHTTPRequestHandler):
    """Rasa's trigger_intent, answering 200 at once; counts the references."""

    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """Counts the booking the reminder names; answers as Rasa does."""
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.calls[body["entities"]["booking_reference"]] += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: a thousand requests."""


def book_all(location: str) -> List[str]:
    """The bookings, made a day before the reminders are due."""
    scheduler = SqliteScheduler(location, bench_config(), clock=lambda: NOW)
    start = NOW + timedelta(hours=23)  # Tuesday 9:00 in Chicago
    slots = [
        scheduler.slot_from_id(
            f"visit|provider-{n}|{start + timedelta(minutes=15 * q):%Y-%m-%dT%H:%M:%SZ}"
        )
        for q in range(4)
        for n in range(PROVIDERS)
    ]
    return [
        scheduler.book(
            slot,
            Patient(f"Patient {i}", f"+1817555{i:04d}"),
            f"bench-{i}",
            reminder_consent=True,
        ).reference
        for i, slot in enumerate(slots)
    ]


def runner(location: str, rasa_url: str, start: Any, done: Any) -> None:
    """One job runner's pass (its own process)."""

    def send(booking: Booking) -> bool:
        phone = urllib.parse.quote(booking.patient.phone, safe="")
        body = json.dumps(
            {
                "name": "EXTERNAL_appointment_reminder",
                "entities": {"booking_reference": booking.reference},
            }
        ).encode()
        request = urllib.request.Request(
            f"{rasa_url}/conversations/{phone}/trigger_intent?output_channel=twilio",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return bool(answer.status == 200)

    scheduler = SqliteScheduler(location, bench_config(), clock=lambda: NOW)
    settings = ReminderSettings(ReminderConfig(), bench_config(), "Benchmark Clinic")
    schedule = ReminderSchedule(
        scheduler,
        ReminderStore(location),
        send,
        lambda phone: True,
        settings,
        clock=lambda: NOW,
    )
    start.wait()
    result = schedule.run_once()
    done.put(result.sent)


def run(location: str) -> Tuple[float, List[int], Counter[str], List[str]]:
    """Books, starts the runners together; (seconds, sent each, calls, refs)."""
    references = book_all(location)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRasa)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    context = multiprocessing.get_context("fork")
    start, done = context.Barrier(RUNNERS + 1), context.Queue()
    processes = [
        context.Process(target=runner, args=(location, url, start, done))
        for _ in range(RUNNERS)
    ]
    for process in processes:
        process.start()
    start.wait()
    began = time.perf_counter()
    sent = [done.get(timeout=600) for _ in processes]
    elapsed = time.perf_counter() - began
    for process in processes:
        process.join(30)
    server.shutdown()
    return elapsed, sent, FakeRasa.calls, references


def main() -> int:
    """Runs the benchmark, prints its figures; 1 if a booking was not sent once."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        location = args.database_url or str(Path(folder) / "scheduler.db")
        elapsed, sent, calls, references = run(location)
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{BOOKINGS} reminders due in one hour, {RUNNERS} runners at once, {store}:")
    print(f"  all sent in {elapsed:.2f} s ({BOOKINGS / elapsed:.0f} reminders/s)")
    print(f"  sent by each runner: {', '.join(str(count) for count in sent)}")
    once = all(calls[reference] == 1 for reference in references)
    extra = sum(calls.values()) - len(references)
    print(f"  each booking reminded exactly once: {'yes' if once else 'NO'}")
    if not once or extra:
        print(f"  {extra} duplicate or stray sends", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
