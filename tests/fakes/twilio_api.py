"""A loopback stand-in for Twilio's Programmable Messaging REST API, for tests.

Written from Twilio's public API reference, not from the channel: ``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth (account SID
and auth token), a form-encoded body with ``To``, ``From`` or
``MessagingServiceSid``, and ``Body``. Success is ``201`` with a Message resource
in JSON; errors are JSON with Twilio's ``code``, ``message``, ``more_info`` and
``status``:

- 401 / 20003 wrong or missing credentials, or another account's URL;
- 404 / 20404 any other path; 405 a method other than POST;
- 400 / 21604 no ``To``; 21211 ``To`` not an E.164 number; 21603 neither ``From``
  nor ``MessagingServiceSid``; 21602 no ``Body``; 21617 ``Body`` over 1,600
  characters; 21610 ``To`` has opted out (:meth:`FakeTwilioApi.opt_out`);
- :meth:`FakeTwilioApi.fail_next` answers the next N authenticated requests with
  429 / 20429, 500 / 20500 or 503 / 20503; :meth:`FakeTwilioApi.fail_for` answers
  every request so for some seconds (an incident at Twilio);
- :meth:`FakeTwilioApi.slow_next` keeps the next N requests waiting some seconds
  (longer than the client's timeout) and then drops them, or accepts them: the
  client cannot tell which;
- :meth:`FakeTwilioApi.refuse_connections_for` takes the API off the network for
  some seconds: new connections are refused, open ones closed without an answer.

:attr:`FakeTwilioApi.messages` holds every accepted message and
:attr:`FakeTwilioApi.attempts` counts every authenticated request, failed or not.

A message sent with a ``StatusCallback`` URL can have its delivery reported there
(:meth:`FakeTwilioApi.report_status`): a form POST of ``MessageSid``,
``MessageStatus`` (``sent``, ``delivered``, ``undelivered``, ``failed`` ...),
``ErrorCode`` for the last two (30003 unreachable, 30005 unknown number, 30006
landline, 30007 carrier filtering ...) and the message's ``AccountSid``, ``From``,
``To``, signed with ``X-Twilio-Signature``: base64 of HMAC-SHA1, keyed with the
auth token, of the URL followed by each field's name and value sorted by name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.error import HTTPError
from urllib.parse import parse_qsl, urlencode
from urllib.request import Request, urlopen

from tests.fakes.loopback import LoopbackFake, LoopbackServer

E164 = re.compile(r"\+[1-9]\d{1,14}")
MAX_BODY = 1600
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}


@dataclass(frozen=True)
class SentMessage:
    """One message the fake accepted."""

    sid: str
    to: str
    from_: str
    messaging_service_sid: str
    body: str
    status_callback: str = ""  # where its delivery reports go; empty: none


class FakeTwilioApi(LoopbackFake):
    """Twilio's Messages resource for one account, on a free loopback port."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: List[SentMessage] = []
        self.attempts = 0
        self._failures: List[int] = []  # statuses to answer next, in order
        self._failing: Tuple[float, int] = (0.0, 0)  # (until, status) of fail_for
        self._slow: List[Tuple[float, bool]] = []  # (seconds, accept) of slow_next
        self._down = False  # refuse_connections_for is under way
        self._back: Optional[threading.Timer] = None
        self._opted_out: set[str] = set()
        self._changed = threading.Condition()  # an RLock: conditions may call sent_to
        self._server = LoopbackServer(type("Handler", (_Handler,), {"fake": self}))

    # Lifecycle.

    def stop(self) -> None:
        """Stops serving, and any ``refuse_connections_for`` still to come back."""
        if self._back is not None:
            self._back.cancel()
        super().stop()

    @property
    def base_url(self) -> str:
        """What the channel's ``api_base`` should be."""
        return f"{self._server.origin}"

    # Test knobs and inspection.

    def fail_next(self, times: int, status: int = 500) -> None:
        """Answers the next ``times`` authenticated requests with 429, 500 or 503."""
        assert status in (429, 500, 503), status
        with self._changed:
            self._failures.extend([status] * times)

    def fail_for(self, seconds: float, status: int = 503) -> None:
        """Answers every authenticated request with ``status`` for ``seconds``."""
        assert status in (429, 500, 503), status
        with self._changed:
            self._failing = (time.monotonic() + seconds, status)

    def slow_next(self, times: int, seconds: float, accept: bool = False) -> None:
        """Keeps the next ``times`` requests waiting ``seconds`` before handling.

        With ``accept`` the message is then accepted as usual (the client, gone
        after its timeout, never learns it); without, it is dropped (answered 503).
        """
        with self._changed:
            self._slow.extend([(seconds, accept)] * times)

    def refuse_connections_for(self, seconds: float) -> None:
        """Off the network for ``seconds``, then back on the same port."""
        port = self._server.port
        with self._changed:
            self._down = True
        self._server.stop()

        def come_back() -> None:
            self._server.start(port)
            with self._changed:
                self._down = False

        self._back = threading.Timer(seconds, come_back)
        self._back.daemon = True
        self._back.start()

    @property
    def down(self) -> bool:
        """Whether :meth:`refuse_connections_for` is under way."""
        with self._changed:
            return self._down

    def opt_out(self, phone: str) -> None:
        """As Twilio does after the number texted STOP: sending to it fails."""
        with self._changed:
            self._opted_out.add(phone)

    def reset(self) -> None:
        with self._changed:
            self.messages.clear()
            self._failures.clear()
            self._failing = (0.0, 0)
            self._slow.clear()
            self._opted_out.clear()
            self.attempts = 0

    def sent_to(self, phone: str) -> List[str]:
        """The bodies sent to ``phone`` so far, in order."""
        with self._changed:
            return [message.body for message in self.messages if message.to == phone]

    def report_status(
        self,
        sid: str,
        status: str,
        error_code: Optional[int] = None,
        via: Optional[str] = None,
    ) -> int:
        """Posts message ``sid``'s delivery report to its StatusCallback, signed.

        ``via``: the address to post to instead (the signature is still over the
        StatusCallback URL, as behind a proxy). Returns the answer's HTTP status.
        Blocks: call it from a thread when the receiver runs in this event loop.
        """
        with self._changed:
            [message] = [found for found in self.messages if found.sid == sid]
        assert message.status_callback, "the message asked for no delivery reports"
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": message.from_ or "",
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message.to,
            **({} if error_code is None else {"ErrorCode": str(error_code)}),
        }
        request = Request(
            via or message.status_callback,
            data=urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": self.signature(message.status_callback, form),
            },
        )
        try:
            with urlopen(request, timeout=10) as answer:
                return int(answer.status)
        except HTTPError as error:
            return error.code

    def signature(self, url: str, form: Dict[str, str]) -> str:
        """Twilio's ``X-Twilio-Signature`` of a form posted to ``url``."""
        data = url + "".join(name + form[name] for name in sorted(form))
        digest = hmac.new(self.auth_token.encode(), data.encode(), hashlib.sha1)
        return base64.b64encode(digest.digest()).decode()

    def wait_for(
        self, condition: Callable[[FakeTwilioApi], bool], timeout: float = 30.0
    ) -> bool:
        """Waits until ``condition(self)`` holds; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_for_messages(
        self, phone: str, count: int, timeout: float = 30.0
    ) -> List[str]:
        """The bodies sent to ``phone`` once there are at least ``count``."""
        reached = self.wait_for(lambda fake: len(fake.sent_to(phone)) >= count, timeout)
        bodies = self.sent_to(phone)
        assert reached, f"{len(bodies)} of {count} messages after {timeout} s: {bodies}"
        return bodies

    # Request handling (called from the server's threads).

    def handle(
        self, method: str, path: str, headers: Dict[str, str], body: bytes
    ) -> Tuple[int, Dict[str, Any]]:
        if not self._authenticated(headers.get("authorization", "")):
            return _error(401, 20003)
        resource = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if path.split("?", 1)[0] != resource:
            # Twilio answers another account's URL as unauthenticated.
            if path.startswith("/2010-04-01/Accounts/") and "/Messages" in path:
                return _error(401, 20003)
            return _error(404, 20404)
        if method != "POST":
            return 405, {"code": 20004, "message": "Method not allowed", "status": 405}
        with self._changed:
            self.attempts += 1
            failure = self._failures.pop(0) if self._failures else None
            until, status = self._failing
            if failure is None and time.monotonic() < until:
                failure = status
            slow = self._slow.pop(0) if self._slow else None
            self._changed.notify_all()
        if failure is not None:
            return _error(failure, 20000 + failure)
        if slow is not None:
            seconds, accept = slow
            time.sleep(seconds)
            if not accept:
                return _error(503, 20503)
        content_type = headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            return _error(400, 21602)
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        to = form.get("To", "")
        sender = form.get("From", "")
        service = form.get("MessagingServiceSid", "")
        text = form.get("Body", "")
        if not to:
            return _error(400, 21604)
        if not E164.fullmatch(to):
            return _error(400, 21211)
        if not sender and not service:
            return _error(400, 21603)
        if not text:
            return _error(400, 21602)
        if len(text) > MAX_BODY:
            return _error(400, 21617)
        with self._changed:
            if to in self._opted_out:
                return _error(400, 21610)
            message = SentMessage(
                sid="SM" + secrets.token_hex(16),
                to=to,
                from_=sender,
                messaging_service_sid=service,
                body=text,
                status_callback=form.get("StatusCallback", ""),
            )
            self.messages.append(message)
            self._changed.notify_all()
        return 201, {
            "sid": message.sid,
            "account_sid": self.account_sid,
            "to": message.to,
            "from": message.from_ or None,
            "messaging_service_sid": message.messaging_service_sid or None,
            "body": message.body,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"{resource[:-5]}/{message.sid}.json",
        }

    def _authenticated(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(
            password, self.auth_token
        )


def _error(status: int, code: int) -> Tuple[int, Dict[str, Any]]:
    return status, {
        "code": code,
        "message": ERROR_MESSAGES[code],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1
    fake: FakeTwilioApi  # set on the subclass made in start()

    def _answer(self) -> None:
        if self.fake.down:  # a connection opened before the outage
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, document = self.fake.handle(self.command, self.path, headers, body)
        answer = json.dumps(document).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (slow_next)

    do_POST = do_GET = _answer  # noqa: N815 (http.server's naming)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output quiet
