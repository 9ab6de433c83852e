"""The daily job of ``make run``: ``clinicbot retention`` at start, then at 03:00 daily.

supervisord runs it as one more part (scripts/supervise.py, program ``retention``):
it removes what is kept longer than needed (staff/retention.py says what), once when
it starts (a clinic's machine may be off at night) and then every day at
``RUN_HOUR`` local time, sleeping in between. A run that fails (say, the tracker
database is locked or PostgreSQL is down) is tried again an hour later. Its output,
counts per store and never patient data, is ``$STATE_DIR/logs/retention.log``.

Usage:
    python -m scripts.daily
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta
from typing import Callable, Sequence

from staff import cli

RUN_HOUR = 3  # local time: the quietest hour of a clinic
RETRY_SECONDS = 3600.0


def next_run(now: datetime) -> datetime:
    """The next ``RUN_HOUR``:00 after ``now`` (naive local time, as the clock shows)."""
    today = now.replace(hour=RUN_HOUR, minute=0, second=0, microsecond=0)
    return today if today > now else today + timedelta(days=1)


def seconds_until(moment: datetime, now: datetime) -> float:
    """Seconds from ``now`` to ``moment``, both naive local times (DST included)."""
    return max(0.0, moment.timestamp() - now.timestamp())


def run_forever(
    command: Callable[[Sequence[str]], int] = cli.main,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = datetime.now,
) -> None:
    """Runs the retention now, then daily at ``RUN_HOUR``; retries a failure hourly."""
    while True:
        if command(["retention"]) != 0:
            sleep(RETRY_SECONDS)
            continue
        sys.stdout.flush()
        moment = now()
        sleep(seconds_until(next_run(moment), moment))


if __name__ == "__main__":
    run_forever()
