"""One conversation, one message at a time, in arrival order, across Rasa servers.

Rasa serves a message inside ``async with lock_store.lock(sender_id)``
(``Agent.handle_message``, reminders, the HTTP API). Its ``RedisLockStore`` keeps
each conversation's ticket queue as one JSON value that every server reads,
changes and writes back: two servers issuing tickets at once both write, one
queue wins, and a message is served next to another or out of turn
(RasaHQ/rasa#9213; the fix was reverted in #11428). Its wait has no overall limit
either (#8756): a message waits for as long as tickets keep expiring ahead of it.

``RedisTicketLockStore`` keeps the same idea, a ticket lock per conversation, with
every change made atomically by Redis itself (``INCR`` and two Lua scripts on a
sorted set of tickets and a hash of their deadlines, times from Redis's clock so
that servers' clocks need not agree):

* a message's ticket number comes from ``INCR``, so tickets are served in the
  order they were asked for, whichever server asked. A channel that answers before
  the message's turn (Twilio's webhook) takes the ticket as the message arrives,
  with :meth:`RedisTicketLockStore.reserve`: otherwise the next message, received
  by another server meanwhile, could take its ticket first;
* a ticket is alive while its server keeps renewing it (every third of
  :data:`LEASE_SECONDS` while a reserved message waits for its server's earlier
  messages of the number, for at most ``LOCK_WAIT_SECONDS``; every poll while it
  waits for its turn; every third of the lease while its turn runs, for at most
  Rasa's lock lifetime, ``TICKET_LOCK_LIFETIME``, 60 s by default); a killed
  server's tickets, reserved ones included, expire :data:`LEASE_SECONDS` later and
  are dropped by the next waiter, so its conversations move on without a manual
  step, and the messages that other servers hold wait less than their bound;
* a message that has waited ``LOCK_WAIT_SECONDS`` (settings) gives its ticket
  back and raises Rasa's ``LockError``, as does a Redis that cannot be reached:
  the channel answers the patient with its "please try again" message.

endpoints.yml names it (``type: clinic_core.lock_store.RedisTicketLockStore``)
with Redis's ``url`` (host), ``port``, ``password``, ``db`` and ``key_prefix``,
as for Rasa's ``redis`` type. tests/scaled/test_lock_store.py fails when the Rasa
interface this relies on changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar, Token
from types import TracebackType
from typing import AsyncIterator, List, Optional, Type

import redis
from rasa.core.lock import Ticket, TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, LockError, LockStore
from rasa.utils.endpoints import EndpointConfig

from clinic_common import settings
from clinic_common.privacy import conversation_key

logger = logging.getLogger(__name__)

LEASE_SECONDS = 10.0  # a ticket not renewed for this long belongs to a dead server
POLL_SECONDS = 0.02  # a waiting message asks again this often (or Rasa's wait time)
KEY_IDLE_SECONDS = 600  # a conversation's keys go this long after their last use
SOCKET_TIMEOUT = 5.0  # seconds for one Redis call
DEFAULT_KEY_PREFIX = "clinic"

# KEYS: counter, tickets (sorted set: number -> number), deadlines (hash: number ->
# Redis time in ms). ARGV: lease in ms, idle lifetime of the keys in ms.
_ISSUE = """
local now = redis.call('TIME')
local deadline = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[1])
local number = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], number, number)
redis.call('HSET', KEYS[3], number, deadline)
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[2]) end
return number
"""

# Renews ticket ARGV[3] and drops the expired tickets ahead of it. Returns 1 when
# it is served (no live ticket ahead), 0 when it waits, -1 when it has expired.
_RENEW = """
local mine = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[2], mine) then return -1 end
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
redis.call('HSET', KEYS[3], mine, now + tonumber(ARGV[1]))
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[2]) end
for _, ahead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. mine)) do
  if tonumber(redis.call('HGET', KEYS[3], ahead) or 0) >= now then return 0 end
  redis.call('ZREM', KEYS[2], ahead)
  redis.call('HDEL', KEYS[3], ahead)
end
return 1
"""


class Reservation:
    """A ticket taken when a message arrived, for the turn that will serve it.

    Used as ``with reservation:`` around the message's handling: Rasa's
    ``lock()`` of that conversation inside the block takes this ticket instead of a
    new one; a ticket the block did not use (the message never reached Rasa) is
    given back when it ends. Without Redis there is no ticket (``None``) and the
    turn takes its own, as without a reservation.

    Inside the block, until ``lock()`` takes it, the ticket is renewed every third
    of the lease (the message may wait for its server's earlier messages of the
    number), for at most ``LOCK_WAIT_SECONDS``: a killed server's reserved tickets
    then lapse a lease later, not after the whole wait, which would hold up the
    number's messages on the other servers past their own bound.
    """

    def __init__(
        self, store: RedisTicketLockStore, conversation_id: str, ticket: Optional[int]
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.ticket = ticket
        self._token: Optional[Token[Optional[Reservation]]] = None
        self._renewing: Optional[asyncio.Future[None]] = None

    def take(self, conversation_id: str) -> Optional[int]:
        """The reserved ticket, once, if it is ``conversation_id``'s."""
        if conversation_id != self.conversation_id:
            return None
        self._stop_renewing()  # the turn renews it from now on
        ticket, self.ticket = self.ticket, None
        return ticket

    def __enter__(self) -> Reservation:
        self._token = _RESERVED.set(self)
        if self.ticket is not None:
            # Past the wait it lapses a lease later, and its turn, if it ever
            # starts, fails with LockError as a turn that waited too long.
            self._renewing = asyncio.ensure_future(
                self.store.keep_alive(
                    self.conversation_id, self.ticket, self.store.wait_seconds
                )
            )
        return self

    def _stop_renewing(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            self._renewing = None

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        trace: Optional[TracebackType],
    ) -> None:
        if self._token is not None:
            _RESERVED.reset(self._token)
        self._stop_renewing()
        unused = self.take(self.conversation_id)
        if unused is not None:
            self.store.give_back(self.conversation_id, unused)


# The reservation of the message being handled in this task (contextvars: each
# asyncio task has its own), read by lock().
_RESERVED: ContextVar[Optional[Reservation]] = ContextVar(
    "clinic_reserved_turn", default=None
)


class RedisTicketLockStore(LockStore):
    """Rasa's ticket lock per conversation, with atomic tickets and a bounded wait."""

    def __init__(self, endpoint_config: EndpointConfig) -> None:
        """Connects lazily to the Redis of ``endpoint_config`` (Rasa's redis keys)."""
        options = endpoint_config.kwargs
        self.red = redis.Redis(
            host=endpoint_config.url or "localhost",
            port=int(options.get("port") or 6379),
            db=int(options.get("db") or 1),
            password=options.get("password") or None,
            socket_timeout=SOCKET_TIMEOUT,
        )
        self.prefix = f"{options.get('key_prefix') or DEFAULT_KEY_PREFIX}:turns:"
        self.wait_seconds = settings.load().lock_wait_seconds
        self._issue = self.red.register_script(_ISSUE)
        self._renew = self.red.register_script(_RENEW)
        super().__init__()

    def _keys(self, conversation_id: str) -> List[str]:
        base = self.prefix + conversation_id
        return [f"{base}:next", f"{base}:tickets", f"{base}:deadlines"]

    @staticmethod
    def _lease_args(lease: float) -> List[int]:
        return [int(lease * 1000), KEY_IDLE_SECONDS * 1000]

    def issue_ticket(
        self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME
    ) -> int:
        """A new ticket, behind every ticket issued before it on any server.

        Its life is the lease, renewed while its holder lives (``lock_lifetime``
        bounds how long a turn renews it: see :meth:`lock`).
        """
        return self._issued(conversation_id, LEASE_SECONDS)

    def _issued(self, conversation_id: str, lease: float) -> int:
        try:
            return int(
                self._issue(self._keys(conversation_id), self._lease_args(lease))
            )
        except redis.RedisError as error:
            raise LockError(f"No ticket from Redis: {type(error).__name__}") from error

    def reserve(self, conversation_id: str) -> Reservation:
        """The conversation's next ticket, taken now, for the turn to come.

        It lives a lease, renewed inside ``with reservation:`` (see
        :class:`Reservation`). Never raises: without Redis, no ticket is reserved.
        """
        try:
            ticket: Optional[int] = self._issued(conversation_id, LEASE_SECONDS)
        except LockError:
            logger.warning("No ticket reserved: Redis failed.")
            ticket = None
        return Reservation(self, conversation_id, ticket)

    def _renewed(self, conversation_id: str, ticket: int) -> int:
        """1 if ``ticket`` is served now, 0 if it waits, -1 if it has expired."""
        args = [*self._lease_args(LEASE_SECONDS), ticket]
        return int(self._renew(self._keys(conversation_id), args))

    def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        """Gives ``ticket_number`` back, letting the next ticket be served."""
        _, tickets, deadlines = self._keys(conversation_id)
        with self.red.pipeline() as transaction:
            transaction.zrem(tickets, ticket_number)
            transaction.hdel(deadlines, ticket_number)
            transaction.execute()

    def cleanup(self, conversation_id: str, ticket_number: int) -> None:
        """Gives the ticket back; the keys expire by themselves when idle.

        Rasa's cleanup also deletes the lock when no one waits, which would drop a
        ticket another server issued in between.
        """
        self.finish_serving(conversation_id, ticket_number)

    def get_lock(self, conversation_id: str) -> Optional[TicketLock]:
        """The conversation's live queue as Rasa's ``TicketLock`` (None if empty)."""
        _, tickets, deadlines = self._keys(conversation_id)
        numbers = [int(number) for number in self.red.zrange(tickets, 0, -1)]
        if not numbers:
            return None
        expiries = self.red.hmget(deadlines, numbers)
        queue = [
            Ticket(number, float(expiry or 0) / 1000)  # Redis's clock, in seconds
            for number, expiry in zip(numbers, expiries, strict=True)
        ]
        return TicketLock(conversation_id, deque(queue))

    def delete_lock(self, conversation_id: str) -> None:
        """Removes the conversation's queue and counter."""
        self.red.delete(*self._keys(conversation_id))

    @asynccontextmanager
    async def lock(
        self,
        conversation_id: str,
        lock_lifetime: float = LOCK_LIFETIME,
        wait_time_in_seconds: float = POLL_SECONDS,
    ) -> AsyncIterator[TicketLock]:
        """Serves the conversation's messages one at a time, in ticket order.

        The ticket is the one reserved for this conversation by the enclosing
        ``with reservation:`` of this task, if any, else a new one.
        Waits at most ``LOCK_WAIT_SECONDS``, asking every ``wait_time_in_seconds``
        (at most :data:`POLL_SECONDS`: Rasa's default of 1 s would hold each
        queued message up to a second), then raises ``LockError``. The turn keeps
        its ticket alive for ``lock_lifetime`` seconds at most.
        """
        reserved = _RESERVED.get()
        ticket = reserved.take(conversation_id) if reserved else None
        if ticket is None:
            ticket = self.issue_ticket(conversation_id, lock_lifetime)
        try:
            await self._wait_for_turn(conversation_id, ticket, wait_time_in_seconds)
            renewing = asyncio.ensure_future(
                self.keep_alive(conversation_id, ticket, lock_lifetime)
            )
            try:
                yield TicketLock(conversation_id)
            finally:
                renewing.cancel()
                with suppress(asyncio.CancelledError):
                    await renewing
        finally:
            self.give_back(conversation_id, ticket)

    async def _wait_for_turn(
        self, conversation_id: str, ticket: int, poll_seconds: float
    ) -> None:
        deadline = time.monotonic() + self.wait_seconds
        interval = min(poll_seconds, POLL_SECONDS)
        while True:
            try:
                served = self._renewed(conversation_id, ticket)
            except redis.RedisError as error:
                raise LockError(f"Redis failed: {type(error).__name__}") from error
            if served == 1:
                return
            if served < 0 or time.monotonic() > deadline:
                logger.warning(
                    "A message of %s waited %.0f s for its turn: not handled.",
                    conversation_key(conversation_id),
                    self.wait_seconds,
                )
                raise LockError("The conversation's earlier messages took too long.")
            await asyncio.sleep(interval)

    async def keep_alive(
        self, conversation_id: str, ticket: int, lifetime: float
    ) -> None:
        """Renews ``ticket`` every third of the lease, for ``lifetime`` seconds.

        Cancelled when its holder is done with it: a turn that ends, a reserved
        ticket its turn takes. Stops early if the ticket has expired (renewing
        cannot bring it back).
        """
        ends = time.monotonic() + lifetime
        while time.monotonic() < ends:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                if self._renewed(conversation_id, ticket) < 0:
                    return
            except redis.RedisError as error:  # the next renewal may succeed
                logger.warning("A ticket was not renewed: %s.", type(error).__name__)

    def give_back(self, conversation_id: str, ticket: int) -> None:
        """Gives ``ticket`` back; if Redis fails, it expires after its lease."""
        try:
            self.finish_serving(conversation_id, ticket)
        except redis.RedisError as error:
            logger.warning("A ticket was not given back: %s.", type(error).__name__)
