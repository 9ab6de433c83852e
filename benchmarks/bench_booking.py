"""Benchmark: whole booking conversations over REST, one patient and many at once.

Starts the action server and the Rasa server (the trained ``models/clinic.tar.gz``)
on free loopback ports with a fresh state directory, so the embedded SQLite
scheduler starts empty, then runs booking conversations: "I'd like to book", a
visit-type button, "as soon as possible", one of the offered times, name, phone,
"yes", "no reminder". It prints, for 1 and for N concurrent patients: the time of a
whole conversation (p50/p95), the time of one turn (p50/p95), bookings per second, and
how many conversations did not end with a reference (e.g. a time taken by another
patient in the meantime, which the assistant then re-offers).

A script, not a test: ``make bench-booking`` or
``python benchmarks/bench_booking.py [--conversations 20] [--concurrency 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.bench import (  # noqa: E402
    percentile,
    project_environment,
    wait_for_first_answer,
)
from scripts.launcher import Servers  # noqa: E402

REFERENCE = re.compile(r"Your reference is ([A-Z0-9]+)")
MAX_PICKS = 6
PHONES = [f"+1817555{number:04d}" for number in range(100, 9999)]


@dataclass
class Conversation:
    """What one simulated patient saw."""

    turns_ms: List[float] = field(default_factory=list)
    total_ms: float = 0.0
    reference: Optional[str] = None


async def say(
    session: aiohttp.ClientSession, url: str, sender: str, text: str, turns: List[float]
) -> List[Dict[str, Any]]:
    """Sends one message and returns the bot's messages."""
    started = time.perf_counter()
    async with session.post(url, json={"sender": sender, "message": text}) as reply:
        reply.raise_for_status()
        messages: List[Dict[str, Any]] = await reply.json(content_type=None)
    turns.append((time.perf_counter() - started) * 1000)
    return messages


def joined(messages: List[Dict[str, Any]]) -> str:
    """The text of the bot's messages."""
    return " ".join(str(m.get("text", "")) for m in messages)


def pick_payload(
    messages: List[Dict[str, Any]], chooser: random.Random
) -> Optional[str]:
    """The payload of one of the offered buttons: patients do not all take the first."""
    payloads = [
        str(button["payload"])
        for message in messages
        for button in message.get("buttons") or []
    ]
    return chooser.choice(payloads) if payloads else None


async def book_once(
    session: aiohttp.ClientSession, url: str, sender: str, phone: str, seed: int
) -> Conversation:
    """One whole booking conversation."""
    chooser = random.Random(seed)
    result = Conversation()
    started = time.perf_counter()
    turns = result.turns_ms
    await say(session, url, sender, "I'd like to book an appointment", turns)
    await say(session, url, sender, '/inform{"visit_type": "dry_needling"}', turns)
    offered = await say(session, url, sender, "as soon as possible", turns)
    choice = pick_payload(offered, chooser)
    picks = 0
    while choice is not None and picks < MAX_PICKS:
        picks += 1
        picked = await say(session, url, sender, choice, turns)
        # Another patient may hold or book it first: the assistant offers the next
        # times, and the patient picks again, as a person would.
        taken = "just taken" in joined(picked)
        choice = pick_payload(picked, chooser) if taken else None
    if picks:
        await say(session, url, sender, "Maria Lopez", turns)
        await say(session, url, sender, phone, turns)
        await say(session, url, sender, "yes", turns)  # then: a text reminder?
        done = await say(session, url, sender, "no reminder", turns)
        match = REFERENCE.search(joined(done))
        result.reference = match.group(1) if match else None

    result.total_ms = (time.perf_counter() - started) * 1000
    return result


async def run_level(url: str, conversations: int, concurrency: int, tag: str) -> str:
    """Runs ``conversations`` bookings, ``concurrency`` at a time; returns a line."""
    semaphore = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async def one(index: int, session: aiohttp.ClientSession) -> Conversation:
        async with semaphore:
            return await book_once(
                session,
                url,
                f"bench-{tag}-{index}",
                PHONES[index % len(PHONES)],
                seed=index,
            )

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        results = await asyncio.gather(*(one(i, session) for i in range(conversations)))
    elapsed = time.perf_counter() - started
    totals = [r.total_ms for r in results]
    turns = [t for r in results for t in r.turns_ms]
    booked = sum(r.reference is not None for r in results)
    return (
        f"{concurrency:>4} {conversations:>6} "
        f"{percentile(totals, 50) or 0:>9.0f} {percentile(totals, 95) or 0:>9.0f} "
        f"{percentile(turns, 50) or 0:>8.1f} {percentile(turns, 95) or 0:>8.1f} "
        f"{booked / elapsed:>10.2f} {conversations - booked:>10}"
    )


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=10)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Starts both servers, runs the two load levels, prints a table."""
    args = parse_args(argv)
    env = project_environment()
    model = Path(env["MODEL_PATH"])
    if not model.is_file():
        print(f"No model at {model}: run 'make train' first.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-booking-") as state:
        env.update(SCHEDULER_BACKEND="sqlite", SCHEDULER_DB=f"{state}/scheduler.db")
        with Servers(Path(state), model, env, ports=(5105, 5155)) as servers:
            url = servers.rest_url
            wait_for_first_answer(servers.rasa, url)
            print(
                "conc  convs  conv p50  conv p95  turn p50 turn p95"
                "  booked/s  no booking"
                "\n                   (ms)      (ms)      (ms)     (ms)"
            )
            for concurrency, tag in ((1, "single"), (args.concurrency, "many")):
                count = args.conversations if concurrency > 1 else 10
                print(asyncio.run(run_level(url, count, concurrency, tag)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
