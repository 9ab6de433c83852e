"""Benchmark: the embedded profile against 1, 2 and 4 Rasa servers behind nginx.

``make bench-scale`` (or ``python benchmarks/bench_scale.py [--quick]``) measures, at
1, 10, 50 and 200 conversations at once: messages answered per second, the p50 and
p95 time from a patient's message to its reply, the errors, and at the end of each
level every process's memory (RSS of its process tree) and PostgreSQL's connections
to the assistant's database (pg_stat_activity), and the CPU time each process (tree)
spent per answered message during the level, the benchmark's own process (the
patients and the Twilio fake) included. Their sum is what one message costs the
machine: with ``os.cpu_count()`` cores, ``1000 * cores / total`` messages/s is the
most the profile could answer there, however the work were spread.

Both profiles are driven the same way, as patients reach the scaled one: SMS through
the Twilio webhook, signed, the replies captured by a loopback fake of Twilio's API
(``scripts.chaos.Patients``). A message's time runs until its reply is sent to that
fake. Each conversation has its own phone number, a new one every
``CONVERSATION_LENGTH`` messages (as in benchmarks/bench.py), and the per-sender rate
limits are off (``RATE_LIMIT_PER_SECOND=0``): the benchmark measures the servers, not
the limits. The messages are the held-out patient messages of the NLU evaluation.

- embedded: ``make run``'s servers (scripts/launcher.py: one Rasa server on SQLite and
  one action server), the webhook on the Rasa server's port;
- nginx-N: the scaled profile (scripts/run_scaled.py) with N Rasa servers and
  ``--action-servers`` action servers, PostgreSQL and Redis, through nginx.

Each profile starts in its own temporary state folder. It prints a markdown table and
writes the figures as JSON to ``$STATE_DIR/bench_scale.json`` (or ``--json``). Other
work on the same machine changes the figures: say so when quoting them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.bench import (  # noqa: E402
    CONVERSATION_LENGTH,
    conversation_scripts,
    percentile,
    sample_memory,
)
from clinic_common import settings  # noqa: E402
from scripts.chaos import (  # noqa: E402
    Patients,
    Reply,
    heldout_texts,
    new_phone,
    profile_environment,
    scaled_profile,
)
from scripts.faults import ACCOUNT_SID, AUTH_TOKEN  # noqa: E402
from scripts.launcher import Servers, process_stats, session_pids  # noqa: E402
from scripts.run_scaled import DATABASE  # noqa: E402
from tests.fakes.twilio_api import FakeTwilioApi  # noqa: E402

# (conversations at once, messages) of each level, and a level's time limit.
Plan = Tuple[Tuple[int, int], ...]
FULL_LEVELS: Plan = ((1, 60), (10, 200), (50, 500), (200, 1000))
QUICK_LEVELS: Plan = ((1, 10), (10, 40))
FULL_CAP_S = 120.0
QUICK_CAP_S = 40.0
WARM_UP = 3  # messages per Rasa server before the levels (the first ones are slow)
PROFILES = ("embedded", "nginx-1", "nginx-2", "nginx-4")


@dataclass
class Level:
    """One profile at one level of concurrency."""

    profile: str
    conversations: int
    sent: int
    answered: int
    try_again: int
    errors: int  # refused, or no reply within scripts.chaos.REPLY_TIMEOUT
    wall_s: float
    messages_per_s: float
    p50_ms: Optional[float]
    p95_ms: Optional[float]
    rss_mb: Dict[str, float] = field(default_factory=dict)
    pg_connections: Optional[int] = None
    # CPU ms per answered message, per process tree and "bench" (this process).
    cpu_ms: Dict[str, float] = field(default_factory=dict)

    @property
    def cpu_ms_total(self) -> float:
        """What one answered message cost the machine, in CPU ms."""
        return round(sum(self.cpu_ms.values()), 1)

    @property
    def ceiling(self) -> float:
        """The most messages/s this machine's cores could answer at that cost."""
        total = self.cpu_ms_total
        return round(1000 * (os.cpu_count() or 1) / total, 1) if total else 0.0


@dataclass
class Running:
    """A started profile as the benchmark sees it."""

    webhook: str
    servers: int  # Rasa servers, to warm each up
    connections: Callable[[], Optional[int]]
    leaders: Callable[[], Dict[str, int]]  # each process's pid (its tree's leader)


async def conversation(
    patients: Patients, script: Sequence[str], deadline: float
) -> List[Reply]:
    """One patient's messages, each after the previous reply.

    A new number every ``CONVERSATION_LENGTH`` messages, as a patient's chat is
    that short: a long tracker would measure its replay, not a patient's wait.
    """
    replies: List[Reply] = []
    phone = new_phone()
    for index, text in enumerate(script):
        if time.monotonic() >= deadline:
            break
        if index and index % CONVERSATION_LENGTH == 0:
            phone = new_phone()
        replies.append(await patients.text(phone, text))
    return replies


async def run_level(
    patients: Patients,
    texts: List[str],
    level: Tuple[int, int],
    cap_s: float,
    name: str,
) -> Level:
    """``level``'s conversations at once until its messages are sent (or ``cap_s``)."""
    concurrency, total = level
    started = time.monotonic()
    done = await asyncio.gather(
        *(
            conversation(patients, script, started + cap_s)
            for script in conversation_scripts(texts, concurrency, total)
        )
    )
    wall = time.monotonic() - started
    replies = [reply for replies in done for reply in replies]
    answered = [r for r in replies if r.answered]
    latencies = [1000 * r.latency_s for r in answered if r.latency_s is not None]
    return Level(
        profile=name,
        conversations=concurrency,
        sent=len(replies),
        answered=len(answered),
        try_again=sum(r.try_again for r in replies),
        errors=sum(r.failed for r in replies),
        wall_s=round(wall, 1),
        messages_per_s=round(len(answered) / wall, 1),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
    )


async def measure(
    running: Running,
    twilio: FakeTwilioApi,
    levels: Sequence[Tuple[int, int]],
    cap_s: float,
    name: str,
) -> List[Level]:
    """Warms every server up, then runs the levels, figures taken after each."""
    texts = heldout_texts()
    results = []
    async with Patients(twilio, running.webhook) as patients:
        for index in range(WARM_UP * running.servers):
            await patients.text(new_phone(), texts[index % len(texts)])
        for level in levels:
            before = cpu_seconds(running.leaders())
            result = await run_level(patients, texts, level, cap_s, name)
            spent = cpu_seconds(running.leaders())
            answered = max(result.answered, 1)
            result.cpu_ms = {
                process: round(1000 * (used - before.get(process, 0.0)) / answered, 1)
                for process, used in spent.items()
            }
            result.rss_mb = {name: mb(pid) for name, pid in running.leaders().items()}
            result.pg_connections = running.connections()
            results.append(result)
            print(row(result), flush=True)
    return results


def cpu_seconds(leaders: Dict[str, int]) -> Dict[str, float]:
    """CPU seconds (user and system) each process tree has used so far.

    A tree's exited processes count through their parent's children times; "bench"
    is this process (the patients and the Twilio fake's thread).
    """
    tick = os.sysconf("SC_CLK_TCK")
    stats = process_stats()
    used: Dict[str, float] = {}
    for name, leader in leaders.items():
        tree = {leader, *session_pids(leader, stats), *descendants(leader, stats)}
        # After "pid (comm) ", fields 14-17 (utime, stime, cutime, cstime).
        ticks = (sum(int(v) for v in stats[pid][11:15]) for pid in tree if pid in stats)
        used[name] = sum(ticks) / tick
    own = os.times()
    used["bench"] = own.user + own.system
    return used


def descendants(leader: int, stats: Dict[int, List[str]]) -> List[int]:
    """``leader``'s children, their children, and so on.

    PostgreSQL's backends each start a session of their own: its session is not
    its tree.
    """
    children: Dict[int, List[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], list(children.get(leader, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def mb(pid: int) -> float:
    """The RSS of ``pid``'s process tree (its session), MB, rounded."""
    return round(sample_memory(pid).rss_mb, 1)


@contextlib.contextmanager
def embedded(twilio: FakeTwilioApi, state: Path) -> Iterator[Running]:
    """``make run``'s two servers; the webhook on the Rasa server's port."""
    env = profile_environment(twilio)
    with Servers(state, settings.load(env).model_path, env) as servers:
        yield Running(
            webhook=f"{servers.url}/webhooks/twilio/webhook",
            servers=1,
            connections=lambda: None,
            leaders=lambda: {"rasa": servers.rasa.pid, "actions": servers.actions.pid},
        )


@contextlib.contextmanager
def behind_nginx(
    twilio: FakeTwilioApi, state: Path, rasa_servers: int, action_servers: int
) -> Iterator[Running]:
    """The scaled profile; the webhook through nginx."""
    env = profile_environment(twilio)
    with scaled_profile(state, rasa_servers, action_servers, env) as profile:
        postgres = profile.postgres
        admin = sa.create_engine(postgres.url("postgres"))

        def leaders() -> Dict[str, int]:
            found = {p.log.stem: p.pid for p in profile.processes if p.alive()}
            leader = (postgres.data / "postmaster.pid").read_text().split()[0]
            return {**found, "postgres": int(leader)}

        def connections() -> int:
            with admin.connect() as connection:
                count = connection.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": DATABASE},
                ).scalar_one()
            return int(count)

        try:
            yield Running(
                webhook=f"{profile.url}/webhooks/twilio/webhook",
                servers=rasa_servers,
                connections=connections,
                leaders=leaders,
            )
        finally:
            admin.dispose()


def run_profile(
    name: str,
    twilio: FakeTwilioApi,
    levels: Sequence[Tuple[int, int]],
    cap_s: float,
    action_servers: int,
) -> List[Level]:
    """Starts profile ``name`` in a temporary folder, measures it, stops it."""
    state = Path(tempfile.mkdtemp(prefix=f"bench-scale-{name}-"))
    try:
        started = (
            embedded(twilio, state)
            if name == "embedded"
            else behind_nginx(twilio, state, int(name.split("-")[1]), action_servers)
        )
        with started as running:
            return asyncio.run(measure(running, twilio, levels, cap_s, name))
    finally:
        shutil.rmtree(state, ignore_errors=True)


def ms(value: Optional[float]) -> str:
    """Milliseconds for the table."""
    return "-" if value is None else f"{value:.0f}"


HEADER = (
    "| profile | conversations | sent | msgs/s | p50 ms | p95 ms | try again |"
    " errors | PG connections | RSS MB (per process) | CPU ms per message |"
    " ceiling msgs/s |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
)


def row(level: Level) -> str:
    """One line of the markdown table."""
    memory = ", ".join(f"{name} {rss:.0f}" for name, rss in level.rss_mb.items())
    connections = "-" if level.pg_connections is None else str(level.pg_connections)
    cpu = ", ".join(f"{name} {used:.0f}" for name, used in level.cpu_ms.items())
    return (
        f"| {level.profile} | {level.conversations} | {level.sent} |"
        f" {level.messages_per_s} | {ms(level.p50_ms)} | {ms(level.p95_ms)} |"
        f" {level.try_again} | {level.errors} | {connections} | {memory} |"
        f" {cpu}; total {level.cpu_ms_total:.0f} | {level.ceiling} |"
    )


def targets(results: Sequence[Level]) -> List[str]:
    """The issue's targets, each with whether it was met (when both were measured)."""
    found = {(r.profile, r.conversations): r for r in results}
    lines = []
    base, two = found.get(("embedded", 50)), found.get(("nginx-2", 50))
    if base and two:
        ratio = two.messages_per_s / base.messages_per_s if base.messages_per_s else 0
        lower = (two.p95_ms or 0) < (base.p95_ms or float("inf"))
        met = ratio >= 1.5 and lower
        lines.append(
            f"{'met' if met else 'NOT met'}: nginx-2 at 50 conversations"
            f" {ratio:.2f}x the embedded msgs/s (target 1.5x),"
            f" p95 {ms(two.p95_ms)} vs {ms(base.p95_ms)} ms"
        )
    at_200 = [r for r in results if r.conversations == 200]
    if at_200:
        bad = [
            f"{r.profile} {r.errors + r.try_again}"
            for r in at_200
            if r.sent != r.answered
        ]
        lines.append(
            f"{'NOT met' if bad else 'met'}: no errors at 200 conversations"
            + (f" ({', '.join(bad)})" if bad else "")
        )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark; exit status 1 if a target was not met."""
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_scale.py")
    parser.add_argument("--quick", action="store_true", help="1 and 10 at once, few")
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--levels", help="conversations at once, e.g. 1,10,50,200")
    parser.add_argument("--messages", type=int, help="per level (default by level)")
    parser.add_argument("--action-servers", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    plan: Plan = QUICK_LEVELS if args.quick else FULL_LEVELS
    if args.levels:
        wanted = [int(n) for n in args.levels.split(",")]
        known = dict(plan)
        plan = tuple((n, args.messages or known.get(n, 5 * n)) for n in wanted)
    elif args.messages:
        plan = tuple((n, args.messages) for n, _ in plan)
    names = [name for name in args.profiles.split(",") if name]
    if unknown := [name for name in names if name not in PROFILES]:
        parser.error(f"unknown profiles {unknown}; known: {', '.join(PROFILES)}")
    cap = QUICK_CAP_S if args.quick else FULL_CAP_S
    print(HEADER, flush=True)
    results: List[Level] = []
    with FakeTwilioApi(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        for name in names:
            results += run_profile(name, twilio, plan, cap, args.action_servers)
    verdicts = targets(results)
    print("\n".join(verdicts))
    out = args.json or settings.load().state_dir / "bench_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "levels": [
                    {**asdict(r), "cpu_ms_total": r.cpu_ms_total, "ceiling": r.ceiling}
                    for r in results
                ],
                "targets": verdicts,
            },
            indent=2,
        )
    )
    print(f"Figures: {out}")
    return 1 if any(v.startswith("NOT") for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
