"""Behaviour of the nonblocking face, ``rocksq_aio.nonblocking``.

Every method returns a Response at once; a worker thread per queue executes
the operations. These tests check what RocksQ's nonblocking module promises
(and what it gets wrong: silently dropped pushes over capacity), plus the
additions of ours: errors reported by ``get()``, awaitable Responses, and a
clear refusal of ``get()`` on an event loop's thread.

Here: the FIFO basics, capacity, ordering, close and reopen. Dropped
responses and the in-flight limit are in test_nonblocking_worker.py, the MPMC
queue in test_nonblocking_mpmc.py, awaiting Responses in test_nonblocking_async.py.
"""

from __future__ import annotations

import pytest

from rocksq_aio import QueueClosedError, QueueFullError, StartPosition
from rocksq_aio.nonblocking import (
    MpmcQueue,
    MpmcResponse,
    MpmcResponseVariant,
    PersistentQueueWithCapacity,
    Response,
    ResponseVariant,
)

from support.clock import FakeClock
from support.nonblocking import GatedClock, fifo, items

pytestmark = pytest.mark.contract

Oldest = StartPosition.Oldest


# ---------------------------------------------------------------- FIFO basics


def test_push_and_pop_return_responses(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path, 100, 10) as queue:
        pushed = queue.push([b"a", b"b", b"c"])
        assert isinstance(pushed, Response)
        variant = pushed.get()
        assert isinstance(variant, ResponseVariant)
        assert pushed.is_ready
        assert variant.data is None
        assert variant.len is None
        assert variant.size is None

        popped = queue.pop(2)
        assert isinstance(popped, Response)
        result = popped.get()
        assert popped.is_ready
        assert result.data == [b"a", b"b"]
        assert isinstance(result.data, list)
        assert result.len is None
        assert result.size is None
        assert queue.pop().get().data == [b"c"]
        assert queue.pop(5).get().data == []


def test_default_pop_takes_one(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        queue.push([b"a", b"b"]).get()
        assert queue.pop().get().data == [b"a"]


@pytest.mark.rocksdb_only
def test_len_payload_size_and_disk_size_are_responses(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        length = queue.len
        assert isinstance(length, Response)
        assert length.get().len == 0
        assert queue.payload_size.get().size == 0
        assert queue.is_empty

        queue.push([b"abc", b"de"]).get()
        length_variant = queue.len.get()
        assert length_variant.len == 2
        assert length_variant.data is None
        assert length_variant.size is None
        payload = queue.payload_size.get()
        assert payload.size == 5
        assert payload.len is None
        disk = queue.disk_size
        assert isinstance(disk, Response)
        disk_variant = disk.get()
        assert isinstance(disk_variant.size, int)
        assert disk_variant.size > 0
        assert not queue.is_empty

        queue.pop(1).get()
        assert queue.len.get().len == 1
        assert queue.payload_size.get().size == 2


def test_sizes_reflect_operations_issued_before_without_waiting(queue_path: str) -> None:
    # RocksQ executes len/payload_size in order after the operations issued
    # before them, so a program written for it may rely on this.
    with fifo(queue_path) as queue:
        queue.push([b"abc"])
        assert queue.len.get().len == 1
        queue.push([b"de", b"f"])
        assert queue.payload_size.get().size == 6
        queue.pop(2)
        assert queue.len.get().len == 1


def test_response_can_be_read_more_than_once(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        queue.push([b"a", b"b"]).get()
        popped = queue.pop(2)
        first = popped.get()
        assert popped.get() is first
        assert popped.try_get() is first
        assert first.data == [b"a", b"b"]
        # Reading the response again pops nothing more.
        assert queue.len.get().len == 0


def test_try_get_returns_the_result_once_ready(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        pushed = queue.push([b"a"])
        pushed.get()
        popped = queue.pop()
        variant = popped.get()
        assert popped.try_get() is variant
        assert variant.data == [b"a"]


def test_try_get_is_none_until_ready(queue_path: str, gated_clock: GatedClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=gated_clock) as queue:
        added = queue.add([b"a", b"b"])
        gated_clock.wait_until_entered()  # the worker is executing the add, held
        read = queue.next("r", Oldest, 10)
        assert isinstance(read, MpmcResponse)
        assert not added.is_ready
        assert not read.is_ready
        assert added.try_get() is None
        assert read.try_get() is None

        gated_clock.gate.set()
        variant = read.get()
        assert read.is_ready
        assert added.is_ready
        assert variant.data == ([b"a", b"b"], False)
        assert read.try_get() is variant
        assert isinstance(added.try_get(), MpmcResponseVariant)


def test_arguments_are_checked_at_call_time(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        with pytest.raises(TypeError):
            queue.push(b"not a list")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            queue.push(["not bytes"])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            queue.pop(0)
        with pytest.raises(TypeError):
            queue.pop(1, no_gil="yes")  # type: ignore[arg-type]
        # Nothing was submitted, nothing is stuck.
        assert queue.inflight_ops == 0
        queue.push([b"ok"]).get()
        assert queue.pop(10).get().data == [b"ok"]


def test_bytes_like_items_are_accepted(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        queue.push([bytearray(b"ab"), memoryview(b"cd"), b"ef"]).get()  # type: ignore[list-item]
        popped = queue.pop(3).get().data
        assert popped == [b"ab", b"cd", b"ef"]
        assert popped is not None
        assert all(type(item) is bytes for item in popped)


# ---------------------------------------------------------------- capacity


def test_push_over_capacity_raises_queue_full(queue_path: str) -> None:
    with fifo(queue_path, max_elements=3) as queue:
        queue.push([b"a", b"b"]).get()
        refused = queue.push([b"c", b"d"])
        with pytest.raises(QueueFullError):
            refused.get()
        assert refused.is_ready
        # Reported again on every read, and by try_get().
        with pytest.raises(QueueFullError):
            refused.get()
        with pytest.raises(QueueFullError):
            refused.try_get()
        # Nothing of the refused push was written.
        assert queue.len.get().len == 2
        assert queue.payload_size.get().size == 2
        assert queue.pop(10).get().data == [b"a", b"b"]


def test_queue_full_error_is_a_runtime_error(queue_path: str) -> None:
    # Code written for RocksQ catches RuntimeError.
    with fifo(queue_path, max_elements=1) as queue:
        queue.push([b"a"]).get()
        with pytest.raises(RuntimeError):
            queue.push([b"b"]).get()


def test_refused_push_among_back_to_back_operations(queue_path: str) -> None:
    with fifo(queue_path, max_elements=3) as queue:
        first = queue.push([b"a", b"b"])
        too_many = queue.push([b"c", b"d"])
        fits = queue.push([b"c"])
        full_again = queue.push([b"d"])
        popped = queue.pop(1)
        fits_after_pop = queue.push([b"d"])
        rest = queue.pop(10)
        first.get()
        with pytest.raises(QueueFullError):
            too_many.get()
        fits.get()
        with pytest.raises(QueueFullError):
            full_again.get()
        assert popped.get().data == [b"a"]
        fits_after_pop.get()
        assert rest.get().data == [b"b", b"c", b"d"]


def test_capacity_is_kept_across_reopen(queue_path: str) -> None:
    with fifo(queue_path, max_elements=2) as queue:
        queue.push([b"a", b"b"]).get()
    with fifo(queue_path, max_elements=2) as queue:
        with pytest.raises(QueueFullError):
            queue.push([b"c"]).get()
        assert queue.pop(5).get().data == [b"a", b"b"]


# ---------------------------------------------------------------- ordering


def test_back_to_back_pops_are_fifo_and_exact(queue_path: str) -> None:
    expected = items(1000)
    with fifo(queue_path) as queue:
        # Pushes of various batch sizes, none waited for.
        batches = [1, 7, 2, 50, 3, 100, 1, 37, 300, 499]
        assert sum(batches) == len(expected)
        offset = 0
        pushes = []
        for size in batches:
            pushes.append(queue.push(expected[offset : offset + size]))
            offset += size
        # Pops of various sizes, issued back to back without waiting.
        sizes = [(index % 5) + 1 for index in range(400)]
        pops = [queue.pop(size) for size in sizes]
        for push in pushes:
            push.get()
        results = [pop.get().data for pop in pops]

    received: list[bytes] = []
    remaining = len(expected)
    for size, result in zip(sizes, results, strict=True):
        assert result is not None
        # Each pop takes exactly min(size, what is left), in order.
        assert len(result) == min(size, remaining)
        remaining -= len(result)
        received.extend(result)
    assert received == expected


def test_interleaved_pushes_and_pops_keep_order(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        responses = []
        for index in range(200):
            responses.append(("push", queue.push([b"%d" % index])))
            if index % 3 == 2:
                responses.append(("pop", queue.pop(2)))
        popped: list[bytes] = []
        for kind, response in responses:
            variant = response.get()
            if kind == "pop":
                assert variant.data is not None
                popped.extend(variant.data)
        popped.extend(queue.pop(1000).get().data or [])
    assert popped == [b"%d" % index for index in range(200)]


# ---------------------------------------------------------------- close and reopen


def test_close_then_reopen_sees_everything(queue_path: str) -> None:
    queue = fifo(queue_path, max_elements=100)
    queue.push([b"a", b"b"]).get()
    queue.push([b"c"])
    queue.pop(1)
    queue.push([b"d", b"e"])
    queue.close()
    with fifo(queue_path, max_elements=100) as reopened:
        assert reopened.len.get().len == 4
        assert reopened.payload_size.get().size == 4
        assert reopened.pop(10).get().data == [b"b", b"c", b"d", b"e"]
    with fifo(queue_path, max_elements=100) as reopened:
        assert reopened.len.get().len == 0


def test_operations_after_close_raise(queue_path: str) -> None:
    queue = fifo(queue_path)
    queue.push([b"a"]).get()
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.push([b"b"]).get()
    with pytest.raises(QueueClosedError):
        queue.pop().get()


def test_mpmc_close_then_reopen_keeps_items_and_positions(
    queue_path: str, clock: FakeClock
) -> None:
    queue = MpmcQueue(queue_path, 0, 100, clock=clock)
    queue.add([b"a", b"b", b"c"])
    queue.next("r1", Oldest, 2)
    queue.next("r2", Oldest, 1)
    queue.close()
    with MpmcQueue(queue_path, 0, 100, clock=clock) as reopened:
        assert reopened.len.get().len == 3
        assert reopened.labels.get().labels == ["r1", "r2"]
        assert reopened.next("r1", Oldest, 10).get().data == ([b"c"], False)
        assert reopened.next("r2", Oldest, 10).get().data == ([b"b", b"c"], False)
