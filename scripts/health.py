"""The health endpoint: ``GET http://127.0.0.1:$HEALTH_PORT/health`` reports each part.

Answers JSON, 200 when every part ``make run`` started serves and 503 otherwise::

    {"status": "ok" | "degraded",
     "parts": {"action_server": {"state": "RUNNING", "uptime_s": 120,
                                 "restarts": 1, "ok": true}, ...}}

``state`` and ``uptime_s`` come from supervisord (its XML-RPC interface on the unix
socket ``$STATE_DIR/supervisor.sock``); ``restarts`` counts the part's starts after
the first since supervisord started, from supervisord's own log; ``ok`` is a request
to the part itself (the Rasa server's ``/``, the action server's ``/health``, the demo
page, the staff page's login page). Without supervisord (``--no-supervisor``, as under
systemd) only ``ok`` is known and the rest is null. Nothing about patients is read.

Usage: python -m scripts.health [--port 5006] [--no-supervisor]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Mapping, Optional, Tuple

from supervisor.xmlrpc import SupervisorTransport

from clinic_common import settings
from scripts.supervise import Part, enabled_parts, state_paths
from scripts.wait_ready import is_ready

_STARTED = re.compile(r"supervisord started with pid (\d+)")
_SPAWNED = re.compile(r"spawned: '([A-Za-z0-9_]+)' with pid")


def restarts_from_log(log: str, supervisord_pid: int) -> Dict[str, int]:
    """Starts after the first, per program, since supervisord ``supervisord_pid`` began.

    When the log was rotated after supervisord began, every start left in it was a
    restart.
    """
    start = 0
    first_is_restart = True
    for match in _STARTED.finditer(log):
        if int(match.group(1)) == supervisord_pid:
            start, first_is_restart = match.end(), False
    counts: Dict[str, int] = {}
    for match in _SPAWNED.finditer(log, start):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    offset = 0 if first_is_restart else 1
    return {name: max(count - offset, 0) for name, count in counts.items()}


def supervisor_view(socket: str) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, int]]:
    """Process info from supervisord by program name, and the restarts of each.

    Raises:
        OSError: supervisord does not answer on ``socket``.
        xmlrpc.client.Fault: it refused the call.
    """
    transport = SupervisorTransport(None, None, f"unix://{socket}")
    # Answers are plain XML-RPC values: a list of dicts, a string, an int.
    proxy: Any = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    infos = {info["name"]: info for info in proxy.supervisor.getAllProcessInfo()}
    log = proxy.supervisor.readLog(0, 0)
    return infos, restarts_from_log(str(log), int(proxy.supervisor.getPID()))


def report(
    parts: List[Part],
    probes: Mapping[str, bool],
    infos: Optional[Mapping[str, Mapping[str, Any]]],
    restarts: Mapping[str, int],
) -> Tuple[int, Dict[str, Any]]:
    """The HTTP status and JSON body for the parts given.

    ``infos`` is None when supervisord is not asked (``--no-supervisor``); a part
    missing from it has the state "UNKNOWN" and counts as down.
    """
    body: Dict[str, Any] = {}
    healthy = True
    for part in parts:
        ok = probes[part.name]
        entry: Dict[str, Any] = {
            "state": None,
            "uptime_s": None,
            "restarts": None,
            "ok": ok,
        }
        if infos is not None:
            info = infos.get(part.name)
            state = str(info["statename"]) if info else "UNKNOWN"
            running = state == "RUNNING"
            entry["state"] = state
            entry["uptime_s"] = (
                int(info["now"]) - int(info["start"]) if info and running else 0
            )
            entry["restarts"] = restarts.get(part.name, 0)
            ok = ok and running
        healthy = healthy and ok
        body[part.name] = entry
    return (200 if healthy else 503), {
        "status": "ok" if healthy else "degraded",
        "parts": body,
    }


def health(environ: Mapping[str, str], use_supervisor: bool) -> Tuple[int, bytes]:
    """Asks supervisord and each part now; the status code and the JSON."""
    parts = enabled_parts(environ)
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        answers = pool.map(lambda part: is_ready(part.probe_url(environ)), parts)
        probes = dict(zip([part.name for part in parts], answers, strict=True))
    infos: Optional[Dict[str, Dict[str, Any]]] = None
    restarts: Dict[str, int] = {}
    if use_supervisor:
        try:
            infos, restarts = supervisor_view(str(state_paths(environ)["socket"]))
        except (OSError, xmlrpc.client.Error):
            infos = {}  # supervisord is gone: every part UNKNOWN, the answer 503
    code, body = report(parts, probes, infos, restarts)
    return code, json.dumps(body, indent=2).encode("utf-8") + b"\n"


class HealthHandler(BaseHTTPRequestHandler):
    """``GET /health``; everything else is 404."""

    use_supervisor = True

    def do_GET(self) -> None:
        """Answers the report, or 404."""
        if self.path.split("?")[0] != "/health":
            code, payload = 404, b'{"message": "GET /health"}\n'
        else:
            code, payload = health(os.environ, self.use_supervisor)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: a monitor asks every few seconds."""


def main(argv: Optional[List[str]] = None) -> int:
    """Serves the endpoint on 127.0.0.1 until stopped."""
    parser = argparse.ArgumentParser(prog="python -m scripts.health")
    parser.add_argument("--port", type=int, default=settings.load().health_port)
    parser.add_argument(
        "--no-supervisor",
        action="store_true",
        help="report the HTTP checks only (under systemd)",
    )
    args = parser.parse_args(argv)
    HealthHandler.use_supervisor = not args.no_supervisor
    server = ThreadingHTTPServer(("127.0.0.1", args.port), HealthHandler)
    print(f"Health: http://127.0.0.1:{args.port}/health", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
