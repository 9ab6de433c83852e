"""The scaled profile's lock store (clinic_core/lock_store.py) on a real Redis.

Tickets served in the order they were issued and one at a time, from several
processes and threads; a ticket reserved when a message arrives served before
those issued after it; a killed holder's ticket expiring; a turn longer than the
lease keeping its lock; the bounded wait raising Rasa's LockError; a ticket given
back when the turn fails. And the Rasa interface it relies on, so that a Rasa
upgrade that changes it fails here first.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
from rasa.core.agent import Agent
from rasa.core.lock import Ticket, TicketLock
from rasa.core.lock_store import LockError, LockStore
from rasa.core.processor import MessageProcessor
from rasa.core.utils import AvailableEndpoints
from rasa.shared.exceptions import RasaException
from rasa.utils.endpoints import EndpointConfig

from clinic_core import lock_store
from clinic_core.lock_store import RedisTicketLockStore, Reservation
from scripts.launcher import LOOPBACK, ROOT, free_port
from scripts.run_scaled import wait_for
from scripts.services import Redis
from tests.scaled.conftest import install_services

CONVERSATION = "+16825550100"
CLASS_PATH = "clinic_core.lock_store.RedisTicketLockStore"


@pytest.fixture(scope="module")
def server() -> Iterator[Redis]:
    install_services()
    state = Path(tempfile.mkdtemp(prefix="lock-store-"))
    service = Redis(state / "redis", free_port(), secrets.token_hex(16))
    try:
        with service.process(os.environ, state / "redis.log") as process:
            wait_for(process, service.ready, "answering PING")
            yield service
    finally:
        shutil.rmtree(state, ignore_errors=True)


def config_of(service: Redis, **extra: object) -> EndpointConfig:
    return EndpointConfig(
        url=LOOPBACK,
        type=CLASS_PATH,
        port=service.port,
        password=service.password,
        db=1,
        key_prefix=f"test{secrets.token_hex(4)}",  # each test its own keys
        **extra,
    )


@pytest.fixture
def config(server: Redis) -> EndpointConfig:
    return config_of(server)


@pytest.fixture
def store(config: EndpointConfig) -> RedisTicketLockStore:
    return RedisTicketLockStore(config)


def queued(store: LockStore) -> List[int]:
    """The conversation's live ticket numbers, in order."""
    found = store.get_lock(CONVERSATION)
    return [ticket.number for ticket in found.tickets] if found else []


# The Rasa interface the store relies on.


def test_rasa_loads_it_by_the_type_of_the_scaled_endpoints(
    server: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "REDIS_HOST": LOOPBACK,
        "REDIS_PORT": str(server.port),
        "REDIS_PASSWORD": server.password,
        "ACTION_SERVER_URL": "http://127.0.0.1:5055/webhook",
        "POSTGRES_HOST": LOOPBACK,
        "POSTGRES_PORT": "5432",
        "POSTGRES_DB": "clinic",
        "POSTGRES_USER": "clinic",
        "POSTGRES_PASSWORD": "unused",
    }.items():
        monkeypatch.setenv(name, value)
    endpoints = AvailableEndpoints.read_endpoints(
        str(ROOT / "deploy" / "scaled" / "endpoints.yml")
    )

    assert endpoints.lock_store is not None
    assert endpoints.lock_store.type == CLASS_PATH
    created = LockStore.create(endpoints.lock_store)
    assert isinstance(created, RedisTicketLockStore)
    assert created.red.ping()


def test_rasa_serves_each_message_and_reminder_inside_lock_of_its_sender() -> None:
    handle = inspect.getsource(Agent.handle_message)
    assert "async with self.lock_store.lock(message.sender_id):" in handle
    reminder = inspect.getsource(MessageProcessor.handle_reminder)
    assert "async with self.lock_store.lock(sender_id):" in reminder
    parameters = list(inspect.signature(LockStore.lock).parameters)
    assert parameters == [
        "self",
        "conversation_id",
        "lock_lifetime",
        "wait_time_in_seconds",
    ]


def test_rasa_lock_types_are_those_it_builds_and_raises() -> None:
    assert issubclass(LockError, RasaException)
    lock = TicketLock(CONVERSATION, deque([Ticket(3, time.time() + 60)]))
    assert (lock.conversation_id, lock.now_serving) == (CONVERSATION, 3)
    assert issubclass(RedisTicketLockStore, LockStore)


# One at a time, in order.


async def test_one_turn_at_a_time_and_each_ticket_given_back(
    store: RedisTicketLockStore,
) -> None:
    async with store.lock(CONVERSATION):
        assert len(queued(store)) == 1
        waiting = asyncio.ensure_future(enter(store))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert len(queued(store)) == 2
    await asyncio.wait_for(waiting, 5)
    assert queued(store) == []


async def enter(store: RedisTicketLockStore) -> None:
    async with store.lock(CONVERSATION):
        pass


def serve_in_thread(config: EndpointConfig, index: int, served: List[int]) -> None:
    """Waits for the conversation's turn in a thread of its own; notes ``index``."""

    async def turn() -> None:
        async with RedisTicketLockStore(config).lock(CONVERSATION):
            served.append(index)

    asyncio.run(turn())


async def test_threads_are_served_in_the_order_their_tickets_were_issued(
    store: RedisTicketLockStore, config: EndpointConfig
) -> None:
    served: List[int] = []
    threads = []
    async with store.lock(CONVERSATION):
        for index in range(8):
            thread = threading.Thread(
                target=serve_in_thread, args=(config, index, served)
            )
            thread.start()
            threads.append(thread)
            await until(lambda tickets=index + 2: len(queued(store)) == tickets)
    for thread in threads:
        thread.join(10)
    assert served == list(range(8))


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def count_in_turns(config: EndpointConfig, tasks: int, turns: int) -> None:
    """In a process of its own: ``tasks`` coroutines, each taking ``turns`` turns.

    Each turn increments a Redis counter by reading it, sleeping and writing it
    back (a lost update shows two turns at once), and notes the most turns ever
    inside at once.
    """
    store = RedisTicketLockStore(config)
    counter, inside = f"{store.prefix}counter", f"{store.prefix}inside"

    async def take_turns() -> None:
        for _ in range(turns):
            async with store.lock(CONVERSATION):
                store.red.set(f"{store.prefix}most", store.red.incr(inside))
                value = int(store.red.get(counter) or 0)
                await asyncio.sleep(0.002)
                store.red.set(counter, value + 1)
                store.red.decr(inside)

    async def run() -> None:
        await asyncio.gather(*(take_turns() for _ in range(tasks)))

    asyncio.run(run())


def test_processes_take_turns_one_at_a_time(
    store: RedisTicketLockStore, config: EndpointConfig
) -> None:
    processes, tasks, turns = 3, 4, 8
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=count_in_turns, args=(config, tasks, turns))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0

    assert (
        int(store.red.get(f"{store.prefix}counter") or 0) == processes * tasks * turns
    )
    assert int(store.red.get(f"{store.prefix}most") or 0) == 1
    assert queued(store) == []


# Tickets reserved when a message arrives.


async def take_turn(
    store: RedisTicketLockStore, reservation: Reservation, index: int, served: List[int]
) -> None:
    with reservation:
        async with store.lock(CONVERSATION):
            served.append(index)


async def test_a_ticket_reserved_on_arrival_goes_first_whenever_its_turn_starts(
    store: RedisTicketLockStore, config: EndpointConfig
) -> None:
    other_server = RedisTicketLockStore(config)
    first, second = store.reserve(CONVERSATION), other_server.reserve(CONVERSATION)
    served: List[int] = []
    later = asyncio.ensure_future(take_turn(other_server, second, 2, served))
    await asyncio.sleep(0.3)  # the second message's turn starts first, and waits
    assert served == []
    await asyncio.wait_for(take_turn(store, first, 1, served), 5)
    await asyncio.wait_for(later, 5)
    assert served == [1, 2]
    assert queued(store) == []


async def test_an_unused_reservation_is_given_back(store: RedisTicketLockStore) -> None:
    with store.reserve(CONVERSATION):  # the message never reached Rasa
        assert len(queued(store)) == 1
    assert queued(store) == []
    with store.reserve("+16825550199"):  # another conversation's: not taken
        await asyncio.wait_for(enter(store), 1)
    assert queued(store) == []


def test_without_redis_nothing_is_reserved(server: Redis) -> None:
    gone = config_of(server)
    gone.kwargs["port"] = free_port()
    assert RedisTicketLockStore(gone).reserve(CONVERSATION).ticket is None


# Lifetimes and the bounded wait.


def hold_forever(config: EndpointConfig, lease: float, reserved: bool) -> None:
    """In a process of its own: holds the conversation's ticket and never lets go.

    ``reserved``: a ticket reserved for a message that waits for its server's
    earlier message of the number; else a turn that never ends.
    """
    lock_store.LEASE_SECONDS = lease
    store = RedisTicketLockStore(config)

    async def hold() -> None:
        store.red.set(f"{store.prefix}held", 1)
        await asyncio.sleep(600)

    async def hold_ticket() -> None:
        if reserved:
            with store.reserve(CONVERSATION):
                await hold()
        else:
            async with store.lock(CONVERSATION):
                await hold()

    asyncio.run(hold_ticket())


async def wait_after_killing_the_holder(
    store: RedisTicketLockStore, config: EndpointConfig, reserved: bool, alive: float
) -> float:
    """Seconds the next turn waits once a holder (:func:`hold_forever`) is killed.

    The holder has renewed its ticket for ``alive`` seconds, past its 1 s lease.
    """
    holder = multiprocessing.get_context("spawn").Process(
        target=hold_forever, args=(config, 1.0, reserved)
    )
    holder.start()
    try:
        await until(lambda: bool(store.red.get(f"{store.prefix}held")), 60)
        await asyncio.sleep(alive)  # alive: renewed past its lease
        assert len(queued(store)) == 1
        os.kill(holder.pid or 0, signal.SIGKILL)
        started = time.monotonic()
        async with store.lock(CONVERSATION):
            waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.join()
    assert queued(store) == []
    return waited


async def test_a_killed_servers_turn_passes_on_after_the_lease(
    store: RedisTicketLockStore,
    config: EndpointConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lock_store, "LEASE_SECONDS", 1.0)
    waited = await wait_after_killing_the_holder(store, config, False, 1.5)
    assert 0.3 < waited < 5


async def test_a_killed_servers_reserved_ticket_passes_on_after_the_lease(
    config: EndpointConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The defect: a reserved ticket lived LOCK_WAIT_SECONDS plus the lease, so the
    # number's next message on another server waited past its own bound.
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "6")
    monkeypatch.setattr(lock_store, "LEASE_SECONDS", 1.0)
    store = RedisTicketLockStore(config)
    waited = await wait_after_killing_the_holder(store, config, True, 2.5)
    assert waited < 3


async def test_a_reserved_ticket_lapses_after_lock_wait_seconds(
    config: EndpointConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "1")
    monkeypatch.setattr(lock_store, "LEASE_SECONDS", 0.3)
    store = RedisTicketLockStore(config)
    with store.reserve(CONVERSATION):
        await asyncio.sleep(0.9)
        assert not reserved_ticket(store).has_expired()  # renewed while it may wait
        await asyncio.sleep(1.2)
        assert reserved_ticket(store).has_expired()  # no longer: the next goes first
    assert queued(store) == []


def reserved_ticket(store: RedisTicketLockStore) -> Ticket:
    found = store.get_lock(CONVERSATION)
    assert found is not None and len(found.tickets) == 1
    return found.tickets[0]


async def test_a_turn_longer_than_the_lease_keeps_its_lock(
    store: RedisTicketLockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock_store, "LEASE_SECONDS", 0.3)
    async with store.lock(CONVERSATION):
        waiting = asyncio.ensure_future(enter(store))
        await asyncio.sleep(1.5)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 5)


async def test_a_wait_past_lock_wait_seconds_raises_lock_error(
    config: EndpointConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "0.5")
    store = RedisTicketLockStore(config)
    async with store.lock(CONVERSATION):
        started = time.monotonic()
        with pytest.raises(LockError):
            await enter(store)
        assert 0.5 <= time.monotonic() - started < 3
        assert len(queued(store)) == 1  # the waiter's ticket was given back
    assert queued(store) == []


async def test_a_failed_turn_gives_its_ticket_back(
    store: RedisTicketLockStore,
) -> None:
    with pytest.raises(ValueError):
        async with store.lock(CONVERSATION):
            raise ValueError("the turn failed")
    assert queued(store) == []
    await asyncio.wait_for(enter(store), 1)


async def test_without_redis_a_message_raises_lock_error(server: Redis) -> None:
    gone = config_of(server)
    gone.kwargs["port"] = free_port()  # nothing listens there
    with pytest.raises(LockError):
        await enter(RedisTicketLockStore(gone))
