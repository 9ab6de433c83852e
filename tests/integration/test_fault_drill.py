"""The fault drill (``make faults``) passes: every fault, every check, every log.

scripts/faults.py starts the supervised assistant as ``make run`` does and breaks
one part at a time; each of its checks compares what patients got with what they
must get, counts what was lost, and searches every log for their details. This
test runs it whole (about four minutes) and shows its report when it fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_every_fault_of_the_drill_is_survived() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "faults.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    report = result.stdout
    summary = re.search(r"^(\d+) passed, (\d+) failed$", report, re.M)

    assert summary is not None, report + result.stderr[-3000:]
    assert (int(summary.group(2)), result.returncode) == (0, 0), report
    assert int(summary.group(1)) >= 30, report  # every fault ran
