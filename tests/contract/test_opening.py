"""When the async queues open: not in the constructor, but in the worker, at the first await.

The constructor checks its arguments and opens nothing; ``async with``,
``await q.open()`` and the first operation open the queue (rules at the top of
``rocksq_aio/_opening.py``), and that is where the errors of opening surface.
"""

from __future__ import annotations

import os

import anyio
import pytest

from rocksq_aio import MpmcQueue, PersistentQueue, QueueClosedError, QueueLockedError

pytestmark = [pytest.mark.anyio, pytest.mark.contract]


async def test_the_constructor_opens_nothing(queue_path: str) -> None:
    unopened = PersistentQueue(queue_path)
    # The path is free: another queue opens it.
    async with PersistentQueue(queue_path) as holder:
        await holder.push([b"x"])
        assert not unopened.closed
        # ... and the first one learns it is taken at its first await.
        with pytest.raises(QueueLockedError):
            await unopened.pop()


@pytest.mark.rocksdb_only
async def test_a_directory_is_created_only_when_the_queue_opens(queue_path: str) -> None:
    queue = PersistentQueue(queue_path)
    assert not os.path.exists(queue_path)
    assert await queue.open() is queue
    assert os.path.isdir(queue_path)
    await queue.aclose()


async def test_a_failed_open_is_tried_again_by_the_next_operation(queue_path: str) -> None:
    queue = PersistentQueue(queue_path)
    holder = PersistentQueue(queue_path)
    await holder.push([b"first"])
    with pytest.raises(QueueLockedError):
        await queue.push([b"refused"])
    refused = 0

    async def pop_refused() -> None:
        nonlocal refused
        with pytest.raises(QueueLockedError):
            await queue.pop()
        refused += 1

    async with anyio.create_task_group() as group:  # concurrent callers get the error too
        for _ in range(3):
            group.start_soon(pop_refused)
    assert refused == 3
    await holder.aclose()
    await queue.push([b"second"])  # opens now
    assert await queue.pop(5) == [b"first", b"second"]
    await queue.aclose()


async def test_operations_awaited_together_share_one_open(queue_path: str) -> None:
    queue = PersistentQueue(queue_path)
    async with anyio.create_task_group() as group:
        for number in range(20):
            group.start_soon(queue.push, [b"%02d" % number])
    assert sorted(await queue.pop(20)) == [b"%02d" % number for number in range(20)]
    await queue.aclose()


async def test_async_with_that_fails_to_open_leaves_the_queue_closed(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as holder:
        second = PersistentQueue(queue_path)
        with pytest.raises(QueueLockedError):
            async with second:
                pytest.fail("the block ran without an open queue")
        assert second.closed
        await holder.push([b"undisturbed"])
        assert await holder.pop() == [b"undisturbed"]


async def test_async_with_cancelled_while_opening_leaves_the_queue_closed(
    queue_path: str,
) -> None:
    queue = PersistentQueue(queue_path)
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with queue:
            pytest.fail("the block ran in a cancelled scope")
    assert queue.closed
    async with PersistentQueue(queue_path) as again:  # nothing holds the path
        await again.push([b"x"])


async def test_closing_a_queue_that_never_opened_opens_nothing(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as holder:
        never_opened = PersistentQueue(queue_path)
        await never_opened.aclose()  # no QueueLockedError: it did not try to open
        never_opened.close()
        assert never_opened.closed
        with pytest.raises(QueueClosedError):
            await never_opened.push([b"x"])
        with pytest.raises(QueueClosedError):
            await never_opened.open()
        await holder.push([b"still mine"])


async def test_a_property_read_before_the_first_await_opens_in_place(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"a", b"b"])
    reopened = PersistentQueue(queue_path)
    assert reopened.len == 2  # opened here, in the caller's thread
    assert await reopened.pop(2) == [b"a", b"b"]
    await reopened.aclose()


async def test_the_mpmc_queue_opens_the_same_way(queue_path: str) -> None:
    queue = MpmcQueue(queue_path, ttl=0)
    async with MpmcQueue(queue_path, ttl=0) as holder:
        await holder.add([b"one"])
        with pytest.raises(QueueLockedError):
            await queue.next("reader")
    assert await queue.open() is queue
    assert await queue.next("reader") == ([b"one"], False)
    await queue.aclose()


async def test_bad_arguments_still_fail_in_the_constructor(queue_path: str) -> None:
    with pytest.raises(ValueError, match="max_elements"):
        PersistentQueue(queue_path, max_elements=0)
    with pytest.raises(TypeError, match="sync"):
        PersistentQueue(queue_path, sync="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        MpmcQueue(queue_path, ttl=-1)
    with pytest.raises(TypeError, match="path"):
        PersistentQueue(b"/tmp/bytes")  # type: ignore[arg-type]
