"""The SMS inbox: a text Twilio was told we received is handled, even if a server dies.

The Twilio webhook answers before the text's turn (Twilio waits 15 s at most). So
that a Rasa server killed after that answer loses nothing, the webhook first writes
the text to ``ChannelStore``'s ``sms_inbox`` table, in the same transaction that
records its ``MessageSid``; the turn deletes the row in the transaction that writes
its replies to the outbox. A text's body is kept only until then.

:class:`SmsInbox` runs in each Rasa server (like the outbox's sender). Its server
holds the rows it received for :data:`LEASE_SECONDS`, and renews them every third
of that while they wait for their turn or are being handled. Every
:data:`POLL_SECONDS` it claims the rows whose lease ran out (their server stopped:
a crash, kill -9, a shutdown that did not finish them) and hands them to the
channel, oldest first, which handles each number's texts in that order. The claim
is one transaction and a turn starts only if its server still holds the row, so a
text is never handled by two servers. A text that :data:`MAX_ATTEMPTS` servers took
and none finished is given up (logged), rather than tried for ever.

The lease is as long as the lock store's (clinic_core.lock_store.LEASE_SECONDS):
by the time a dead server's text is claimed, the ticket it held for that text in
the lock store has expired too, and the text's new turn does not wait for it long.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Callable, List, Optional, Set

from channels.sms_outbox import log_failure
from channels.store import ChannelStore, ReceivedSms
from clinic_common.sqlite import store_errors

logger = logging.getLogger(__name__)

LEASE_SECONDS = 10.0  # a row not renewed for this long belongs to a stopped server
POLL_SECONDS = 1.0  # how often a server renews its rows and looks for orphans
MAX_ATTEMPTS = 3  # servers that may take one text before it is given up

Recover = Callable[[List[ReceivedSms]], None]


class SmsInbox:
    """One Rasa server's hold on the texts it handles, and its claims on orphans."""

    def __init__(
        self,
        store: Callable[[], ChannelStore],
        lease: float = LEASE_SECONDS,
        poll: float = POLL_SECONDS,
    ) -> None:
        """Prepares the inbox; :meth:`start` runs its renewals and claims.

        Args:
            store: gives the channel store (opened lazily by the channel).
            lease: seconds a row stays this server's without renewal.
            poll: seconds between renewals' checks and claims.
        """
        self._store = store
        self.lease = lease
        self.poll = poll
        self.owner = uuid.uuid4().hex  # this process, in the rows it holds
        self._held: Set[int] = set()
        self._renewed = 0.0
        self._runner: Optional[asyncio.Task[None]] = None

    @property
    def store(self) -> ChannelStore:
        """The channel store holding the inbox."""
        return self._store()

    def receive(self, sms: ReceivedSms) -> Optional[int]:
        """Stores a text received now, held by this server; None if seen before.

        A store call that fails is made once more: PostgreSQL restarting cuts the
        connection of a transaction under way, and the next connection waits for
        the server (``clinic_common.postgres.connect``). Storing is idempotent by
        the text's SID: if the failed call had committed after all, the second
        finds the SID and answers None, and the row, still this server's, is
        claimed from the inbox once its lease runs out (nothing lost, nothing
        handled twice). A second failure is raised: the webhook then answers 500.
        """
        now = time.time()
        try:
            row = self.store.receive_sms(sms, self.owner, now + self.lease, now)
        except store_errors():
            log_failure(logger, "Storing a received SMS failed (%s); trying again.")
            now = time.time()
            row = self.store.receive_sms(sms, self.owner, now + self.lease, now)
        if row is not None:
            self._held.add(row)
        return row

    def still_held(self, row: int) -> bool:
        """Renews the row as its turn starts; False if another server took it."""
        held = self.store.hold_sms([row], self.owner, time.time() + self.lease) == 1
        if not held:
            self._held.discard(row)
        return held

    def release(self, row: int) -> None:
        """Stops renewing a row: its turn is over (the row deleted, or left to retry).

        A turn that failed before deleting its row (say, the database was down)
        leaves it to be claimed again once its lease runs out.
        """
        self._held.discard(row)

    def start(self, recover: Recover) -> None:
        """Starts renewing and claiming; ``recover`` handles the rows claimed."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run(recover))

    async def stop(self) -> None:
        """Stops renewing and claiming; rows still held expire and go elsewhere."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    async def _run(self, recover: Recover) -> None:
        while True:
            try:
                self._renew()
                self._claim(recover)
            except Exception:  # noqa: BLE001 - try again at the next poll
                log_failure(logger, "The SMS inbox could not be read (%s).")
            await asyncio.sleep(self.poll)

    def _renew(self) -> None:
        now = time.time()
        if self._held and now - self._renewed >= self.lease / 3:
            self.store.hold_sms(sorted(self._held), self.owner, now + self.lease)
            self._renewed = now

    def _claim(self, recover: Recover) -> None:
        now = time.time()
        if not self.store.orphaned_sms(now):
            return
        claimed, given_up = self.store.claim_orphaned_sms(
            self.owner, now, now + self.lease, MAX_ATTEMPTS
        )
        if given_up:
            logger.error(
                "%d received SMS given up: %d servers took each and none finished.",
                given_up,
                MAX_ATTEMPTS,
            )
        if claimed:
            logger.warning(
                "%d received SMS left by a stopped server are handled here.",
                len(claimed),
            )
            self._held.update(sms.id for sms in claimed)
            recover(claimed)
