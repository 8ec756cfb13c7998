"""peek: what the next pop or next() would return, consuming nothing."""

from __future__ import annotations

import pytest

import rocksq_aio
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.clock import FakeClock
from support.differences import CONSUMER_SEMANTICS_NOT_YET

pytestmark = [pytest.mark.contract, CONSUMER_SEMANTICS_NOT_YET]

A, B, C = b"a", b"b", b"c"


def test_fifo_peek_shows_the_head_and_consumes_nothing(
    queue_path: str, clock: FakeClock
) -> None:
    with PersistentQueueWithCapacity(queue_path, clock=clock, lease_timeout=5) as queue:
        assert queue.peek() == []
        queue.push([A, B, C])
        assert (queue.peek(), queue.peek(2), queue.peek(10)) == ([A], [A, B], [A, B, C])
        batch = queue.reserve_batch(1)
        assert queue.peek(10) == [B, C]
        clock.advance(5)  # the lease expires: a is what a pop gets first again
        assert queue.peek(10) == [A, B, C]
        assert (queue.len, queue.pending, queue.pop(10)) == (3, 0, [A, B, C])
        del batch
        with pytest.raises(ValueError, match="max_elements"):
            queue.peek(0)


def test_mpmc_peek_follows_the_label_and_creates_none(queue_path: str) -> None:
    with MpmcQueue(queue_path, 0) as queue:
        queue.add([A, B, C])
        assert queue.peek("new", 2) == [A, B]
        assert queue.labels == []
        assert queue.next("L") == ([A], False)
        assert queue.peek("L", 5) == [B, C]
        queue.reserve_batch("L", max_elements=1).nack()  # b: given back, served first
        assert queue.peek("L", 5) == [B]
        assert queue.next("L", max_elements=5) == ([B], False)
        assert queue.peek("L", 5) == [C]
        assert queue.labels == ["L"]


@pytest.mark.anyio
async def test_async_peek(queue_path: str) -> None:
    async with rocksq_aio.PersistentQueue(queue_path) as queue:
        await queue.push([A, B])
        assert await queue.peek(5) == [A, B]
        assert queue.len == 2
    mpmc_path = queue_path + "-mpmc"
    async with rocksq_aio.MpmcQueue(mpmc_path, 0) as stream:
        await stream.add([A])
        assert await stream.peek("L") == [A]
        assert stream.labels == []
    rocksq_aio.remove_mpmc_queue(mpmc_path)
