"""Waits until every URL given answers HTTP 200, or fails after a timeout.

Usage: python scripts/wait_ready.py URL [URL ...] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request


def is_ready(url: str, timeout: float = 2) -> bool:
    """Whether ``url`` answers 200 right now (within ``timeout`` seconds)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def main() -> int:
    """Polls the URLs until all are ready; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    pending = list(args.urls)
    while pending and time.monotonic() < deadline:
        pending = [url for url in pending if not is_ready(url)]
        if pending:
            time.sleep(0.25)
    if pending:
        print(
            f"Not ready after {args.timeout:.0f} s: {', '.join(pending)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
