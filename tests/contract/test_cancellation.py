"""Cancellation of the async face never loses an item nor applies half an operation.

A caller cancelled at any await point either never ran its operation, or (for
a pop or next that already committed) has its items given back. The random
tests cancel thousands of calls at random moments, record every item actually
returned to a caller, drain what is left, and compare multisets.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from rocksq_aio import MpmcQueue, PersistentQueue, QueueClosedError
from rocksq_aio._dispatch import Operation, Stage

from support.differences import (
    ENGINE_THREAD,
    MPMC_CANCELLATION_BUG,
    round_trip_scale,
    shares_queues,
)

pytestmark = pytest.mark.contract

ALL = 2**20  # more than any test ever stores
LABELS = ("red", "green", "blue")


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


# ---------------------------------------------------------------- bookkeeping


@dataclass
class Ledger:
    """What was pushed (for sure or maybe) and what callers actually received."""

    confirmed: list[list[bytes]] = field(default_factory=list)
    """Batches whose push/add returned normally."""
    uncertain: list[list[bytes]] = field(default_factory=list)
    """Batches whose push/add was cancelled: all of it or none of it may be stored."""
    delivered: dict[str, list[bytes]] = field(default_factory=dict)
    """Items returned to callers, per label ("" for the FIFO queue)."""
    completed: int = 0
    cancelled: int = 0
    numbers: Iterator[int] = field(default_factory=itertools.count)
    scale: float = 1.0
    """How much longer than in-process the engine's calls take (round_trip_scale)."""

    def batch(self, rng: random.Random) -> list[bytes]:
        return [b"%d" % next(self.numbers) for _ in range(rng.randint(1, 3))]

    async def append(
        self,
        add: Callable[[list[bytes]], Awaitable[object]],
        attempt: Callable[[Callable[[], Awaitable[Any]]], Awaitable[tuple[bool, Any]]],
        rng: random.Random,
    ) -> bool:
        """Attempt a push/add of a new batch; record it as confirmed or uncertain."""
        batch = self.batch(rng)
        completed, _ = await attempt(lambda: add(batch))
        (self.confirmed if completed else self.uncertain).append(batch)
        return completed

    async def prefill(
        self, add: Callable[[list[bytes]], Awaitable[object]], batches: int, rng: random.Random
    ) -> None:
        """``batches`` pushes/adds of new batches, never cancelled."""
        for _ in range(batches):
            batch = self.batch(rng)
            await add(batch)
            self.confirmed.append(batch)

    def tally(self, completed: bool) -> None:
        if completed:
            self.completed += 1
        else:
            self.cancelled += 1

    def deliver(self, items: list[bytes], label: str = "") -> None:
        self.delivered.setdefault(label, []).extend(items)

    def check(self, received: list[bytes]) -> None:
        """Check everything one reader received (delivered to callers, then drained)."""
        counts = Counter(received)
        duplicates = sorted(item for item, count in counts.items() if count > 1)
        assert not duplicates, f"delivered more than once: {duplicates[:10]}"
        pushed = {item for batch in self.confirmed + self.uncertain for item in batch}
        phantoms = sorted(set(counts) - pushed)
        assert not phantoms, f"delivered but never pushed: {phantoms[:10]}"
        lost = [item for batch in self.confirmed for item in batch if item not in counts]
        assert not lost, f"{len(lost)} pushed items were lost: {lost[:10]}"
        for batch in self.uncertain:
            present = [item in counts for item in batch]
            assert all(present) or not any(present), f"half of batch {batch} was applied"


async def cancel_natively(
    make_call: Callable[[], Awaitable[Any]], mode: str, rng: random.Random, scale: float = 1.0
) -> tuple[bool, Any]:
    """Run one call under asyncio-native cancellation; return (completed, result)."""
    delay = rng.uniform(0, 0.002) * scale
    try:
        if mode == "wait_for":
            return True, await asyncio.wait_for(make_call(), timeout=delay)
        if mode == "timeout":
            async with asyncio.timeout(delay):
                return True, await make_call()
        task = asyncio.ensure_future(make_call())
        for _ in range(rng.randint(0, 30)):
            await asyncio.sleep(0)
        if scale > 1:
            # A round trip to a server takes many loop turns, and a varying number.
            await asyncio.sleep(rng.uniform(0, 0.002) * scale)
        task.cancel()
        return True, await task
    except (asyncio.TimeoutError, TimeoutError, asyncio.CancelledError):
        return False, None


NATIVE_MODES = [
    "wait_for",
    pytest.param(
        "timeout",
        marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+"),
    ),
    "cancel",
]


# ---------------------------------------------------------------- FIFO, asyncio


async def fifo_call(queue: PersistentQueue, ledger: Ledger, rng: random.Random, mode: str) -> None:
    choice = rng.random()
    if choice < 0.3:
        attempt = functools.partial(cancel_natively, mode=mode, rng=rng, scale=ledger.scale)
        completed = await ledger.append(queue.push, attempt, rng)
    else:
        count = rng.randint(1, 4)
        if choice < 0.6:
            call: Callable[[], Awaitable[list[bytes]]] = lambda: queue.pop(count)  # noqa: E731
        elif choice < 0.8:
            call = lambda: queue.pop_wait(count)  # noqa: E731
        else:
            wait = rng.uniform(0, 0.002) * ledger.scale
            call = lambda: queue.pop_wait(count, timeout=wait)  # noqa: E731
        completed, items = await cancel_natively(call, mode, rng, ledger.scale)
        if completed:
            ledger.deliver(items)
    ledger.tally(completed)


@pytest.mark.parametrize("mode", NATIVE_MODES)
def test_fifo_random_native_cancellation_loses_nothing(queue_path: str, mode: str) -> None:
    rng = random.Random(f"fifo-{mode}")
    ledger = Ledger(scale=round_trip_scale(queue_path))

    async def stress() -> tuple[int, int]:
        async with PersistentQueue(queue_path) as queue:
            await ledger.prefill(queue.push, 100, rng)
            for _ in range(100):
                await asyncio.gather(*(fifo_call(queue, ledger, rng, mode) for _ in range(12)))
        # Closing waited for any drain still running for a cancelled caller.
        return queue.len, queue.payload_size

    length, payload_size = asyncio.run(stress())
    print(f"{mode}: {ledger.cancelled} calls cancelled, {ledger.completed} completed")
    assert ledger.cancelled >= 50, "too few calls were actually cancelled"
    assert ledger.completed >= 50, "too few calls completed"
    left = asyncio.run(reopen_and_drain(queue_path, length, payload_size))
    ledger.check(ledger.delivered.get("", []) + left)


async def reopen_and_drain(path: str, length: int, payload_size: int) -> list[bytes]:
    async with PersistentQueue(path) as queue:
        if shares_queues(path):
            # Approximate sizes: the closed handle's counts were its own view;
            # the server's, at open, are exact.
            length, payload_size = queue.len, queue.payload_size
        assert queue.len == length
        assert queue.payload_size == payload_size
        left = await queue.pop(ALL)
        if shares_queues(path):
            # At least once: a read cut off mid-flight may have stranded a
            # message at the server until its ack_wait (2 s in the tests).
            with anyio.fail_after(10):
                while len(left) < length:
                    left += await queue.pop_wait(ALL, timeout=5)
        assert len(left) == length
        assert sum(map(len, left)) == payload_size
        assert queue.is_empty
        assert queue.payload_size == 0
        return left


# ---------------------------------------------------------------- MPMC, asyncio


async def mpmc_call(queue: MpmcQueue, ledger: Ledger, rng: random.Random, mode: str) -> None:
    choice = rng.random()
    if choice < 0.25:
        attempt = functools.partial(cancel_natively, mode=mode, rng=rng, scale=ledger.scale)
        completed = await ledger.append(queue.add, attempt, rng)
    else:
        label = rng.choice(LABELS)
        count = rng.randint(1, 4)
        if choice < 0.6:
            call: Callable[[], Awaitable[tuple[list[bytes], bool]]] = lambda: queue.next(  # noqa: E731
                label, max_elements=count
            )
        else:
            call = lambda: queue.next_wait(label, max_elements=count)  # noqa: E731
        completed, result = await cancel_natively(call, mode, rng, ledger.scale)
        if completed:
            items, expired = result
            assert not expired  # ttl is 0: nothing ever expires
            ledger.deliver(items, label)
    ledger.tally(completed)


async def drain_labels(queue: MpmcQueue) -> dict[str, list[bytes]]:
    left: dict[str, list[bytes]] = {}
    for label in LABELS:
        left[label] = []
        while True:
            items, expired = await queue.next(label, max_elements=ALL)
            assert not expired
            if not items:
                break
            left[label].extend(items)
    return left


def check_mpmc(ledger: Ledger, left: dict[str, list[bytes]], stored: int) -> None:
    received = {label: ledger.delivered.get(label, []) + left[label] for label in LABELS}
    for label in LABELS:
        ledger.check(received[label])
        # ttl is 0: every stored element reaches every label, exactly once.
        assert len(received[label]) == stored
    # A cancelled add is stored for every label or for none.
    assert len({frozenset(items) for items in received.values()}) == 1


@MPMC_CANCELLATION_BUG
@pytest.mark.parametrize("mode", NATIVE_MODES)
def test_mpmc_random_native_cancellation_delivers_each_item_once_per_label(
    queue_path: str, mode: str
) -> None:
    rng = random.Random(f"mpmc-{mode}")
    ledger = Ledger(scale=round_trip_scale(queue_path))

    async def stress() -> tuple[int, dict[str, list[bytes]]]:
        async with MpmcQueue(queue_path, 0) as queue:
            await ledger.prefill(queue.add, 60, rng)
            for _ in range(100):
                await asyncio.gather(*(mpmc_call(queue, ledger, rng, mode) for _ in range(12)))
            left = await drain_labels(queue)
            assert queue.labels == sorted(LABELS)
            return queue.len, left

    stored, left = asyncio.run(stress())
    print(f"{mode}: {ledger.cancelled} calls cancelled, {ledger.completed} completed")
    assert ledger.cancelled >= 50, "too few calls were actually cancelled"
    assert ledger.completed >= 50, "too few calls completed"
    check_mpmc(ledger, left, stored)

    async def reopen() -> None:
        async with MpmcQueue(queue_path, 0) as queue:
            assert queue.len == stored
            assert queue.labels == sorted(LABELS)
            for label in LABELS:
                assert await queue.next(label) == ([], False)

    asyncio.run(reopen())


# ---------------------------------------------------------------- anyio scopes (asyncio, trio)


@pytest.mark.anyio
async def test_random_anyio_cancel_scopes_lose_nothing(queue_path: str) -> None:
    rng = random.Random("anyio-scopes")
    scale = round_trip_scale(queue_path)
    fifo = Ledger()
    mpmc = Ledger()

    async def cancel_later(scope: anyio.CancelScope, checkpoints: int) -> None:
        for _ in range(checkpoints):
            await anyio.sleep(0)
        scope.cancel()

    async def attempt(call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run ``call`` in a scope cancelled by a deadline or by another task."""
        result: list[Any] = []
        if rng.random() < 0.5:
            with anyio.move_on_after(rng.uniform(0, 0.002) * scale):
                result.append(await call())
        else:
            async with anyio.create_task_group() as group:
                with anyio.CancelScope() as scope:
                    group.start_soon(cancel_later, scope, int(rng.randint(0, 30) * scale))
                    result.append(await call())
        return (True, result[0]) if result else (False, None)

    async def one_call(fifo_queue: PersistentQueue, mpmc_queue: MpmcQueue) -> None:
        choice = rng.random()
        count = rng.randint(1, 4)
        if choice < 0.15:
            completed = await fifo.append(fifo_queue.push, attempt, rng)
        elif choice < 0.3:
            completed = await mpmc.append(mpmc_queue.add, attempt, rng)
        elif choice < 0.5:
            completed, items = await attempt(lambda: fifo_queue.pop(count))
            if completed:
                fifo.deliver(items)
        elif choice < 0.65:
            completed, items = await attempt(lambda: fifo_queue.pop_wait(count))
            if completed:
                fifo.deliver(items)
        else:
            label = rng.choice(LABELS)
            if choice < 0.85:
                completed, result = await attempt(
                    lambda: mpmc_queue.next(label, max_elements=count)
                )
            else:
                completed, result = await attempt(
                    lambda: mpmc_queue.next_wait(label, max_elements=count)
                )
            if completed:
                mpmc.deliver(result[0], label)
        ledger = fifo if choice < 0.15 or 0.3 <= choice < 0.65 else mpmc
        ledger.tally(completed)

    fifo_path, mpmc_path = queue_path + "-fifo", queue_path + "-mpmc"
    async with PersistentQueue(fifo_path) as fifo_queue, MpmcQueue(mpmc_path, 0) as mpmc_queue:
        for _ in range(50):
            fifo_batch, mpmc_batch = fifo.batch(rng), mpmc.batch(rng)
            await fifo_queue.push(fifo_batch)
            await mpmc_queue.add(mpmc_batch)
            fifo.confirmed.append(fifo_batch)
            mpmc.confirmed.append(mpmc_batch)
        for _ in range(80):
            async with anyio.create_task_group() as group:
                for _ in range(12):
                    group.start_soon(one_call, fifo_queue, mpmc_queue)
        mpmc_left = await drain_labels(mpmc_queue)
    cancelled, completed = fifo.cancelled + mpmc.cancelled, fifo.completed + mpmc.completed
    print(f"anyio scopes: {cancelled} calls cancelled, {completed} completed")
    assert cancelled >= 50, "too few calls were actually cancelled"
    assert completed >= 50, "too few calls completed"
    # The FIFO is reopened before it is drained: what was given back is on disk.
    fifo_left = await reopen_and_drain(fifo_path, fifo_queue.len, fifo_queue.payload_size)
    fifo.check(fifo.delivered.get("", []) + fifo_left)
    check_mpmc(mpmc, mpmc_left, mpmc_queue.len)
    async with MpmcQueue(mpmc_path, 0) as reopened:
        assert reopened.len == mpmc_queue.len
        assert reopened.labels == sorted(LABELS)
        for label in LABELS:
            assert await reopened.next(label) == ([], False)


# ---------------------------------------------------------------- each stage, deterministically


class Gate:
    """Holds the first call of a wrapped core method in its worker thread until opened."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def after(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*arguments: Any) -> Any:
            result = function(*arguments)
            if not self.reached.is_set():
                self.reached.set()
                if not self.opened.wait(10):
                    raise RuntimeError("the test never opened the gate")
            return result

        return wrapped

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, 10), "the gate was never reached"


def record_submits(queue: Any, monkeypatch: pytest.MonkeyPatch) -> list[Operation]:
    core = queue._engine
    submitted: list[Operation] = []
    real_submit = core.submit

    def submit(operation: Operation) -> None:
        submitted.append(operation)
        real_submit(operation)

    monkeypatch.setattr(core, "submit", submit)
    return submitted


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("gated", ["_execute", "drain"], ids=["running", "done"])
@ENGINE_THREAD
def test_pop_cancelled_after_it_committed_gives_its_items_back(
    queue_path: str, gated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its batch is being written (RUNNING) or once written (DONE)."""

    async def scenario() -> None:
        async with PersistentQueue(queue_path) as queue:
            await queue.push([b"a", b"b", b"c"])
            submitted = record_submits(queue, monkeypatch)
            gate = Gate()
            monkeypatch.setattr(queue._engine, gated, gate.after(getattr(queue._engine, gated)))
            task = asyncio.ensure_future(queue.pop(2))
            await gate.wait_reached()
            expected = Stage.RUNNING if gated == "_execute" else Stage.DONE
            assert submitted[0].stage is expected
            assert queue.len == 1  # the pop is written
            await cancelled(task)
            gate.opened.set()
            assert await queue.pop(ALL) == [b"a", b"b", b"c"]
            await queue.push([b"d"])

        async with PersistentQueue(queue_path) as queue:
            assert await queue.pop(ALL) == [b"d"]

    asyncio.run(scenario())


@ENGINE_THREAD
def test_pop_cancelled_before_it_ran_is_withdrawn(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with PersistentQueue(queue_path) as queue:
            await queue.push([b"a", b"b"])
            submitted = record_submits(queue, monkeypatch)
            gate = Gate()
            monkeypatch.setattr(queue._engine, "_execute", gate.after(queue._engine._execute))
            blocker = asyncio.ensure_future(queue.push([b"c"]))
            await gate.wait_reached()
            victim = asyncio.ensure_future(queue.pop(2))
            for _ in range(10):
                await asyncio.sleep(0)
            assert submitted[1].stage is Stage.PENDING
            await cancelled(victim)
            assert submitted[1].stage is Stage.WITHDRAWN
            gate.opened.set()
            await blocker
            assert queue.len == 3
            assert await queue.pop(ALL) == [b"a", b"b", b"c"]

    asyncio.run(scenario())


@pytest.mark.parametrize("gated", ["_execute", "drain"], ids=["running", "done"])
@ENGINE_THREAD
def test_next_cancelled_after_it_committed_rewinds_the_label(
    queue_path: str, gated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with MpmcQueue(queue_path, 0) as queue:
            await queue.add([b"a", b"b", b"c"])
            gate = Gate()
            monkeypatch.setattr(queue._engine, gated, gate.after(getattr(queue._engine, gated)))
            task = asyncio.ensure_future(queue.next("L", max_elements=2))
            await gate.wait_reached()
            await cancelled(task)
            gate.opened.set()
            assert await queue.next("L", max_elements=ALL) == ([b"a", b"b", b"c"], False)
        async with MpmcQueue(queue_path, 0) as queue:
            assert await queue.next("L") == ([], False)
            assert await queue.next("other", max_elements=ALL) == ([b"a", b"b", b"c"], False)

    asyncio.run(scenario())


@ENGINE_THREAD
def test_next_cancelled_after_the_label_moved_on_is_still_delivered_once(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label cannot be rewound (another call read past it): the items come back first."""

    async def scenario() -> None:
        async with MpmcQueue(queue_path, 0) as queue:
            await queue.add([b"a", b"b", b"c", b"d"])
            submitted = record_submits(queue, monkeypatch)
            gate = Gate()
            monkeypatch.setattr(queue._engine, "_execute", gate.after(queue._engine._execute))
            # Both calls start in the same tick, so one group commit runs both.
            victim = asyncio.ensure_future(queue.next("L", max_elements=2))
            mover = asyncio.ensure_future(queue.next("L"))
            await gate.wait_reached()
            assert [operation.stage for operation in submitted] == [Stage.RUNNING] * 2
            await cancelled(victim)
            gate.opened.set()
            assert await mover == ([b"c"], False)
            got = await queue.next("L", max_elements=ALL)
            got_more = await queue.next("L", max_elements=ALL)
            assert sorted(got[0] + got_more[0]) == [b"a", b"b", b"d"]
            assert await queue.next("L") == ([], False)

    asyncio.run(scenario())


# ---------------------------------------------------------------- items held by iterators


@pytest.mark.anyio
async def test_items_handed_back_to_a_label_survive_a_reopen(queue_path: str) -> None:
    """Items a closed consume() hands back after the label moved on must not vanish on close."""
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add([b"a", b"b", b"c"])
        async with aclosing(queue.consume("L", batch_size=3)) as stream:
            assert await stream.__anext__() == b"a"  # b"b", b"c" are buffered
            await queue.add([b"d"])
            assert await queue.next("L") == ([b"d"], False)  # the label moves on
        # b"b" and b"c" were handed back but the position could not move back.
    async with MpmcQueue(queue_path, 0) as reopened:
        items, _ = await reopened.next("L", max_elements=ALL)
        assert sorted(items) == [b"b", b"c"], "items handed back to the label were lost"


@pytest.mark.anyio
async def test_items_buffered_by_an_iterator_survive_closing_the_queue(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"0", b"1", b"2", b"3"])
        stream = queue.items(batch_size=4)
        assert await stream.__anext__() == b"0"
    # The queue closed while b"1".."3" sat, popped, in the iterator's buffer.
    await stream.aclose()
    async with PersistentQueue(queue_path) as reopened:
        assert await reopened.pop(ALL) == [b"1", b"2", b"3"], "buffered items were lost"


@pytest.mark.anyio
async def test_items_buffered_by_consume_survive_closing_the_queue(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add([b"0", b"1", b"2", b"3"])
        stream = queue.consume("L", batch_size=4)
        assert await stream.__anext__() == b"0"
    await stream.aclose()
    async with MpmcQueue(queue_path, 0) as reopened:
        assert await reopened.next("L", max_elements=ALL) == ([b"1", b"2", b"3"], False)


@pytest.mark.anyio
async def test_closing_with_held_items_and_a_parked_waiter_puts_them_back_once(
    queue_path: str,
) -> None:
    """Closing gives an iterator's read-ahead back exactly once, even with waiters parked."""
    queue = PersistentQueue(queue_path)
    await queue.push([b"%d" % number for number in range(8)])
    assert await queue.pop(5) == [b"0", b"1", b"2", b"3", b"4"]
    stream = queue.items(batch_size=3)
    assert await stream.__anext__() == b"5"  # b"6", b"7" are held; the queue is empty
    outcomes: list[str] = []

    async def waiter() -> None:
        try:
            outcomes.append(repr(await queue.pop_wait(1)))
        except QueueClosedError:
            outcomes.append("closed")

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        for _ in range(10):
            await anyio.sleep(0)
        while queue.inflight_ops:
            await anyio.sleep(0.001)
        try:
            await queue.aclose()
        finally:
            with anyio.move_on_after(1.0):
                while not outcomes:
                    await anyio.sleep(0.001)
            group.cancel_scope.cancel()
            await stream.aclose()
    assert queue.closed
    async with PersistentQueue(queue_path) as reopened:
        if shares_queues(queue_path):
            # Redelivery order after nack: a waiting read the server dropped
            # may have had one of them in hand and put it back behind the other.
            assert sorted(await reopened.pop(ALL)) == [b"6", b"7"]
        else:
            assert await reopened.pop(ALL) == [b"6", b"7"]
