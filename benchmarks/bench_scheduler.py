"""Throughput and latency of the embedded SQLite scheduler under contention.

Measures, each on a fresh database file in a temporary directory:

1. bookings per second with 1, 8 and 32 threads, each booking its own slots
   (writers only contend for SQLite's write lock);
2. bookings per second with 8 and 32 threads all racing for the same slots in
   the same order (every slot is booked exactly once; the rest are refused),
   checked for double bookings afterwards;
3. p50/p95 latency of ``find_slots`` (one day, limit 5) and ``book`` from one
   thread, with a thousand bookings already in the database.

Usage (takes well under a minute)::

    .venv/bin/python benchmarks/bench_scheduler.py

A script, not a test: it prints figures and always exits 0 unless it crashes or
finds a double booking (exit 1).
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, List, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from clinic_common.sqlite import BUSY_TIMEOUT_SECONDS  # noqa: E402
from scheduling.base import (  # noqa: E402
    BackendUnavailable,
    Patient,
    Slot,
    SlotUnavailable,
)
from scheduling.config import (  # noqa: E402
    WEEKDAYS,
    SchedulingConfig,
    parse_scheduling_config,
)
from scheduling.sqlite_backend import SqliteScheduler, slot_times  # noqa: E402

NOW = datetime(2026, 3, 1, 6, 0, tzinfo=timezone.utc)
DISTINCT_BOOKINGS = 960  # divisible by 1, 8 and 32
RACED_SLOTS = 200
LATENCY_CALLS = 300
PATIENT = Patient("Benchmark Patient", "+18175550100")


def bench_config() -> SchedulingConfig:
    """Open all day every day, 15-minute visits, four providers: many slots."""
    return parse_scheduling_config(
        {
            "timezone": "America/Chicago",
            "slot_minutes": 15,
            "opening_hours": {day: ["00:00-23:45"] for day in WEEKDAYS},
            "visit_types": [{"key": "visit", "name": "Visit", "minutes": 15}],
            "providers": ["p1", "p2", "p3", "p4"],
            "booking_horizon_days": 60,
        },
        "benchmark",
    )


def all_slots(scheduler: SqliteScheduler, count: int) -> List[Slot]:
    """``count`` distinct, non-overlapping slots, soonest first."""
    config = scheduler.config
    visit = config.visit_types[0]
    slots: List[Slot] = []
    day = date(2026, 3, 2)
    while len(slots) < count:
        for start, _ in slot_times(config, day, visit):
            stamp = start.strftime("%Y-%m-%dT%H:%M:%SZ")
            for provider in config.providers:
                slots.append(scheduler.slot_from_id(f"{visit.key}|{provider}|{stamp}"))
        day += timedelta(days=1)
    return slots[:count]


def new_scheduler(directory: Path, name: str) -> SqliteScheduler:
    """A scheduler on a fresh file, created before any timing starts."""
    scheduler = SqliteScheduler(directory / f"{name}.db", bench_config(), lambda: NOW)
    scheduler.find_slots("visit", NOW, NOW + timedelta(days=1))
    return scheduler


def run_threads(count: int, work: Callable[[int], None]) -> float:
    """Runs ``work(index)`` in ``count`` threads started together; wall seconds."""
    barrier = threading.Barrier(count + 1)

    def target(index: int) -> None:
        barrier.wait()
        work(index)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def distinct(directory: Path, threads: int) -> str:
    """Each thread books its own slots."""
    scheduler = new_scheduler(directory, f"distinct-{threads}")
    slots = all_slots(scheduler, DISTINCT_BOOKINGS)
    share = DISTINCT_BOOKINGS // threads

    timed_out = [0] * threads

    def work(index: int) -> None:
        for number, slot in enumerate(slots[index * share : (index + 1) * share]):
            try:
                scheduler.book(slot, PATIENT, f"t{index}-{number}")
            except BackendUnavailable:  # waited longer than the busy timeout
                timed_out[index] += 1

    seconds = run_threads(threads, work)
    booked = count_bookings(scheduler.path)
    return (
        f"{threads:>3} threads, distinct slots: {booked / seconds:8.0f} bookings/s"
        f"  ({booked} in {seconds:.2f} s, {sum(timed_out)} timed out)"
    )


def racing(directory: Path, threads: int) -> str:
    """All threads try to book the same slots, in the same order."""
    scheduler = new_scheduler(directory, f"racing-{threads}")
    slots = all_slots(scheduler, RACED_SLOTS)
    refused = [0] * threads
    timed_out = [0] * threads

    def work(index: int) -> None:
        for number, slot in enumerate(slots):
            try:
                scheduler.book(slot, PATIENT, f"t{index}-{number}")
            except SlotUnavailable:
                refused[index] += 1
            except BackendUnavailable:  # waited longer than the busy timeout
                timed_out[index] += 1

    seconds = run_threads(threads, work)
    booked = count_bookings(scheduler.path)
    attempts = threads * RACED_SLOTS
    if booked > RACED_SLOTS:
        raise SystemExit(f"double booking: {booked} bookings of {RACED_SLOTS} slots")
    return (
        f"{threads:>3} threads, same slots:     {booked / seconds:8.0f} bookings/s"
        f"  ({attempts / seconds:.0f} attempts/s, {sum(refused)} refused, "
        f"{sum(timed_out)} timed out, 0 double bookings)"
    )


def latencies(directory: Path) -> List[str]:
    """p50/p95 of find_slots and book from one thread, 1000 bookings present."""
    scheduler = new_scheduler(directory, "latency")
    slots = all_slots(scheduler, 1000 + LATENCY_CALLS)
    for number, slot in enumerate(slots[:1000]):
        scheduler.book(slot, PATIENT, f"fill-{number}")
    find = measure(
        lambda i: scheduler.find_slots(
            "visit", NOW + timedelta(hours=i % 48), NOW + timedelta(days=1 + i % 48)
        )
    )
    book = measure(
        lambda i: scheduler.book(slots[1000 + i], PATIENT, f"latency-{i}"),
    )
    return [summary("find_slots", find), summary("book", book)]


def measure(call: Callable[[int], object]) -> List[float]:
    """Milliseconds of ``LATENCY_CALLS`` calls of ``call(i)``."""
    times: List[float] = []
    for index in range(LATENCY_CALLS):
        started = time.perf_counter()
        call(index)
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(name: str, millis: Sequence[float]) -> str:
    """``name: p50 x ms, p95 y ms``."""
    cuts = statistics.quantiles(millis, n=100)
    return f"{name:>10}: p50 {cuts[49]:6.2f} ms   p95 {cuts[94]:6.2f} ms"


def count_bookings(path: Path) -> int:
    """Active bookings in the file, counted with plain SQL (not the scheduler)."""
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT count(*), count(DISTINCT provider || start_utc) FROM bookings"
            " WHERE status = 'booked'"
        ).fetchone()
    finally:
        connection.close()
    if rows[0] != rows[1]:
        raise SystemExit("double booking found")
    return int(rows[0])


def main() -> int:
    """Runs every measurement and prints the figures."""
    print(
        f"Embedded scheduler: SQLite {sqlite3.sqlite_version}, WAL, "
        f"busy timeout {BUSY_TIMEOUT_SECONDS:.0f} s, a connection per call"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as name:
        directory = Path(name)
        for threads in (1, 8, 32):
            print(distinct(directory, threads))
        for threads in (8, 32):
            print(racing(directory, threads))
        for line in latencies(directory):
            print(line)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
