"""Behaviour of the async face: ``rocksq_aio.PersistentQueue`` and ``rocksq_aio.MpmcQueue``.

Every test runs on asyncio, asyncio with uvloop, and trio (anyio's pytest plugin).
Here: lifecycle, the FIFO basics, bad arguments, a queue outliving its event
loop. Waiting reads and concurrency of the FIFO are in test_async_waiting.py,
the MPMC queue in test_async_mpmc.py.
"""

from __future__ import annotations

import math
import os
from typing import Any

import anyio
import pytest

from rocksq_aio import (
    MpmcQueue,
    PersistentQueue,
    QueueClosedError,
    QueueFullError,
    QueueLockedError,
)

from support.async_face import ALL, collect

pytestmark = [pytest.mark.anyio, pytest.mark.contract]


# ---------------------------------------------------------------- lifecycle


async def test_async_with_opens_closes_and_path_reopens_at_once(queue_path: str) -> None:
    async with PersistentQueue(queue_path, max_elements=10) as queue:
        assert isinstance(queue, PersistentQueue)
        assert not queue.closed
        assert queue.max_elements == 10
        await queue.push([b"kept"])
        # The directory is locked while the queue is open; a second queue
        # says so when it opens (the constructor opens nothing).
        with pytest.raises(QueueLockedError):
            await PersistentQueue(queue_path).open()
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


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kind", "arguments", "error"),
    [
        ("fifo", {"max_elements": 0}, ValueError),
        ("fifo", {"max_elements": -1}, ValueError),
        ("fifo", {"max_elements": "10"}, TypeError),
        ("fifo", {"max_elements": 1.5}, TypeError),
        ("fifo", {"max_inflight_ops": 0}, ValueError),
        ("fifo", {"max_inflight_ops": True}, TypeError),
        ("fifo", {"max_inflight_ops": 2.0}, TypeError),
        ("fifo", {"sync": 1}, TypeError),
        ("mpmc", {"ttl": -1}, ValueError),
        ("mpmc", {"ttl": math.nan}, ValueError),
        ("mpmc", {"ttl": "5"}, TypeError),
        ("mpmc", {"ttl": None}, TypeError),
        ("mpmc", {"ttl": 0, "max_inflight_ops": 0}, ValueError),
        ("mpmc", {"ttl": 0, "max_inflight_ops": "1"}, TypeError),
        ("mpmc", {"ttl": 0, "clock": 5}, TypeError),
    ],
)
async def test_bad_constructor_arguments_create_nothing(
    queue_path: str, kind: str, arguments: dict[str, Any], error: type[Exception]
) -> None:
    queue_class: Any = PersistentQueue if kind == "fifo" else MpmcQueue
    with pytest.raises(error):
        queue_class(queue_path, **arguments)
    assert not os.path.exists(queue_path)
    fresh = PersistentQueue(queue_path) if kind == "fifo" else MpmcQueue(queue_path, 0)
    async with fresh as queue:  # and the path is not left locked
        assert queue.is_empty


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
