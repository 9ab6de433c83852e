"""Benchmarks the clinic assistant's configuration against Rasa's stock configuration.

Both configurations are trained on the same data (``data/`` + ``domain.yml``):

* ``project``: ``config.yml``, the clinic assistant's pipeline and policies;
* ``stock``: ``benchmarks/config_stock.yml``, what ``rasa init`` trains with.

For each one, in the same run, the script measures:

1. training wall time and peak memory (summed RSS of the training process tree,
   sampled every 0.2 s), with a fresh, empty Rasa cache so nothing is reused;
2. accuracy on the held-out NLU examples (``tests/nlu_heldout/heldout.yml``, never
   used in training), parsed by the trained model in a separate process per model;
3. the time from spawning ``rasa run`` until its first non-empty REST reply, and the
   Rasa server's resident memory after warm-up and during the load tests;
4. end-to-end REST latency (p50, p95), throughput and errors with 1, 10 and 50
   concurrent conversations.

It prints a section per configuration, a "project vs stock" comparison and the
project's targets (informational). Everything runs on 127.0.0.1 on ports other than
the dev server's 5005/5055, inside a temporary directory removed at the end; every
process started is stopped, even on error or Ctrl-C.

Usage (the venv's Python; the environment defaults come from ``scripts/env.sh``)::

    .venv/bin/python benchmarks/bench.py [--quick] [--skip-stock] [--json PATH]

The exit code is 0 when every measurement ran, whether or not the targets are met,
and 1 when a configuration could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    List,
    NoReturn,
    Optional,
    Sequence,
    Tuple,
)

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

# One definition of the held-out metric, shared with make test and the tuning.
from scripts.evaluate_nlu import HELDOUT, load_examples, predicted_label  # noqa: E402
from scripts.launcher import LOOPBACK, Process, Servers, session_pids  # noqa: E402

if TYPE_CHECKING:  # importing it for real loads TensorFlow; see write_predictions
    from rasa.core.agent import Agent

ENV_SCRIPT = PROJECT_ROOT / "scripts" / "env.sh"

FALLBACK_INTENT = "nlu_fallback"

TRAIN_TIMEOUT_S = 1800.0
EVALUATION_TIMEOUT_S = 900.0
FIRST_ANSWER_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
MEMORY_POLL_S = 0.2
ANSWER_POLL_S = 0.25
FIRST_MESSAGE = "hello"
MAX_TEXT_WIDTH = 80  # longer held-out texts are cut in the printed report
CONVERSATION_LENGTH = 8  # messages per simulated conversation (a typical patient chat)


class BenchmarkError(Exception):
    """A measurement could not be taken (a process failed or timed out)."""


# What makes one configuration's measurement fail without stopping the whole run.
MEASUREMENT_ERRORS = (
    BenchmarkError,
    OSError,
    subprocess.SubprocessError,
    aiohttp.ClientError,
)


@dataclass(frozen=True)
class ConfigSpec:
    """A configuration to benchmark and the ports its servers should use."""

    name: str
    config_path: Path
    rasa_port: int
    action_port: int


CONFIGS = (
    ConfigSpec("project", PROJECT_ROOT / "config.yml", 5105, 5155),
    ConfigSpec("stock", PROJECT_ROOT / "benchmarks" / "config_stock.yml", 5205, 5255),
)


@dataclass(frozen=True)
class LoadPlan:
    """How many messages to send at each concurrency level, within a time cap."""

    levels: Tuple[Tuple[int, int], ...]  # (concurrent conversations, messages)
    level_time_cap_s: float
    warmup_messages: int = 20


FULL_PLAN = LoadPlan(levels=((1, 200), (10, 400), (50, 1000)), level_time_cap_s=300.0)
QUICK_PLAN = LoadPlan(levels=((1, 60), (10, 100), (50, 200)), level_time_cap_s=120.0)


@dataclass(frozen=True)
class Target:
    """A goal from the issue for the project configuration."""

    label: str
    threshold: float
    unit: str
    at_least: bool  # True: the value must be >= threshold; False: <= threshold

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value >= self.threshold if self.at_least else value <= self.threshold


TARGET_ACCURACY = Target("held-out accuracy", 95.0, "%", at_least=True)
TARGET_TRAINING = Target("training time", 45.0, "s", at_least=False)
TARGET_FIRST_ANSWER = Target("start to first answer", 20.0, "s", at_least=False)
TARGET_P50 = Target("p50 latency, 1 user", 25.0, "ms", at_least=False)
TARGET_THROUGHPUT = Target("throughput (best level)", 40.0, "msg/s", at_least=True)
TARGET_RSS = Target("Rasa server resident memory", 1024.0, "MB", at_least=False)


# --------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """Training wall time and peak memory of one configuration."""

    seconds: float
    peak_rss_mb: float


@dataclass
class Prediction:
    """The model's answer for one held-out example."""

    text: str
    expected: str
    predicted: str
    intent_confidence: float
    selector_confidence: Optional[float]  # only for FAQ predictions


@dataclass
class LabelScore:
    """Held-out examples of one label and how many were classified correctly."""

    n: int = 0
    correct: int = 0


@dataclass
class Accuracy:
    """Held-out accuracy, overall and per label, with the misclassified examples."""

    total: int
    correct: int
    fallbacks: int
    accuracy_pct: float
    fallback_rate_pct: float
    wrong_answer_rate_pct: float  # answered, and wrong: what a patient may act on
    per_label: Dict[str, LabelScore]
    misclassified: List[Prediction]


@dataclass
class ConversationStats:
    """What happened to the messages of one simulated conversation."""

    latencies_ms: List[float] = field(default_factory=list)
    errors: int = 0
    empty_replies: int = 0
    unsent: int = 0


@dataclass
class LevelResult:
    """End-to-end REST figures at one concurrency level."""

    concurrency: int
    planned: int
    completed: int
    errors: int
    empty_replies: int
    unsent: int
    wall_s: float
    p50_ms: Optional[float]
    p95_ms: Optional[float]
    throughput_msg_s: float


@dataclass
class ServeResult:
    """Start-up time, memory and load-test figures of the running servers."""

    rasa_port: int
    action_port: int
    first_answer_s: float
    rss_after_warmup_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    action_server_rss_mb: float
    levels: List[LevelResult]


@dataclass
class ConfigResult:
    """Everything measured for one configuration (``error`` set if a step failed)."""

    name: str
    config_path: str
    config_sha256: str
    train: Optional[TrainResult] = None
    accuracy: Optional[Accuracy] = None
    serve: Optional[ServeResult] = None
    error: Optional[str] = None


# ------------------------------------------------------------- processes and memory


@dataclass(frozen=True)
class MemorySample:
    """Memory of a process tree: summed current RSS and the largest peak (VmHWM)."""

    rss_mb: float = 0.0
    hwm_mb: float = 0.0

    def peak(self, other: MemorySample) -> MemorySample:
        """The element-wise maximum of two samples."""
        return MemorySample(
            max(self.rss_mb, other.rss_mb), max(self.hwm_mb, other.hwm_mb)
        )


def _status_kb(pid: int, key: str) -> int:
    """A ``kB`` field (e.g. ``VmRSS``) of ``/proc/<pid>/status``; 0 if unavailable."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def sample_memory(leader: int) -> MemorySample:
    """The current memory of the process tree led by ``leader``, in MB."""
    pids = session_pids(leader)
    rss_kb = sum(_status_kb(pid, "VmRSS") for pid in pids)
    hwm_kb = max((_status_kb(pid, "VmHWM") for pid in pids), default=0)
    return MemorySample(rss_kb / 1024, hwm_kb / 1024)


def failure(proc: Process, what: str) -> BenchmarkError:
    """An error describing the failure, with the end of the process log."""
    return BenchmarkError(f"{what} (log {proc.log}):\n{proc.log_tail()}")


def project_environment() -> Dict[str, str]:
    """The environment set by ``scripts/env.sh``, as the project's scripts see it."""
    dump = subprocess.run(
        ["bash", "-c", f'source "{ENV_SCRIPT}" && env -0'],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in dump.split("\0") if "=" in item)
    # Whatever the caller's environment says: nothing leaves the machine.
    env.update(RASA_TELEMETRY_ENABLED="false", SANIC_HOST=LOOPBACK)
    return env


def rasa_executable(env: Dict[str, str]) -> str:
    """Path of the ``rasa`` command of the project's venv."""
    return str(Path(env["VENV"]) / "bin" / "rasa")


# ------------------------------------------------------------------------- training


def train_model(
    spec: ConfigSpec, env: Dict[str, str], workdir: Path
) -> Tuple[TrainResult, Path]:
    """Trains ``spec`` with a fresh cache; returns its figures and the model path."""
    out_dir = workdir / "models"
    cache_dir = workdir / "cache"
    out_dir.mkdir()
    cache_dir.mkdir()
    cmd = [
        rasa_executable(env), "train",
        "--config", str(spec.config_path),
        "--domain", "domain.yml",
        "--data", "data",
        "--out", str(out_dir),
        "--fixed-model-name", spec.name,
    ]  # fmt: skip
    train_env = {**env, "RASA_CACHE_DIRECTORY": str(cache_dir)}
    peak = MemorySample()
    with Process(cmd, train_env, workdir / "train.log") as proc:
        while True:
            peak = peak.peak(sample_memory(proc.pid))
            try:
                exit_code = proc.wait(timeout=MEMORY_POLL_S)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - proc.started > TRAIN_TIMEOUT_S:
                    raise failure(
                        proc, f"training took over {TRAIN_TIMEOUT_S:.0f} s"
                    ) from None
        seconds = time.monotonic() - proc.started
        model_path = out_dir / f"{spec.name}.tar.gz"
        if exit_code != 0 or not model_path.is_file():
            raise failure(proc, f"training failed with exit code {exit_code}")
    # The tree's summed RSS is sampled; no process can have peaked above its own VmHWM.
    return TrainResult(seconds, max(peak.rss_mb, peak.hwm_mb)), model_path


# ----------------------------------------------------------------- held-out accuracy


async def _predict_all(
    agent: Agent, examples: List[Tuple[str, str]]
) -> List[Prediction]:
    """Parses every held-out example with the loaded agent."""
    predictions = []
    for text, expected in examples:
        parse = await agent.parse_message(text)
        label, confidence, selector_confidence = predicted_label(parse)
        predictions.append(
            Prediction(text, expected, label, confidence, selector_confidence)
        )
    return predictions


def write_predictions(model_path: Path, out_path: Path) -> None:
    """Child-process mode: loads the model once and writes its held-out predictions."""
    # Imported here so that only the evaluation child pays for TensorFlow.
    from rasa.core.agent import Agent

    agent = Agent.load(str(model_path))
    predictions = asyncio.run(_predict_all(agent, load_examples(HELDOUT)))
    out_path.write_text(json.dumps([asdict(p) for p in predictions], indent=1))


def score(predictions: List[Prediction]) -> Accuracy:
    """Accuracy overall and per expected label; ``nlu_fallback`` is always wrong."""
    per_label: Dict[str, LabelScore] = {}
    for prediction in predictions:
        entry = per_label.setdefault(prediction.expected, LabelScore())
        entry.n += 1
        entry.correct += prediction.predicted == prediction.expected
    total = len(predictions)
    correct = sum(entry.correct for entry in per_label.values())
    fallbacks = sum(p.predicted == FALLBACK_INTENT for p in predictions)
    return Accuracy(
        total=total,
        correct=correct,
        fallbacks=fallbacks,
        accuracy_pct=100.0 * correct / total if total else 0.0,
        fallback_rate_pct=100.0 * fallbacks / total if total else 0.0,
        wrong_answer_rate_pct=(
            100.0 * (total - correct - fallbacks) / total if total else 0.0
        ),
        per_label=dict(sorted(per_label.items())),
        misclassified=[p for p in predictions if p.predicted != p.expected],
    )


def evaluate_model(model_path: Path, env: Dict[str, str], workdir: Path) -> Accuracy:
    """Scores the held-out set, parsing in a child process (own memory, own TF)."""
    out_path = workdir / "predictions.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--evaluate-model", str(model_path),
        "--evaluate-out", str(out_path),
    ]  # fmt: skip
    with Process(cmd, env, workdir / "evaluate.log") as proc:
        try:
            exit_code = proc.wait(timeout=EVALUATION_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise failure(
                proc, f"evaluation took over {EVALUATION_TIMEOUT_S:.0f} s"
            ) from None
        if exit_code != 0 or not out_path.is_file():
            raise failure(proc, f"evaluation failed with exit code {exit_code}")
    return score([Prediction(**item) for item in json.loads(out_path.read_text())])


# -------------------------------------------------------------------------- serving


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(url: str, payload: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
    """A blocking GET (or JSON POST) to loopback; returns (status, JSON body)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}
    )
    with _NO_PROXY_OPENER.open(request, timeout=REQUEST_TIMEOUT_S) as response:
        body = response.read()
        return response.status, json.loads(body) if body else None


def wait_for_first_answer(proc: Process, url: str) -> float:
    """Seconds from spawning the Rasa server until a REST message gets a reply."""
    payload = {"sender": "bench-first-answer", "message": FIRST_MESSAGE}
    while time.monotonic() - proc.started < FIRST_ANSWER_TIMEOUT_S:
        if not proc.alive():
            raise failure(proc, "the Rasa server exited")
        try:
            status, replies = _http(url, payload)
            if status == 200 and replies:
                return time.monotonic() - proc.started
        except (OSError, ValueError, http.client.HTTPException):
            pass  # not listening yet, or the model is still loading
        time.sleep(ANSWER_POLL_S)
    raise failure(proc, f"no answer within {FIRST_ANSWER_TIMEOUT_S:.0f} s")


async def post_message(
    session: aiohttp.ClientSession, url: str, sender: str, text: str
) -> Optional[Tuple[float, int]]:
    """Sends one message; returns (latency ms, bot messages), or None on error."""
    started = time.perf_counter()
    try:
        async with session.post(url, json={"sender": sender, "message": text}) as reply:
            if reply.status != 200:
                return None
            messages = await reply.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None
    latency_ms = (time.perf_counter() - started) * 1000
    return latency_ms, len(messages) if isinstance(messages, list) else 0


async def converse(
    session: aiohttp.ClientSession,
    url: str,
    sender: str,
    messages: List[str],
    deadline: float,
) -> ConversationStats:
    """One simulated patient: sends ``messages`` in order, each after the last reply.

    Every ``CONVERSATION_LENGTH`` messages the patient starts a new conversation (a new
    sender id), as real patients do: a tracker that grew to hundreds of events would
    measure the tracker store's replay cost, not a patient's wait.
    """
    stats = ConversationStats()
    for index, text in enumerate(messages):
        if time.monotonic() >= deadline:
            stats.unsent = len(messages) - index
            break
        conversation_sender = f"{sender}-{index // CONVERSATION_LENGTH}"
        outcome = await post_message(session, url, conversation_sender, text)
        if outcome is None:
            stats.errors += 1
            continue
        latency_ms, replies = outcome
        stats.latencies_ms.append(latency_ms)
        stats.empty_replies += replies == 0
    return stats


def conversation_scripts(
    texts: List[str], concurrency: int, total: int
) -> List[List[str]]:
    """Splits ``total`` messages over ``concurrency`` conversations, cycling ``texts``.

    Message ``j`` of the level (0-based) is ``texts[j % len(texts)]`` and belongs to
    conversation ``j % concurrency``.
    """
    return [
        [texts[j % len(texts)] for j in range(conversation, total, concurrency)]
        for conversation in range(concurrency)
    ]


def percentile(values: List[float], pct: float) -> Optional[float]:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100)
    return ordered[int(rank) - 1]


def summarise_level(
    concurrency: int, planned: int, wall_s: float, stats: List[ConversationStats]
) -> LevelResult:
    """Aggregates the conversations of one concurrency level."""
    latencies = [latency for s in stats for latency in s.latencies_ms]
    return LevelResult(
        concurrency=concurrency,
        planned=planned,
        completed=len(latencies),
        errors=sum(s.errors for s in stats),
        empty_replies=sum(s.empty_replies for s in stats),
        unsent=sum(s.unsent for s in stats),
        wall_s=wall_s,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        throughput_msg_s=len(latencies) / wall_s if wall_s > 0 else 0.0,
    )


async def run_level(
    session: aiohttp.ClientSession,
    url: str,
    texts: List[str],
    level: Tuple[int, int],
    time_cap_s: float,
    tag: str,
) -> LevelResult:
    """Runs ``concurrency`` conversations at once until ``total`` messages are sent."""
    concurrency, total = level
    scripts = conversation_scripts(texts, concurrency, total)
    started = time.monotonic()
    deadline = started + time_cap_s
    stats = await asyncio.gather(
        *(
            converse(session, url, f"{tag}-c{concurrency}-{index}", script, deadline)
            for index, script in enumerate(scripts)
        )
    )
    return summarise_level(concurrency, total, time.monotonic() - started, list(stats))


async def track_peak_rss(leader: int, done: asyncio.Event) -> float:
    """Samples the RSS of ``leader``'s process tree until ``done``; returns the peak."""
    peak = 0.0
    while not done.is_set():
        peak = max(peak, sample_memory(leader).rss_mb)
        try:
            await asyncio.wait_for(done.wait(), timeout=MEMORY_POLL_S)
        except asyncio.TimeoutError:
            continue
    return peak


@dataclass
class LoadFigures:
    """What ``exercise_server`` measured."""

    rss_after_warmup_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    levels: List[LevelResult]


async def exercise_server(
    url: str, texts: List[str], plan: LoadPlan, server_pid: int, tag: str
) -> LoadFigures:
    """Warms the server up, then runs every load level while watching its memory."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        warmup = [texts[i % len(texts)] for i in range(plan.warmup_messages)]
        deadline = time.monotonic() + plan.level_time_cap_s
        warm = await converse(session, url, f"{tag}-warmup", warmup, deadline)
        if not warm.latencies_ms:
            raise BenchmarkError("no warm-up message was answered")
        rss_after_warmup = sample_memory(server_pid).rss_mb
        done = asyncio.Event()
        monitor = asyncio.create_task(track_peak_rss(server_pid, done))
        try:
            levels = [
                await run_level(session, url, texts, level, plan.level_time_cap_s, tag)
                for level in plan.levels
            ]
        finally:
            done.set()
            peak = await monitor
    rss_end = sample_memory(server_pid).rss_mb
    return LoadFigures(
        rss_after_warmup, max(peak, rss_after_warmup, rss_end), rss_end, levels
    )


def measure_serving(
    spec: ConfigSpec,
    model_path: Path,
    texts: List[str],
    plan: LoadPlan,
    env: Dict[str, str],
    workdir: Path,
) -> ServeResult:
    """Starts both servers, measures start-up, memory and load; always stops them."""
    servers = Servers(
        workdir, model_path, env, ports=(spec.rasa_port, spec.action_port)
    )
    try:
        servers.start_actions()
        servers.start_rasa(wait=False)  # the wait for the first answer is measured
        server = servers.rasa
        first_answer_s = wait_for_first_answer(server, servers.rest_url)
        figures = asyncio.run(
            exercise_server(
                servers.rest_url, texts, plan, server.pid, f"bench-{spec.name}"
            )
        )
        if not server.alive():
            raise failure(server, "the Rasa server died during the load tests")
        server.stop()
        action_rss = sample_memory(servers.actions.pid).rss_mb
    except RuntimeError as error:  # a server did not start (with its log's end)
        raise BenchmarkError(str(error)) from None
    finally:
        servers.close()
    rasa_port, action_port = servers.rasa_port, servers.action_port
    return ServeResult(
        rasa_port=rasa_port,
        action_port=action_port,
        first_answer_s=first_answer_s,
        rss_after_warmup_mb=figures.rss_after_warmup_mb,
        rss_peak_mb=figures.rss_peak_mb,
        rss_end_mb=figures.rss_end_mb,
        action_server_rss_mb=action_rss,
        levels=figures.levels,
    )


# ------------------------------------------------------------------------ orchestration


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, to record exactly which configuration was measured."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def benchmark_config(
    spec: ConfigSpec,
    heldout_texts: List[str],
    plan: LoadPlan,
    env: Dict[str, str],
    workdir: Path,
) -> ConfigResult:
    """Trains, evaluates and serves one configuration; records a failure, if any."""
    result = ConfigResult(
        spec.name, str(spec.config_path), file_sha256(spec.config_path)
    )
    workdir.mkdir()
    try:
        progress(f"[{spec.name}] training with {spec.config_path.name} ...")
        result.train, model_path = train_model(spec, env, workdir)
        progress(
            f"[{spec.name}] trained in {result.train.seconds:.1f} s; evaluating ..."
        )
        result.accuracy = evaluate_model(model_path, env, workdir)
        progress(
            f"[{spec.name}] accuracy {result.accuracy.accuracy_pct:.1f} %; serving ..."
        )
        result.serve = measure_serving(
            spec, model_path, heldout_texts, plan, env, workdir
        )
        progress(f"[{spec.name}] done")
    except MEASUREMENT_ERRORS as error:
        result.error = f"{type(error).__name__}: {error}"
        progress(f"[{spec.name}] FAILED: {result.error}")
    return result


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"{datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)


def machine_info() -> Dict[str, str]:
    """CPU count, CPU model, memory, date and versions, for the report header."""
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_total_gb = _meminfo_kb("MemTotal") / 1024 / 1024
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu_model": cpu_model,
        "memory_total": f"{mem_total_gb:.1f} GB",
        "python": sys.version.split()[0],
        "rasa": version("rasa"),
    }


def _meminfo_kb(key: str) -> int:
    """A field of ``/proc/meminfo`` in kB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


# -------------------------------------------------------------------------- report


def fmt(value: Optional[float], digits: int = 1, unit: str = "") -> str:
    """A number for the report, or "n/a"."""
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def shorten(text: str, width: int = MAX_TEXT_WIDTH) -> str:
    """A quoted message text, cut to ``width`` characters for the report."""
    quoted = repr(text)
    return quoted if len(quoted) <= width else quoted[: width - 3] + "..."


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "l"
) -> List[str]:
    """A text table with columns padded to their widest cell.

    ``align`` has one letter per column, ``l`` (left) or ``r`` (right); columns
    beyond it are right-aligned (numbers).
    """
    widths = [
        max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))
    ]
    lefts = [i < len(align) and align[i] == "l" for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            str(cell).ljust(width) if left else str(cell).rjust(width)
            for cell, width, left in zip(row, widths, lefts, strict=True)
        ]
        return "  ".join(cells).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def accuracy_lines(accuracy: Accuracy) -> List[str]:
    """Held-out accuracy: overall, per label, and the misclassified examples."""
    lines = [
        f"Held-out accuracy: {accuracy.correct}/{accuracy.total} = "
        f"{accuracy.accuracy_pct:.1f} %   fallback rate: {accuracy.fallbacks}/"
        f"{accuracy.total} = {accuracy.fallback_rate_pct:.1f} %   "
        f"wrong answers: {accuracy.wrong_answer_rate_pct:.1f} %",
        "",
    ]
    rows = [
        [label, str(s.n), str(s.correct), fmt(100.0 * s.correct / s.n, 0, " %")]
        for label, s in accuracy.per_label.items()
    ]
    lines += table(["label", "n", "correct", "accuracy"], rows)
    lines += ["", f"Misclassified ({len(accuracy.misclassified)}):"]
    rows = [
        [
            shorten(p.text),
            p.expected,
            p.predicted,
            fmt(p.intent_confidence, 2),
            fmt(p.selector_confidence, 2),
        ]
        for p in accuracy.misclassified
    ]
    header = ["text", "expected", "predicted", "intent conf", "faq conf"]
    lines += table(header, rows, align="lll")
    return lines


def serve_lines(serve: ServeResult) -> List[str]:
    """Start-up, memory and load-test figures."""
    lines = [
        f"Servers: Rasa on :{serve.rasa_port}, actions on :{serve.action_port}",
        f"Start to first answer: {serve.first_answer_s:.1f} s",
        f"Rasa server RSS: {serve.rss_after_warmup_mb:.0f} MB after warm-up, "
        f"{serve.rss_peak_mb:.0f} MB peak during load, {serve.rss_end_mb:.0f} MB at "
        f"the end; action server {serve.action_server_rss_mb:.0f} MB",
        "",
    ]
    rows = [
        [
            str(level.concurrency),
            f"{level.completed}/{level.planned}",
            str(level.errors),
            str(level.empty_replies),
            str(level.unsent),
            fmt(level.p50_ms),
            fmt(level.p95_ms),
            fmt(level.throughput_msg_s),
            fmt(level.wall_s),
        ]
        for level in serve.levels
    ]
    header = ["concurrency", "answered", "errors", "empty", "unsent"]
    header += ["p50 ms", "p95 ms", "msg/s", "wall s"]
    return lines + table(header, rows)


def config_section(result: ConfigResult) -> List[str]:
    """The report section of one configuration."""
    title = f"== {result.name}: {Path(result.config_path).relative_to(PROJECT_ROOT)}"
    lines = [f"{title} (sha256 {result.config_sha256[:12]}) =="]
    if result.train is not None:
        lines.append(
            f"Training: {result.train.seconds:.1f} s wall, peak RSS "
            f"{result.train.peak_rss_mb:.0f} MB (process tree, fresh cache)"
        )
    if result.accuracy is not None:
        lines += accuracy_lines(result.accuracy)
    if result.serve is not None:
        lines += ["", *serve_lines(result.serve)]
    if result.error is not None:
        lines += ["", f"FAILED: {result.error}"]
    return lines


def _level(result: ConfigResult, concurrency: int) -> Optional[LevelResult]:
    """The load-test result of ``result`` at ``concurrency``, if measured."""
    levels = result.serve.levels if result.serve else []
    return next((level for level in levels if level.concurrency == concurrency), None)


def comparable_metrics(
    result: ConfigResult, plan: LoadPlan
) -> List[Tuple[str, Optional[float]]]:
    """The figures compared between configurations, in report order."""
    train, accuracy, serve = result.train, result.accuracy, result.serve
    metrics: List[Tuple[str, Optional[float]]] = [
        ("training time (s)", train.seconds if train else None),
        ("peak training RSS (MB)", train.peak_rss_mb if train else None),
        ("start to first answer (s)", serve.first_answer_s if serve else None),
    ]
    for concurrency, _ in plan.levels:
        level = _level(result, concurrency)
        metrics += [
            (f"p50 latency c={concurrency} (ms)", level.p50_ms if level else None),
            (f"p95 latency c={concurrency} (ms)", level.p95_ms if level else None),
            (f"msg/s c={concurrency}", level.throughput_msg_s if level else None),
        ]
    metrics += [
        (
            "Rasa server RSS after warm-up (MB)",
            serve.rss_after_warmup_mb if serve else None,
        ),
        ("Rasa server RSS peak (MB)", serve.rss_peak_mb if serve else None),
        ("held-out accuracy (%)", accuracy.accuracy_pct if accuracy else None),
        ("fallback rate (%)", accuracy.fallback_rate_pct if accuracy else None),
        (
            "wrong answer rate (%)",
            accuracy.wrong_answer_rate_pct if accuracy else None,
        ),
    ]
    return metrics


def comparison_lines(
    project: ConfigResult, stock: ConfigResult, plan: LoadPlan
) -> List[str]:
    """The "project vs stock" table with project/stock ratios."""
    rows = []
    for (label, mine), (_, theirs) in zip(
        comparable_metrics(project, plan), comparable_metrics(stock, plan), strict=True
    ):
        ratio = mine / theirs if mine is not None and theirs else None
        rows.append([label, fmt(mine), fmt(theirs), fmt(ratio, 2, "x")])
    return [
        "== project vs stock ==",
        *table(["metric", "project", "stock", "ratio"], rows),
    ]


def target_values(result: ConfigResult) -> List[Tuple[Target, Optional[float], str]]:
    """Each target with the project's measured value and a note on what was measured."""
    train, accuracy, serve = result.train, result.accuracy, result.serve
    single = _level(result, 1)
    levels = serve.levels if serve else []
    best = max(levels, key=lambda level: level.throughput_msg_s, default=None)
    best_note = f"at c={best.concurrency}" if best else ""
    rss_note = (
        f"peak; action server {serve.action_server_rss_mb:.0f} MB" if serve else ""
    )
    return [
        (TARGET_ACCURACY, accuracy.accuracy_pct if accuracy else None, ""),
        (TARGET_TRAINING, train.seconds if train else None, ""),
        (TARGET_FIRST_ANSWER, serve.first_answer_s if serve else None, ""),
        (TARGET_P50, single.p50_ms if single else None, ""),
        (TARGET_THROUGHPUT, best.throughput_msg_s if best else None, best_note),
        (TARGET_RSS, serve.rss_peak_mb if serve else None, rss_note),
    ]


def targets_lines(result: ConfigResult) -> List[str]:
    """The project's figures next to the issue's targets."""
    rows = []
    for target, value, note in target_values(result):
        goal = f"{'>=' if target.at_least else '<='} {target.threshold:g} {target.unit}"
        status = "n/a" if value is None else ("met" if target.met(value) else "not met")
        rows.append(
            [target.label, goal, fmt(value, 1, f" {target.unit}"), status, note]
        )
    header = ["target (informational)", "goal", "project", "status", "note"]
    return ["== project targets ==", *table(header, rows, align="lrrll")]


def render_report(
    machine: Dict[str, str], results: List[ConfigResult], plan: LoadPlan, quick: bool
) -> str:
    """The whole human-readable report."""
    lines = [
        "Rasa clinic assistant benchmark",
        *(f"{key}: {value}" for key, value in machine.items()),
        f"mode: {'quick' if quick else 'full'}; load levels (concurrency x messages): "
        + ", ".join(f"{c}x{n}" for c, n in plan.levels)
        + f"; {plan.warmup_messages} warm-up messages; {REQUEST_TIMEOUT_S:.0f} s "
        f"request timeout; {plan.level_time_cap_s:.0f} s cap per level",
        "Load client runs on the same machine as the servers.",
        "",
    ]
    for result in results:
        lines += [*config_section(result), ""]
    by_name = {result.name: result for result in results}
    if "project" in by_name and "stock" in by_name:
        lines += [*comparison_lines(by_name["project"], by_name["stock"], plan), ""]
    if "project" in by_name:
        lines += targets_lines(by_name["project"])
    return "\n".join(lines)


def report_json(
    machine: Dict[str, str], results: List[ConfigResult], plan: LoadPlan, quick: bool
) -> Dict[str, Any]:
    """The results as JSON-serialisable data."""
    project = next((result for result in results if result.name == "project"), None)
    targets = [
        {
            **asdict(target),
            "value": value,
            "note": note,
            "met": None if value is None else target.met(value),
        }
        for target, value, note in (target_values(project) if project else [])
    ]
    return {
        "machine": machine,
        "quick": quick,
        "plan": asdict(plan),
        "configs": [asdict(result) for result in results],
        "project_targets": targets,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Benchmark config.yml against Rasa's stock configuration."
    )
    parser.add_argument("--quick", action="store_true", help="send fewer messages")
    parser.add_argument(
        "--skip-stock", action="store_true", help="benchmark config.yml only"
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write JSON here"
    )
    # Internal: the held-out evaluation runs in a child process of this same script.
    parser.add_argument("--evaluate-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--evaluate-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: Optional[FrameType]) -> NoReturn:
    """Turns SIGTERM into SystemExit so that every started process gets stopped."""
    raise SystemExit(128 + signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark and prints the report; returns the exit code."""
    args = parse_args(argv)
    if args.evaluate_model is not None:
        write_predictions(args.evaluate_model, args.evaluate_out)
        return 0
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    specs = [spec for spec in CONFIGS if not (args.skip_stock and spec.name == "stock")]
    env = project_environment()
    machine = machine_info()
    heldout_texts = [text for text, _ in load_examples(HELDOUT)]
    workdir = Path(tempfile.mkdtemp(prefix="rasa-bench-"))
    try:
        results = [
            benchmark_config(spec, heldout_texts, plan, env, workdir / spec.name)
            for spec in specs
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render_report(machine, results, plan, args.quick), flush=True)
    if args.json is not None:
        args.json.write_text(
            json.dumps(report_json(machine, results, plan, args.quick), indent=2)
        )
    return 1 if any(result.error for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
