"""The SMS outbox: every reply is stored first, then sent and retried until it is out.

``channels.twilio_sms`` writes each reply (and the START welcome and HELP text) to
``ChannelStore``'s ``sms_outbox`` table before anything is sent. :class:`SmsOutbox`
runs in the Rasa server process and sends what is due, one message of a number at a
time so that a number's replies arrive in order. An attempt that ends in 429, 5xx,
a timeout or a failed or dropped connection is tried again after 1, 2, 4 ... 60
seconds (each wait shortened at random by up to half, so that many numbers do not
retry in step) until ``SMS_RETRY_WINDOW_SECONDS`` (one hour by default) after the
reply was written; pending replies are picked up again when the server restarts. Any
other 4xx (say 21610, the number unsubscribed, or 21211, not a valid number) fails
at once. Before each attempt the number's opt-out is checked again.

A text Twilio took may still not reach the phone (the carrier refused it): Twilio's
delivery report (``channels.twilio_sms``'s ``/status`` route) then marks it failed.

Once a reply is sent or has finally failed its number and text are deleted; what is
kept (times, attempts, Twilio's status and error code, a keyed hash of the number
and the conversation key of the logs) lets staff see failures with
``clinicbot sms-failures``.

A request that timed out or lost its connection may still have been accepted by
Twilio, and Twilio's Messages API has no idempotency key: trying again can send the
patient the same text twice. A duplicate is better than a lost reply, so such
attempts are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, Optional

from channels.store import ChannelStore, OutgoingSms
from clinic_common import settings

logger = logging.getLogger(__name__)


def log_failure(log: logging.Logger, message: str, *args: object) -> None:
    """Logs the exception being handled: ``message`` % ``args`` and its type.

    The message names the type only: the details, which may quote a patient's
    words or number, are logged at debug level.
    """
    error = sys.exc_info()[1]
    log.error(message, *args, type(error).__name__)
    log.debug("Details of the failure above", exc_info=True)


# Seconds from when a reply was written (``SMS_RETRY_WINDOW_SECONDS`` changes it).
DEFAULT_RETRY_WINDOW = settings.DEFAULT_SMS_RETRY_WINDOW
FIRST_RETRY_DELAY = 1.0  # seconds; doubled after each failed attempt
MAX_RETRY_DELAY = 60.0
SEND_TIMEOUT = 10.0  # seconds for one call to Twilio's API
# An attempt that never finished (a crash) may be made again this long after the
# request's timeout.
CLAIM_MARGIN = 5.0  # seconds
ERROR_PAUSE = 1.0  # seconds to wait after an unexpected error (say, a locked file)
IDLE_POLL = 0.02  # seconds between checks while waiting for the outbox to empty

OPTED_OUT = "opted out"
REFUSED = "refused by Twilio"
WINDOW_OVER = "retry window over"


def undelivered_reason(status: str) -> str:
    """Why a text Twilio took failed after all: its delivery report's status."""
    return f"reported {status} by Twilio"


@dataclass(frozen=True)
class Delivery:
    """How one attempt to send a message ended."""

    sent: bool
    retryable: bool = False  # 429, 5xx, timeout or connection: worth another try
    status: Optional[int] = None  # Twilio's HTTP status; None: no answer
    error_code: Optional[int] = None  # Twilio's error code, if it gave one
    message_sid: Optional[str] = None  # Twilio's SID of the message, once sent


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a reply is tried."""

    window: float = DEFAULT_RETRY_WINDOW
    first_delay: float = FIRST_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    timeout: float = SEND_TIMEOUT

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The policy with ``$SMS_RETRY_WINDOW_SECONDS`` as its window.

        A value that is not a positive number is logged and the default used
        (``clinic_common.settings``): a mistake in an SMS setting must not stop the
        rest of the assistant.
        """
        return cls(window=settings.load().sms_retry_window_seconds)

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failed tries, with jitter."""
        exponent = min(max(failed_attempts - 1, 0), 30)  # 2**30 s is already "cap"
        longest = min(self.max_delay, self.first_delay * 2**exponent)
        return random.uniform(longest / 2, longest)


Send = Callable[[str, str], Awaitable[Delivery]]


class SmsOutbox:
    """Sends the outbox's replies in the background, retrying what may succeed."""

    def __init__(
        self,
        store: Callable[[], ChannelStore],
        send: Send,
        policy: RetryPolicy,
        log_id: Callable[[str], str],
    ) -> None:
        """Prepares the sender; :meth:`start` runs it in the current event loop.

        Args:
            store: gives the channel store (opened lazily by the channel).
            send: one attempt to send a body to a number.
            policy: the retry window and backoff.
            log_id: the keyed hash that names a number in logs.
        """
        self._store = store
        self._send = send
        self.policy = policy
        self._log_id = log_id
        self._wake: Optional[asyncio.Event] = None
        self._runner: Optional[asyncio.Task[None]] = None
        self._in_flight: Dict[str, asyncio.Task[None]] = {}

    @property
    def store(self) -> ChannelStore:
        """The channel store holding the outbox."""
        return self._store()

    def start(self) -> None:
        """Starts sending, beginning with whatever is pending from before."""
        if self._runner is None or self._runner.done():
            self._wake = asyncio.Event()
            self._runner = asyncio.ensure_future(self._run())

    async def stop(self, grace: float) -> None:
        """Stops sending; attempts under way get ``grace`` seconds to finish.

        What is not sent stays in the outbox for the next start.
        """
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        attempts = list(self._in_flight.values())
        if attempts:
            _, late = await asyncio.wait(attempts, timeout=grace)
            for attempt in late:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    def wake(self) -> None:
        """Tells the sender that new replies were written."""
        if self._wake is not None:
            self._wake.set()

    async def wait_until_empty(self) -> None:
        """Waits until every reply is sent or has finally failed (for tests)."""
        while self._in_flight or self.store.pending_sms():
            await asyncio.sleep(IDLE_POLL)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                self._start_due_attempts()
                due = self.store.next_sms_due()
            except Exception:  # noqa: BLE001 - keep sending what can be
                log_failure(logger, "The SMS outbox could not be read (%s).")
                due = time.time() + ERROR_PAUSE
            wait = None if due is None else max(due - time.time(), IDLE_POLL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _start_due_attempts(self) -> None:
        for sms in self.store.due_sms(time.time()):
            if sms.phone not in self._in_flight:
                attempt = asyncio.ensure_future(self._attempt(sms))
                self._in_flight[sms.phone] = attempt
                attempt.add_done_callback(functools.partial(self._done, sms.phone))

    def _done(self, phone: str, _: object) -> None:
        self._in_flight.pop(phone, None)
        self.wake()  # the number's next reply may be due now

    async def _attempt(self, sms: OutgoingSms) -> None:
        try:
            await self._try_to_send(sms)
        except Exception:  # noqa: BLE001 - the outbox must keep going
            log_failure(
                logger,
                "SMS %d to %s: attempt failed (%s); it stays in the outbox.",
                sms.id,
                self._log_id(sms.phone),
            )
            await asyncio.sleep(ERROR_PAUSE)

    async def _try_to_send(self, sms: OutgoingSms) -> None:
        store = self.store
        if store.is_opted_out(sms.phone):
            dropped = store.drop_pending_sms(sms.phone, OPTED_OUT)
            logger.info(
                "SMS to %s not sent (%d message(s)): the number opted out.",
                self._log_id(sms.phone),
                dropped,
            )
            return
        started = time.time()
        until = started + self.policy.timeout + CLAIM_MARGIN
        if not store.claim_sms(sms.id, started, until):
            return  # another sender on the same file has it
        delivery = await self._send(sms.phone, sms.body)
        now = time.time()
        if delivery.sent:
            store.sms_sent(sms.id, now, delivery.status or 0, delivery.message_sid)
            return
        attempts = sms.attempts + 1
        if delivery.retryable:
            next_attempt = now + self.policy.delay(attempts)
            if next_attempt <= sms.created_at + self.policy.window:
                store.sms_retry_later(
                    sms.id, now, next_attempt, delivery.status, delivery.error_code
                )
                logger.warning(
                    "SMS %d to %s: attempt %d failed (Twilio status %s, error code "
                    "%s); trying again in %.1f s.",
                    sms.id,
                    self._log_id(sms.phone),
                    attempts,
                    _or_none(delivery.status),
                    _or_none(delivery.error_code),
                    next_attempt - now,
                )
                return
            reason = WINDOW_OVER
        else:
            reason = REFUSED
        store.sms_failed(sms.id, now, reason, delivery.status, delivery.error_code)
        logger.error(
            "SMS %d to %s not sent after %d attempt(s) (%s): Twilio status %s, "
            "error code %s.",
            sms.id,
            self._log_id(sms.phone),
            attempts,
            reason,
            _or_none(delivery.status),
            _or_none(delivery.error_code),
        )


def _or_none(value: Optional[int]) -> str:
    return "none" if value is None else str(value)
