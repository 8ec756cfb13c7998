"""The async FIFO's waiting reads and concurrency: ``pop_wait`` (woken by
pushes, by items put back, by close; timeouts), ``async for`` over a queue
(items not yielded are put back in order), many producers and consumers, and
``max_inflight_ops`` making callers wait. On asyncio, uvloop and trio.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from rocksq_aio import MpmcQueue, PersistentQueue, QueueClosedError
from rocksq_aio._dispatch import Stage

from support.async_face import (
    ALL,
    WAKE_UP_BOUND,
    collect,
    kinds,
    produce_and_consume,
    record_submits,
    settle,
)

pytestmark = [pytest.mark.anyio, pytest.mark.contract]


# ---------------------------------------------------------------- pop_wait


async def test_pop_wait_returns_the_item_another_task_pushes(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PersistentQueue(queue_path) as queue:
        results: list[list[bytes]] = []

        async def consumer() -> None:
            results.append(await queue.pop_wait(5))

        async with anyio.create_task_group() as group:
            group.start_soon(consumer)
            await settle(queue)
            assert results == []  # still waiting on the empty queue
            submitted = record_submits(queue, monkeypatch)
            await anyio.sleep(0.05)
            assert submitted == [], "pop_wait polls the queue while it is empty"
            await queue.push([b"late", b"later"])
        assert results == [[b"late", b"later"]]
        # Woken by the push, the waiter popped exactly once.
        assert kinds(submitted) == ["push", "pop"]
        assert queue.is_empty


async def test_pop_wait_returns_at_once_when_items_are_there(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"a", b"b", b"c"])
        assert await queue.pop_wait(2) == [b"a", b"b"]
        assert await queue.pop_wait(5, timeout=5) == [b"c"]


async def test_zero_timeout_still_returns_items_that_are_there(queue_path: str) -> None:
    """``timeout=0`` means "do not wait", not "do not even look"."""
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"a", b"b"])
        assert await queue.pop_wait(5, timeout=0) == [b"a", b"b"]
        assert await queue.pop_wait(5, timeout=0) == []
    async with MpmcQueue(queue_path + "-mpmc", 0) as stream:
        await stream.add([b"x"])
        assert await stream.next_wait("L", timeout=0) == ([b"x"], False)
        assert await stream.next_wait("L", timeout=0) == ([], False)


async def test_pop_wait_times_out_with_empty_list_and_consumes_nothing(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        assert await queue.pop_wait(1, timeout=0.05) == []
        assert await queue.pop_wait(3, timeout=0) == []
        # A waiter that timed out does not take what arrives afterwards.
        await queue.push([b"after"])
        await settle(queue)
        assert queue.len == 1
        assert await queue.pop() == [b"after"]


async def test_pop_wait_wakes_every_waiter_that_can_be_served(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        results: list[list[bytes]] = []

        async def consumer() -> None:
            results.append(await queue.pop_wait(1, timeout=WAKE_UP_BOUND * 5))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(consumer)
            await settle(queue)
            await queue.push([b"x", b"y", b"z"])
        assert sorted(item for result in results for item in result) == [b"x", b"y", b"z"]
        assert all(len(result) == 1 for result in results)


async def test_pop_wait_is_woken_by_items_an_iterator_puts_back(queue_path: str) -> None:
    """Items put back at the head by a closed ``items()`` must wake parked waiters."""
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"0", b"1", b"2", b"3", b"4"])
        results: list[list[bytes]] = []

        async def waiter() -> None:
            results.append(await queue.pop_wait(1, timeout=WAKE_UP_BOUND))

        async with anyio.create_task_group() as group:
            async with aclosing(queue.items(batch_size=5)) as stream:
                assert await collect(stream, 1) == [b"0"]
                assert queue.is_empty  # the other four sit in the iterator's buffer
                group.start_soon(waiter)
                await settle(queue)
                assert results == []
            # The iterator is closed: b"1".."4" are back in the queue.
            assert queue.len == 4
        assert results == [[b"1"]], "a waiter slept through items put back in the queue"
        assert await queue.pop(ALL) == [b"2", b"3", b"4"]


async def test_closing_the_queue_wakes_parked_waiters(queue_path: str) -> None:
    """A waiter parked on a queue that closes must not sleep forever: it sees the close."""
    fifo = PersistentQueue(queue_path)
    stream = MpmcQueue(queue_path + "-mpmc", 0)
    outcomes: list[str] = []

    async def wait_on(call: Callable[[], Any]) -> None:
        try:
            await call()
        except QueueClosedError:
            outcomes.append("closed")
        else:
            outcomes.append("returned")

    async with anyio.create_task_group() as group:
        group.start_soon(wait_on, lambda: fifo.pop_wait(1))
        group.start_soon(wait_on, lambda: stream.next_wait("L"))
        await settle(fifo)
        await settle(stream)
        assert outcomes == []
        await fifo.aclose()
        await stream.aclose()
        with anyio.move_on_after(WAKE_UP_BOUND):
            while len(outcomes) < 2:
                await anyio.sleep(0.001)
        group.cancel_scope.cancel()
    assert outcomes == ["closed", "closed"], "waiters slept through the queue closing"


# ---------------------------------------------------------------- async iteration


async def test_async_for_yields_items_pushed_later(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        got: list[bytes] = []

        async def consumer() -> None:
            async for item in queue:
                got.append(item)
                if len(got) == 6:
                    break

        async with anyio.create_task_group() as group:
            group.start_soon(consumer)
            for number in range(3):
                await settle(queue)
                await queue.push([b"%d-a" % number, b"%d-b" % number])
        assert got == [b"0-a", b"0-b", b"1-a", b"1-b", b"2-a", b"2-b"]
        assert queue.is_empty


async def test_items_closed_early_puts_the_unyielded_rest_back_in_order(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"%d" % number for number in range(8)])
        async with aclosing(queue.items(batch_size=5)) as stream:
            assert await collect(stream, 2) == [b"0", b"1"]
            assert queue.len == 3  # 2..4 are buffered by the iterator
        assert queue.len == 6
        assert queue.payload_size == 6
    async with PersistentQueue(queue_path) as reopened:
        # Put back at the head, in order, and on disk.
        assert await reopened.pop(ALL) == [b"%d" % number for number in range(2, 8)]


async def test_items_abandoned_by_break_are_put_back_once_collected(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"%d" % number for number in range(5)])
        got: list[bytes] = []
        async for item in queue.items(batch_size=5):
            got.append(item)
            if len(got) == 2:
                break
        assert got == [b"0", b"1"]
        # The loop dropped the generator; the event loop finalizes it soon.
        for _ in range(50):
            if queue.len == 3:
                break
            await anyio.sleep(0)
        assert await queue.pop(ALL) == [b"2", b"3", b"4"]


async def test_async_for_with_batches_yields_every_item_in_order(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        expected = [b"%d" % number for number in range(23)]
        for start in range(0, len(expected), 4):
            await queue.push(expected[start : start + 4])
        async with aclosing(queue.items(batch_size=7)) as stream:
            assert await collect(stream, len(expected)) == expected
        assert queue.is_empty


# ---------------------------------------------------------------- concurrency


async def test_many_producers_and_consumers_deliver_each_item_exactly_once(
    queue_path: str,
) -> None:
    pushed = [b"item-%d" % number for number in range(200)]
    delivered: list[bytes] = []
    all_delivered = anyio.Event()
    async with PersistentQueue(queue_path) as queue:

        async def consumer() -> None:
            while True:
                items = await queue.pop_wait(3)
                delivered.extend(items)
                if len(delivered) >= len(pushed):
                    all_delivered.set()

        producers = [functools.partial(queue.push, [item]) for item in pushed]
        await produce_and_consume([consumer] * 4, producers, all_delivered)
        assert Counter(delivered) == Counter(pushed)
        assert queue.is_empty
        assert await queue.pop(ALL) == []


async def test_single_producer_order_is_fifo(queue_path: str) -> None:
    rng = random.Random(7)
    pushed = [b"%04d" % number for number in range(300)]
    received: list[bytes] = []
    async with PersistentQueue(queue_path) as queue:

        async def producer() -> None:
            position = 0
            while position < len(pushed):
                size = rng.randint(1, 5)
                await queue.push(pushed[position : position + size])
                position += size
                if rng.random() < 0.3:
                    await anyio.sleep(0)

        async def consumer() -> None:
            while len(received) < len(pushed):
                received.extend(await queue.pop_wait(rng.randint(1, 7), timeout=10))

        async with anyio.create_task_group() as group:
            group.start_soon(consumer)
            group.start_soon(producer)
        assert received == pushed


async def test_max_inflight_ops_makes_callers_wait_instead_of_failing(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PersistentQueue(queue_path, max_inflight_ops=2) as queue:
        submitted = record_submits(queue, monkeypatch)
        reported: list[int] = []
        outstanding: list[int] = []
        finished = anyio.Event()

        async def sampler() -> None:
            while not finished.is_set():
                reported.append(queue.inflight_ops)
                outstanding.append(
                    sum(
                        operation.stage in (Stage.PENDING, Stage.RUNNING) for operation in submitted
                    )
                )
                await anyio.sleep(0)

        async with anyio.create_task_group() as group:
            group.start_soon(sampler)
            async with anyio.create_task_group() as pushers:
                for number in range(50):
                    pushers.start_soon(queue.push, [b"%d" % number])
            finished.set()
        assert queue.len == 50
        assert sorted(await queue.pop(ALL)) == sorted(b"%d" % n for n in range(50))
        assert len(submitted) == 51  # 50 pushes and the pop: none was refused
        assert max(reported) == 2
        assert max(outstanding) <= 2
        assert queue.inflight_ops == 0
