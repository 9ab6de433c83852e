"""``make bench-scale`` and ``make chaos`` run end to end at their smallest size; the
scaled profile starts a part that stopped again (what the drill relies on).

Each starts its own profiles (about 90 s for the module): the benchmark the embedded
one and one Rasa server behind nginx, two messages each; the drill one fault (Redis
stopped, started again by the supervision) under the load of two patients. Their
figures are not judged here, only that the scripts still run and report them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_scale
from scripts import chaos
from scripts.launcher import Process
from scripts.run_scaled import RESTART_LIMIT, ScaledProfile
from tests.scaled.conftest import install_services

pytestmark = pytest.mark.integration


def test_bench_scale_measures_both_kinds_of_profile(tmp_path: Path) -> None:
    install_services()
    out = tmp_path / "bench.json"
    argv = ["--profiles", "embedded,nginx-1", "--levels", "1", "--messages", "2"]

    status = bench_scale.main([*argv, "--json", str(out)])

    levels = json.loads(out.read_text())["levels"]
    assert status == 0  # no target applies at this size
    assert [(level["profile"], level["sent"]) for level in levels] == [
        ("embedded", 2),
        ("nginx-1", 2),
    ]
    embedded, scaled = levels
    assert embedded["answered"] == scaled["answered"] == 2
    assert embedded["p95_ms"] > 0 and embedded["pg_connections"] is None
    assert scaled["pg_connections"] >= 1
    assert {"rasa-1", "actions-1", "nginx", "postgres"} <= set(scaled["rss_mb"])
    # The Rasa server worked for its answers; so did the benchmark's patients.
    assert {"rasa", "actions", "bench"} == set(embedded["cpu_ms"])
    assert embedded["cpu_ms"]["rasa"] > 0 and scaled["cpu_ms"]["rasa-1"] > 0
    assert scaled["cpu_ms_total"] > 0 and scaled["ceiling"] > 0


def test_chaos_makes_a_fault_under_load_and_reports_it(tmp_path: Path) -> None:
    install_services()
    out = tmp_path / "chaos.json"

    status = chaos.main(
        ["--faults", "redis-stopped", "--conversations", "2", "--bookings", "0"]
        + ["--json", str(out)]
    )

    report = json.loads(out.read_text())
    (fault,) = report["faults"]
    assert fault["fault"] == "redis-stopped" and fault["sent"] > 0
    assert fault["back_by_itself"]
    assert status == (1 if any(report["checks"].values()) else 0), report


def test_a_part_that_stops_is_started_again_until_it_keeps_stopping(
    tmp_path: Path,
) -> None:
    profile = ScaledProfile.__new__(ScaledProfile)  # only its processes matter here
    profile.processes = [
        Process(["sleep", "30"], {}, tmp_path / "alive.log").start(),
        Process(["true"], {}, tmp_path / "crashing.log").start(),
    ]
    profile._restarts = {}
    alive, crashing = profile.processes
    try:
        for _ in range(RESTART_LIMIT):
            crashing.wait(10)
            assert profile.restart_stopped() == [crashing]
        crashing.wait(10)
        with pytest.raises(RuntimeError, match="crashing keeps stopping"):
            profile.restart_stopped()
        assert alive.alive()
    finally:
        alive.stop()
