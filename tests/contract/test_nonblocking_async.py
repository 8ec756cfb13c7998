"""The nonblocking face's Responses in async code: awaited (alone, many at once,
cancelled), and ``get()`` refused on an event loop's thread but fine from a
worker thread or after the loop is gone.
"""

from __future__ import annotations

import anyio
import pytest

from rocksq_aio import QueueError, QueueFullError, StartPosition
from rocksq_aio.nonblocking import MpmcQueue, MpmcResponseVariant, Response, ResponseVariant

from support.clock import FakeClock
from support.differences import GATED_WORKER
from support.nonblocking import GatedClock, fifo

pytestmark = pytest.mark.contract

Oldest = StartPosition.Oldest


@pytest.mark.rocksdb_only
@pytest.mark.anyio
async def test_awaiting_a_response(queue_path: str) -> None:
    with fifo(queue_path, max_elements=3) as queue:
        assert (await queue.push([b"a", b"b"])).data is None
        variant = await queue.pop(1)
        assert isinstance(variant, ResponseVariant)
        assert variant.data == [b"a"]
        assert (await queue.len).len == 1
        assert (await queue.payload_size).size == 1
        disk = await queue.disk_size
        assert disk.size is not None
        assert disk.size > 0
        with pytest.raises(QueueFullError):
            await queue.push([b"c", b"d", b"e"])
        pop = queue.pop(5)
        first = await pop
        assert await pop is first
        assert first.data == [b"b"]


@pytest.mark.anyio
async def test_awaiting_many_responses_concurrently(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        pushes = [queue.push([b"%d" % index]) for index in range(100)]
        pops = [queue.pop(1) for _ in range(100)]
        results: dict[int, list[bytes] | None] = {}

        async def wait_pop(index: int) -> None:
            results[index] = (await pops[index]).data

        async with anyio.create_task_group() as group:
            for push in pushes:
                group.start_soon(_await_response, push)
            for index in range(100):
                group.start_soon(wait_pop, index)
    assert [results[index] for index in range(100)] == [[b"%d" % i] for i in range(100)]


async def _await_response(response: Response) -> None:
    await response


@pytest.mark.anyio
async def test_awaiting_mpmc_responses(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        await queue.add([b"a", b"b"])
        variant = await queue.next("r", Oldest, 5)
        assert isinstance(variant, MpmcResponseVariant)
        assert variant.data == ([b"a", b"b"], False)
        assert (await queue.labels).labels == ["r"]
        assert (await queue.len).len == 2
        assert (await queue.remove_label("r")).removed_label is True


@GATED_WORKER
@pytest.mark.anyio
async def test_get_in_event_loop_raises_instead_of_blocking(
    queue_path: str, gated_clock: GatedClock
) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=gated_clock) as queue:
        pending = queue.add([b"a"])
        assert not pending.is_ready
        # get() would block the loop until the gate opens: it must refuse.
        with pytest.raises(QueueError, match="await"):
            pending.get()
        gated_clock.gate.set()
        await pending
        ready = queue.len  # answered by the worker, after the add
        assert (await ready).len == 1
        assert ready.is_ready
        # Refused even when the result is ready, so the mistake shows at once.
        with pytest.raises(QueueError):
            ready.get()
        assert (await queue.next("r", Oldest, 5)).data == ([b"a"], False)


@GATED_WORKER
@pytest.mark.anyio
async def test_cancelled_await_leaves_the_response_readable(
    queue_path: str, gated_clock: GatedClock
) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=gated_clock) as queue:
        added = queue.add([b"a", b"b"])
        read = queue.next("r", Oldest, 5)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await read
        assert scope.cancelled_caught
        gated_clock.gate.set()
        await added
        # The operation went on; its result is still delivered.
        assert (await read).data == ([b"a", b"b"], False)


@pytest.mark.anyio
async def test_get_from_a_worker_thread_of_async_code(queue_path: str) -> None:
    # get() is only refused on the loop's own thread.
    with fifo(queue_path) as queue:
        queue.push([b"a"])
        variant = await anyio.to_thread.run_sync(lambda: queue.pop(1).get())
        assert variant.data == [b"a"]


def test_get_outside_event_loop_after_async_use(queue_path: str) -> None:
    async def use() -> None:
        with fifo(queue_path) as queue:
            await queue.push([b"a"])

    anyio.run(use)
    with fifo(queue_path) as queue:
        assert queue.pop().get().data == [b"a"]
