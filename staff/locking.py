"""One retrain or rollback at a time: an fcntl lock on ``models/.retrain.lock``.

A second request waits for the first by default, saying who holds the lock; once it
gets its turn it retrains with whatever edits came in meanwhile, or finds the live
model already has them and stops. ``--no-wait`` refuses at once instead. Waiting is
the default because staff who click "retrain" twice, or one after the other, want
their edits live, not an error to retry.

An fcntl lock is released when its holder ends, even when killed, so a stale lock
file never blocks anyone; the file's content (who, since when) is only for messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Callable, Iterator

from staff.gate import CheckFailed
from staff.history import now_iso

LOCK_FILE = ".retrain.lock"

Say = Callable[[str], None]


class Busy(CheckFailed):
    """Another retrain or rollback holds the lock."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "started by another process"
    return (
        f"{info.get('command', 'retrain')}, process {info.get('pid')}, started "
        + str(info.get("started"))
    )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def retrain_lock(
    models_dir: Path, command: str, wait: bool, wait_seconds: float, say: Say
) -> Iterator[None]:
    """Holds the retrain lock; waits for it (saying so) or refuses at once."""
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        if not _try_lock(handle):
            holder = _holder(path)
            if not wait:
                raise Busy(
                    f"Another retrain or rollback is running ({holder}). Try again "
                    "when it has finished, or leave out --no-wait to wait for it."
                )
            say(
                f"Another retrain or rollback is running ({holder}); waiting for it "
                f"to finish (at most {_duration(wait_seconds)})..."
            )
            deadline = time.monotonic() + wait_seconds
            while not _try_lock(handle):
                if time.monotonic() > deadline:
                    raise Busy(
                        f"Gave up after waiting {_duration(wait_seconds)} for the "
                        f"other retrain ({holder}). Nothing was changed."
                    )
                time.sleep(0.5)
            say("The other one has finished; going on.")
        handle.truncate(0)
        handle.write(
            json.dumps({"command": command, "pid": os.getpid(), "started": now_iso()})
        )
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
