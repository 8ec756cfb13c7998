"""Behaviour of the async face: ``rocksq_aio.PersistentQueue`` and ``rocksq_aio.MpmcQueue``.

Every test runs on asyncio, asyncio with uvloop, and trio (anyio's pytest plugin).
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from rocksq_aio import (
    MpmcQueue,
    PersistentQueue,
    QueueClosedError,
    QueueFullError,
    QueueLockedError,
    StartPosition,
)
from rocksq_aio._dispatch import Operation, Stage

from support.differences import NO_CLOCK, shares_queues

ALL = 2**20  # more than any test ever stores
WAKE_UP_BOUND = 1.0
"""How long a waiter is given to notice items that are already there.

Never reached when the library works (the waiter is woken at once); it only
turns a lost wake-up into a failed assertion instead of a hang."""


pytestmark = [pytest.mark.anyio, pytest.mark.contract]


# ---------------------------------------------------------------- helpers


async def settle(queue: PersistentQueue | MpmcQueue) -> None:
    """Return once no operation is in flight, so waiting tasks are parked on their event."""
    for _ in range(5):
        await anyio.sleep(0)
    with anyio.fail_after(10):
        while queue.inflight_ops:
            await anyio.sleep(0.001)
    for _ in range(5):
        await anyio.sleep(0)


def record_submits(
    queue: PersistentQueue | MpmcQueue, monkeypatch: pytest.MonkeyPatch
) -> list[Operation]:
    """Record every operation the async face hands to the queue's core from now on."""
    core: Any = queue._engine
    submitted: list[Operation] = []
    if core.capabilities.runs_on == "asyncio":
        # An engine whose I/O is asyncio is handed operations by perform().
        real_perform: Callable[[Operation], Any] = core.perform

        def perform(operation: Operation) -> Any:
            submitted.append(operation)
            return real_perform(operation)

        monkeypatch.setattr(core, "perform", perform)
        return submitted
    real_submit: Callable[[Operation], None] = core.submit

    def submit(operation: Operation) -> None:
        submitted.append(operation)
        real_submit(operation)

    monkeypatch.setattr(core, "submit", submit)
    return submitted


def kinds(operations: list[Operation]) -> list[str]:
    return [operation.kind.value for operation in operations]


async def collect(iterator: AsyncIterator[bytes], count: int) -> list[bytes]:
    got: list[bytes] = []
    async for item in iterator:
        got.append(item)
        if len(got) == count:
            break
    return got


# ---------------------------------------------------------------- lifecycle


async def test_async_with_opens_closes_and_path_reopens_at_once(queue_path: str) -> None:
    async with PersistentQueue(queue_path, max_elements=10) as queue:
        assert isinstance(queue, PersistentQueue)
        assert not queue.closed
        assert queue.max_elements == 10
        await queue.push([b"kept"])
        if shares_queues(queue_path):
            PersistentQueue(queue_path).close()  # no lock error: a stream is shared
        else:
            # The directory is locked while the queue is open.
            with pytest.raises(QueueLockedError):
                PersistentQueue(queue_path)
    assert queue.closed
    with pytest.raises(QueueClosedError):
        await queue.push([b"late"])
    with pytest.raises(QueueClosedError):
        await queue.pop()
    async with PersistentQueue(queue_path) as reopened:
        assert reopened.len == 1
        assert await reopened.pop() == [b"kept"]


async def test_async_with_closes_when_the_body_raises(queue_path: str) -> None:
    with pytest.raises(KeyError):
        async with PersistentQueue(queue_path) as queue:
            await queue.push([b"x"])
            raise KeyError("boom")
    assert queue.closed
    async with PersistentQueue(queue_path) as reopened:
        assert await reopened.pop() == [b"x"]


async def test_aclose_releases_the_queue_and_is_idempotent(queue_path: str) -> None:
    queue = PersistentQueue(queue_path)
    await queue.push([b"a", b"b"])
    await queue.aclose()
    assert queue.closed
    await queue.aclose()  # a second close is harmless
    with pytest.raises(QueueClosedError):
        await queue.pop_wait(1, timeout=0.01)
    reopened = PersistentQueue(queue_path)
    try:
        assert reopened.len == 2
        assert await reopened.pop(2) == [b"a", b"b"]
    finally:
        await reopened.aclose()


async def test_mpmc_async_with_and_aclose(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        assert isinstance(queue, MpmcQueue)
        await queue.add([b"one", b"two"])
        assert await queue.next("reader") == ([b"one"], False)
    assert queue.closed
    with pytest.raises(QueueClosedError):
        await queue.next("reader")
    reopened = MpmcQueue(queue_path, 0)
    try:
        assert reopened.labels == ["reader"]
        assert await reopened.next("reader") == ([b"two"], False)
    finally:
        await reopened.aclose()
    assert reopened.closed


# ---------------------------------------------------------------- FIFO basics


async def test_push_pop_and_counters(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        assert queue.is_empty
        assert queue.len == 0
        assert len(queue) == 0
        assert queue.payload_size == 0
        await queue.push([b"a", b"bb"])
        await queue.push([bytearray(b"ccc"), memoryview(b"dddd")])
        await queue.push([])
        assert not queue.is_empty
        assert queue.len == 4
        assert len(queue) == 4
        assert queue.payload_size == 1 + 2 + 3 + 4
        assert await queue.pop() == [b"a"]
        assert await queue.pop(2) == [b"bb", b"ccc"]
        assert queue.len == 1
        assert queue.payload_size == 4
        assert await queue.pop(10) == [b"dddd"]
        assert await queue.pop() == []
        assert queue.is_empty
        assert queue.payload_size == 0


async def test_queue_full_error_writes_nothing(queue_path: str) -> None:
    async with PersistentQueue(queue_path, max_elements=3) as queue:
        await queue.push([b"1", b"2"])
        with pytest.raises(QueueFullError):
            await queue.push([b"3", b"4"])
        assert queue.len == 2
        assert queue.payload_size == 2
        await queue.push([b"3"])
        with pytest.raises(QueueFullError):
            await queue.push([b"4"])
        assert await queue.pop(ALL) == [b"1", b"2", b"3"]
        await queue.push([b"5", b"6", b"7"])
        assert queue.len == 3


async def test_queue_full_error_does_not_fail_the_rest_of_a_group(queue_path: str) -> None:
    async with PersistentQueue(queue_path, max_elements=2) as queue:
        outcomes: dict[int, str] = {}

        async def push(number: int) -> None:
            try:
                await queue.push([b"%d" % number])
            except QueueFullError:
                outcomes[number] = "full"
            else:
                outcomes[number] = "ok"

        async with anyio.create_task_group() as group:
            for number in range(6):
                group.start_soon(push, number)
        assert sorted(outcomes.values()) == ["full"] * 4 + ["ok"] * 2
        accepted = sorted(b"%d" % n for n, outcome in outcomes.items() if outcome == "ok")
        assert sorted(await queue.pop(ALL)) == accepted


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
        if queue._engine.capabilities.local_arrivals:
            # Woken by the push, the waiter popped exactly once.
            assert kinds(submitted) == ["push", "pop"]
        else:
            # The waiter's pop was waiting at the server: it got the items.
            assert kinds(submitted) == ["push"]
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
            if queue._engine.capabilities.local_arrivals:
                assert queue.len == 4
            else:
                # Released at the server, which may hand one to the waiter at once.
                assert queue.len in (3, 4)
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
        if not queue._engine.capabilities.local_arrivals:
            # Released at the server: a round trip, more than a few loop turns.
            with anyio.move_on_after(5):
                while queue.len != 3:
                    await anyio.sleep(0.001)
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

        async with anyio.create_task_group() as consumers:
            for _ in range(4):
                consumers.start_soon(consumer)
            async with anyio.create_task_group() as producers:
                for item in pushed:
                    producers.start_soon(queue.push, [item])
            with anyio.move_on_after(20):
                await all_delivered.wait()
            consumers.cancel_scope.cancel()
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


# ---------------------------------------------------------------- MPMC


async def test_mpmc_add_next_labels_remove_label(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        assert queue.ttl == 0
        assert queue.is_empty
        assert queue.labels == []
        await queue.add([b"a", b"b"])
        await queue.add([b"c"])
        assert queue.len == 3
        assert len(queue) == 3
        assert await queue.next("x") == ([b"a"], False)
        assert await queue.next("x", max_elements=5) == ([b"b", b"c"], False)
        assert await queue.next("x") == ([], False)
        # A new label at Newest starts at the last stored element.
        assert await queue.next("y", StartPosition.Newest, max_elements=5) == ([b"c"], False)
        assert await queue.next("z", StartPosition.Oldest, max_elements=2) == ([b"a", b"b"], False)
        assert queue.labels == ["x", "y", "z"]
        assert queue.len == 3  # reading does not remove elements
        assert await queue.remove_label("x") is True
        assert await queue.remove_label("x") is False
        assert queue.labels == ["y", "z"]
        # A removed label starts over.
        assert await queue.next("x", max_elements=5) == ([b"a", b"b", b"c"], False)
    async with MpmcQueue(queue_path, 0) as reopened:
        assert reopened.labels == ["x", "y", "z"]
        assert await reopened.next("z", max_elements=5) == ([b"c"], False)


async def test_next_wait_times_out_and_returns_items_added_later(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        assert await queue.next_wait("L", timeout=0.05) == ([], False)
        results: list[tuple[list[bytes], bool]] = []

        async def reader() -> None:
            results.append(await queue.next_wait("L", max_elements=4))

        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            await settle(queue)
            assert results == []
            await queue.add([b"p", b"q"])
        assert results == [([b"p", b"q"], False)]
        assert await queue.next_wait("L", timeout=0) == ([], False)
        assert await queue.next("other", max_elements=5) == ([b"p", b"q"], False)


@NO_CLOCK
async def test_next_wait_reports_expired_elements_at_once(
    queue_path: str, clock: Callable[[], float]
) -> None:
    fake: Any = clock
    async with MpmcQueue(queue_path, 10, clock=clock) as queue:
        await queue.add([b"old-1", b"old-2"])
        assert await queue.next("L") == ([b"old-1"], False)
        fake.advance(11)
        with anyio.fail_after(10):
            assert await queue.next_wait("L") == ([], True)
        assert queue.len == 0
        assert await queue.next_wait("L", timeout=0.01) == ([], False)
        await queue.add([b"new"])
        assert await queue.next_wait("L", timeout=5) == ([b"new"], False)


async def test_consume_yields_items_added_later_and_hands_back_the_rest(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        got: list[bytes] = []

        async def reader() -> None:
            async with aclosing(queue.consume("L", batch_size=3)) as stream:
                got.extend(await collect(stream, 4))

        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            await settle(queue)
            await queue.add([b"a", b"b", b"c"])
            await settle(queue)
            await queue.add([b"d", b"e", b"f"])
        assert got == [b"a", b"b", b"c", b"d"]
        # b"e" and b"f" were read by the last batch but never yielded.
        assert await queue.next("L", max_elements=10) == ([b"e", b"f"], False)
        assert await queue.next("L") == ([], False)
        assert await queue.next("other", max_elements=10) == (
            [b"a", b"b", b"c", b"d", b"e", b"f"],
            False,
        )


async def test_consume_closed_after_one_item_redelivers_the_rest_to_next(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add([b"1", b"2", b"3", b"4"])
        async with aclosing(queue.consume("L", batch_size=3)) as stream:
            assert await collect(stream, 1) == [b"1"]
        assert await queue.next("L") == ([b"2"], False)
        assert await queue.next("L", max_elements=5) == ([b"3", b"4"], False)


async def test_next_wait_is_woken_by_items_consume_hands_back(queue_path: str) -> None:
    """Items a closed ``consume()`` hands back to its label must wake that label's waiters."""
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add([b"1", b"2", b"3"])
        results: list[tuple[list[bytes], bool]] = []

        async def waiter() -> None:
            results.append(await queue.next_wait("L", timeout=WAKE_UP_BOUND))

        async with (
            anyio.create_task_group() as group,
            aclosing(queue.consume("L", batch_size=3)) as stream,
        ):
            assert await collect(stream, 1) == [b"1"]
            group.start_soon(waiter)
            await settle(queue)
            assert results == []
        assert results == [([b"2"], False)], "a waiter slept through items handed back"
        assert await queue.next("L", max_elements=5) == ([b"3"], False)


async def test_mpmc_concurrent_adders_and_readers_deliver_each_item_once_per_label(
    queue_path: str,
) -> None:
    added = [b"m-%d" % number for number in range(60)]
    labels = ["left", "right"]
    delivered: dict[str, list[bytes]] = {label: [] for label in labels}
    all_delivered = anyio.Event()
    async with MpmcQueue(queue_path, 0) as queue:

        async def reader(label: str) -> None:
            while True:
                items, expired = await queue.next_wait(label, max_elements=2)
                assert not expired
                delivered[label].extend(items)
                if all(len(delivered[name]) >= len(added) for name in labels):
                    all_delivered.set()

        async with anyio.create_task_group() as readers:
            for label in labels:
                for _ in range(2):
                    readers.start_soon(reader, label)
            async with anyio.create_task_group() as adders:
                for item in added:
                    adders.start_soon(queue.add, [item])
            with anyio.move_on_after(20):
                await all_delivered.wait()
            readers.cancel_scope.cancel()
        for label in labels:
            assert Counter(delivered[label]) == Counter(added)
            assert await queue.next(label) == ([], False)
        assert queue.len == len(added)


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"max_elements": 0}, ValueError),
        ({"max_elements": -1}, ValueError),
        ({"max_elements": "10"}, TypeError),
        ({"max_elements": 1.5}, TypeError),
        ({"max_inflight_ops": 0}, ValueError),
        ({"max_inflight_ops": True}, TypeError),
        ({"max_inflight_ops": 2.0}, TypeError),
        ({"sync": 1}, TypeError),
    ],
)
async def test_bad_fifo_constructor_arguments_create_nothing(
    queue_path: str, arguments: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        PersistentQueue(queue_path, **arguments)
    assert not os.path.exists(queue_path)
    async with PersistentQueue(queue_path) as queue:  # and the path is not left locked
        assert queue.is_empty


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"ttl": -1}, ValueError),
        ({"ttl": math.nan}, ValueError),
        ({"ttl": "5"}, TypeError),
        ({"ttl": None}, TypeError),
        ({"ttl": 0, "max_inflight_ops": 0}, ValueError),
        ({"ttl": 0, "max_inflight_ops": "1"}, TypeError),
        ({"ttl": 0, "clock": 5}, TypeError),
    ],
)
async def test_bad_mpmc_constructor_arguments_create_nothing(
    queue_path: str, arguments: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        MpmcQueue(queue_path, **arguments)
    assert not os.path.exists(queue_path)


async def test_bad_path_is_refused(queue_path: str) -> None:
    with pytest.raises(TypeError):
        PersistentQueue(queue_path.encode())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PersistentQueue("")
    with pytest.raises(TypeError):
        MpmcQueue(None, 0)  # type: ignore[arg-type]
    assert not os.path.exists(queue_path)


async def test_bad_fifo_call_arguments_raise_before_anything_is_written(queue_path: str) -> None:
    bad: Any
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"keep"])
        for bad in (b"abc", "abc", None, 5, (item for item in [b"x"])):
            with pytest.raises(TypeError):
                await queue.push(bad)
        for bad in ([b"ok", "text"], [b"ok", 1], [b"ok", None]):
            with pytest.raises(TypeError):
                await queue.push(bad)
        for bad, error in ((0, ValueError), (-3, ValueError), ("2", TypeError), (True, TypeError)):
            with pytest.raises(error):
                await queue.pop(bad)
            with pytest.raises(error):
                await queue.pop_wait(bad, timeout=5)
            with pytest.raises(error):
                await collect(queue.items(batch_size=bad), 1)
        assert queue.len == 1
        assert queue.payload_size == 4
        assert queue.inflight_ops == 0
        assert await queue.pop(ALL) == [b"keep"]


async def test_bad_mpmc_call_arguments_raise_before_anything_is_written(queue_path: str) -> None:
    bad: Any
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add([b"keep"])
        for bad in (b"abc", "abc", None, [b"ok", 2]):
            with pytest.raises(TypeError):
                await queue.add(bad)
        for bad, error in (("", ValueError), (None, TypeError), (b"L", TypeError)):
            with pytest.raises(error):
                await queue.next(bad)
            with pytest.raises(error):
                await queue.next_wait(bad, timeout=5)
            with pytest.raises(error):
                await queue.remove_label(bad)
            with pytest.raises(error):
                await collect(queue.consume(bad), 1)
        for bad, error in ((0, ValueError), ("1", TypeError), (False, TypeError)):
            with pytest.raises(error):
                await queue.next("L", max_elements=bad)
            with pytest.raises(error):
                await queue.next_wait("L", max_elements=bad, timeout=5)
            with pytest.raises(error):
                await collect(queue.consume("L", batch_size=bad), 1)
        for bad in ("Oldest", 0, None):
            with pytest.raises(TypeError):
                await queue.next("L", start_position=bad)
        # No bad call created a label or moved anything.
        assert queue.labels == []
        assert queue.len == 1
        assert queue.inflight_ops == 0
        assert await queue.next("L", max_elements=5) == ([b"keep"], False)


def test_a_queue_outlives_its_event_loop(queue_path: str) -> None:
    """Used under asyncio.run, then trio.run, then asyncio.run again."""
    import asyncio

    import trio

    queue = PersistentQueue(queue_path)
    received: list[list[bytes]] = []

    async def use() -> None:
        await queue.push([b"item"])
        received.append(await queue.pop_wait(timeout=5))
        received.append(await queue.pop_wait(timeout=0.01))

    try:
        asyncio.run(use())
        trio.run(use)
        asyncio.run(use())
    finally:
        queue.close()
    assert received == [[b"item"], []] * 3
