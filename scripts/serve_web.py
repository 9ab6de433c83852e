"""Serves the website widget's demo page on 127.0.0.1 (``make run`` starts it).

Usage: python scripts/serve_web.py [--port PORT] [--server-url URL]

Only ``web/demo/`` and ``web/dist/`` are served; ``/`` leads to the demo page.
``/demo/config.js`` tells the page where the Rasa server runs
(``http://127.0.0.1:$RASA_PORT`` unless ``--server-url`` says otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import posixpath
import sys
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from clinic_common import settings

WEB_ROOT = Path(__file__).resolve().parents[1] / "web"
SERVED = ("/demo/", "/dist/")
CONFIG_PATH = "/demo/config.js"


def is_served(path: str) -> bool:
    """Whether a URL path points into web/demo or web/dist (after decoding)."""
    decoded = unquote(path)
    normal = posixpath.normpath(decoded) + ("/" if decoded.endswith("/") else "")
    return normal.startswith(SERVED)


class DemoHandler(SimpleHTTPRequestHandler):
    """Static files from ``web/demo`` and ``web/dist``, plus the demo's config."""

    def __init__(self, *args: Any, server_url: str, **kwargs: Any) -> None:
        """Serves ``web/``; ``server_url`` goes into ``/demo/config.js``."""
        self.server_url = server_url
        super().__init__(*args, directory=str(WEB_ROOT), **kwargs)

    def end_headers(self) -> None:
        """Adds no-sniff and no-cache headers to every answer."""
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: errors only (``log_error``)."""

    def do_GET(self) -> None:
        """The demo's config, a redirect from ``/``, or a file under demo/dist."""
        path = urlsplit(self.path).path
        if path == "/":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "/demo/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == CONFIG_PATH:
            body = f"window.CLINIC_CHAT_SERVER_URL = {json.dumps(self.server_url)};\n"
            data = body.encode("utf-8")
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/javascript; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif is_served(path):
            super().do_GET()
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def do_HEAD(self) -> None:
        """Only what GET serves."""
        if is_served(urlsplit(self.path).path):
            super().do_HEAD()
        else:
            self.send_error(HTTPStatus.NOT_FOUND)


def main() -> int:
    """Serves until interrupted; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    config = settings.load()
    parser.add_argument("--port", type=int, default=config.web_port)
    parser.add_argument("--server-url", default=f"http://127.0.0.1:{config.rasa_port}")
    args = parser.parse_args()
    if not (WEB_ROOT / "dist" / "clinic-chat.js").is_file():
        print("web/dist/clinic-chat.js is missing: run 'make setup'.", file=sys.stderr)
        return 1
    handler = partial(DemoHandler, server_url=args.server_url)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as error:
        print(
            f"Cannot serve the demo page on 127.0.0.1:{args.port} ({error.strerror});"
            " set WEB_PORT to a free port.",
            file=sys.stderr,
        )
        return 1
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
