"""Benchmark: other patients' answer times while one sender floods, limits off and on.

Starts the action server and the Rasa server (``$MODEL_PATH``) on free loopback
ports with a fresh state directory, twice: with ``RATE_LIMIT_PER_SECOND=0`` (the
channels' limits off) and with the default limits (channels/rate_limit.py). Each
time, one sender posts ``--rate`` messages a second over REST for ``--seconds``
(from a process of its own, as another machine would) while ``--patients`` other
patients converse (a question, its answer, a short pause, the next); with the
limits on, the same patients first converse without a flood, for comparison. It
prints, for each run: the other patients' answer times (p50, p95, max); how many
of the flood's messages its conversation holds when the run ends (the ones Rasa
read; with the limits the rest got the polite reply); how long its requests took
to be answered (p95), and how many were not answered within ``FLOOD_GRACE_S``.

Issue 13's target: with the limits, other patients' p95 stays under 1 s.

A script, not a test: ``make bench-flood`` or
``python benchmarks/bench_flood.py [--patients 10] [--rate 200] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.bench import (  # noqa: E402
    percentile,
    project_environment,
    wait_for_first_answer,
)
from scripts.launcher import Servers  # noqa: E402

QUESTIONS = (
    "what is dry needling",
    "how much does a trigger point injection cost",
    "where are you located",
    "what are your opening hours",
    "what causes back spasms",
)
FLOOD_TEXT = "what is dry needling"
FLOOD_SENDER = "bench-flood"
PAUSE_S = 0.5  # between a patient's answer and their next message
TIMEOUT_S = 300.0
FLOOD_GRACE_S = 30.0  # after the flood, how long its last answers are waited for
START_DELAY_S = 3.0  # the flood's process starts meanwhile; then both begin at once


@dataclass
class Run:
    """What one run measured."""

    patient_ms: List[float] = field(default_factory=list)
    flood_ms: List[float] = field(default_factory=list)
    flood_read: int = 0  # flood messages in the flood's conversation (Rasa read them)
    flood_unanswered: int = 0  # no answer (an error, or none within the grace)


async def post(
    session: aiohttp.ClientSession, url: str, sender: str, text: str
) -> List[Dict[str, object]]:
    """Posts one message over REST; the bot's messages (raises on an HTTP error)."""
    async with session.post(url, json={"sender": sender, "message": text}) as reply:
        reply.raise_for_status()
        messages: List[Dict[str, object]] = await reply.json()
        return messages


async def patient(
    session: aiohttp.ClientSession, url: str, sender: str, window: Tuple[float, float]
) -> List[float]:
    """Asks questions from ``window[0]`` until ``window[1]`` (``time.time()``).

    Returns each answer's time in ms.
    """
    await asyncio.sleep(max(0.0, window[0] - time.time()))
    answers_ms: List[float] = []
    questions = itertools.cycle(QUESTIONS)
    while time.time() < window[1]:
        started = time.perf_counter()
        await post(session, url, sender, next(questions))
        answers_ms.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(PAUSE_S)
    return answers_ms


async def flood_message(
    session: aiohttp.ClientSession, url: str, answers_ms: List[float]
) -> None:
    """One flood message; its answer's time in ms (none when it failed)."""
    started = time.perf_counter()
    try:
        await post(session, url, FLOOD_SENDER, FLOOD_TEXT)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return
    answers_ms.append((time.perf_counter() - started) * 1000)


async def send_flood(
    url: str, rate: float, window: Tuple[float, float]
) -> Tuple[List[float], int]:
    """``rate`` messages a second during ``window``: answers' times, unanswered."""
    answers_ms: List[float] = []
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks: List[asyncio.Task[None]] = []
        for n in range(int(rate * (window[1] - window[0]))):
            await asyncio.sleep(max(0.0, window[0] + n / rate - time.time()))
            tasks.append(asyncio.create_task(flood_message(session, url, answers_ms)))
        _, late = await asyncio.wait(tasks, timeout=FLOOD_GRACE_S)
        for task in late:
            task.cancel()
    return answers_ms, len(tasks) - len(answers_ms)


def flood(
    url: str, rate: float, window: Tuple[float, float]
) -> Tuple[List[float], int]:
    """``send_flood`` in the flood's own process."""
    return asyncio.run(send_flood(url, rate, window))


async def messages_in(
    session: aiohttp.ClientSession, servers: Servers, sender: str
) -> int:
    """How many user messages ``sender``'s conversation holds (Rasa's HTTP API)."""
    url = f"{servers.url}/conversations/{sender}/tracker"
    params = {"token": servers.token, "include_events": "ALL"}
    async with session.get(url, params=params) as reply:
        reply.raise_for_status()
        tracker = await reply.json()
    return sum(event.get("event") == "user" for event in tracker["events"])


async def measure(
    servers: Servers, patients: int, rate: float, seconds: float, tag: str
) -> Run:
    """``patients`` conversing for ``seconds`` while (if ``rate``) the flood runs."""
    url = servers.rest_url
    run = Run()
    start = time.time() + START_DELAY_S
    window = (start, start + seconds)
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        flooding = (
            loop.run_in_executor(pool, flood, url, rate, window) if rate else None
        )
        async with aiohttp.ClientSession(timeout=timeout) as session:
            talks = await asyncio.gather(
                *(
                    patient(session, url, f"bench-{tag}-{n}", window)
                    for n in range(patients)
                )
            )
            run.patient_ms = [ms for talk in talks for ms in talk]
            if flooding is not None:
                run.flood_ms, run.flood_unanswered = await flooding
                run.flood_read = await messages_in(session, servers, FLOOD_SENDER)
    return run


def row(label: str, run: Run, flood_total: int) -> str:
    """One line of the table."""

    def ms(values: List[float], pct: float) -> str:
        value = percentile(values, pct)
        return "-" if value is None else f"{value:.0f}"

    return (
        f"{label:<14} {len(run.patient_ms):>8} {ms(run.patient_ms, 50):>8}"
        f" {ms(run.patient_ms, 95):>8} {ms(run.patient_ms, 100):>8}"
        f" {run.flood_read:>6}/{flood_total:<6} {ms(run.flood_ms, 95):>9}"
        f" {run.flood_unanswered:>10}"
    )


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the flood with the limits off, then on; prints a table."""
    args = parse_args(argv)
    base = project_environment()
    model = Path(base["MODEL_PATH"])
    if not model.is_file():
        print(f"No model at {model}: run 'make train' first.", file=sys.stderr)
        return 1
    print(
        f"One sender posts {args.rate:.0f} messages/s for {args.seconds:.0f} s over"
        f" REST while {args.patients} other patients converse.\n"
        "limits         patients  p50 (ms)  p95 (ms)  max (ms)  flood read"
        "  flood p95  unanswered\n               messages   (other patients)"
        "                          (ms)\n"
    )
    flood_total = int(args.rate * args.seconds)
    for label, limit in (("off", {"RATE_LIMIT_PER_SECOND": "0"}), ("on", {})):
        env = {k: v for k, v in base.items() if not k.startswith("RATE_LIMIT_")}
        with tempfile.TemporaryDirectory(prefix="bench-flood-") as state:
            env.update(
                limit, SCHEDULER_BACKEND="sqlite", SCHEDULER_DB=f"{state}/scheduler.db"
            )
            with Servers(Path(state), model, env) as servers:
                wait_for_first_answer(servers.rasa, servers.rest_url)
                rates = (0.0, args.rate) if label == "on" else (args.rate,)
                for rate in rates:
                    tag = f"{label}-{rate:.0f}"
                    run = asyncio.run(
                        measure(servers, args.patients, rate, args.seconds, tag)
                    )
                    name = f"{label} (no flood)" if not rate else label
                    print(row(name, run, flood_total if rate else 0), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
