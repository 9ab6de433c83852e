"""A stdlib HTTP server on a free loopback port, run in a daemon thread.

The fakes of outside services (tests/fakes/twilio_api.py, webhook_server.py) share
this start/stop lifecycle (:class:`LoopbackFake`) and only bring their own request
handler.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Type, TypeVar


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 refuses a burst of concurrent clients


class LoopbackServer:
    """Serves ``handler`` on 127.0.0.1 and a port the OS picks."""

    def __init__(self, handler: Type[BaseHTTPRequestHandler]) -> None:
        self._handler = handler
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self, port: int = 0) -> None:
        """Serves on ``port``, or on a free one; 0 picks a free one."""
        self._httpd = _Server(("127.0.0.1", port), self._handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},  # so that stop() returns quickly
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The port served on (the same after a stop, until the next start)."""
        assert self._httpd is not None, "start() the server first"
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"


FakeT = TypeVar("FakeT", bound="LoopbackFake")


class LoopbackFake:
    """A fake service served by ``self._server``: ``start``/``stop`` or ``with``."""

    _server: LoopbackServer

    def start(self: FakeT) -> FakeT:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self: FakeT) -> FakeT:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
