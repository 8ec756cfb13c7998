"""Behaviour of the nonblocking face, ``rocksq_aio.nonblocking``.

Every method returns a Response at once; a worker thread per queue executes
the operations. These tests check what RocksQ's nonblocking module promises
(and what it gets wrong: silently dropped pushes over capacity), plus the
additions of ours: errors reported by ``get()``, awaitable Responses, and a
clear refusal of ``get()`` on an event loop's thread.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

from rocksq_aio import (
    QueueClosedError,
    QueueError,
    QueueFullError,
    StartPosition,
)
from rocksq_aio.nonblocking import (
    MpmcQueue,
    MpmcResponse,
    MpmcResponseVariant,
    PersistentQueueWithCapacity,
    Response,
    ResponseVariant,
)

from support.clock import FakeClock
from support.differences import GATED_WORKER, NO_CLOCK

pytestmark = pytest.mark.contract

Oldest = StartPosition.Oldest
Newest = StartPosition.Newest
GATE_TIMEOUT = 30.0


class GatedClock:
    """A clock that holds the worker thread (which reads it while executing an
    MPMC operation) until the test opens the gate: makes "not ready yet" states
    deterministic without sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self) -> float:
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise AssertionError("the test never opened the gate")
        return self.now

    def wait_until_entered(self) -> None:
        assert self.entered.wait(GATE_TIMEOUT), "the worker never started the operation"


@pytest.fixture
def gated_clock() -> Iterator[GatedClock]:
    clock = GatedClock()
    yield clock
    clock.gate.set()  # never leave a worker stuck, whatever the test did


def fifo(
    path: str, max_elements: int = 1_000_000, max_inflight_ops: int = 1000
) -> PersistentQueueWithCapacity:
    return PersistentQueueWithCapacity(path, max_elements, max_inflight_ops)


def items(count: int, prefix: str = "item") -> list[bytes]:
    return [f"{prefix}-{index:05d}".encode() for index in range(count)]


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


@GATED_WORKER
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


# ---------------------------------------------------------------- dropped responses


def test_dropping_unfinished_responses_loses_nothing(queue_path: str) -> None:
    expected = items(1000)
    with fifo(queue_path) as queue:
        for item in expected:
            queue.push([item])  # the Response is discarded at once
        dropped = [queue.push([item]) for item in items(1000, "dropped")]
        del dropped
        gc.collect()
        # Later operations still work and see every pushed item.
        popped = queue.pop(5000).get().data
        assert popped == expected + items(1000, "dropped")
        queue.push([b"after"]).get()
        assert queue.len.get().len == 1
        assert queue.pop().get().data == [b"after"]


def test_dropped_pop_responses_still_pop(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        queue.push(items(10)).get()
        for _ in range(4):
            queue.pop(1)  # discarded: the items are popped all the same
        assert queue.pop(10).get().data == items(10)[4:]


def test_close_finishes_operations_not_waited_for(queue_path: str) -> None:
    queue = fifo(queue_path)
    for item in items(500):
        queue.push([item])
    queue.close()
    with fifo(queue_path) as reopened:
        assert reopened.len.get().len == 500
        assert reopened.pop(1000).get().data == items(500)


def test_calls_after_the_worker_went_idle_are_still_run(queue_path: str) -> None:
    """The worker thread leaves its loop when nothing is queued; a later call restarts it."""
    with fifo(queue_path) as queue:
        for round_number in range(20):
            item = b"%d" % round_number
            queue.push([item]).get()
            time.sleep(0.001)  # lets the worker run dry
            assert queue.pop().get().data == [item]
            assert queue.inflight_ops == 0


def test_an_unexpected_worker_failure_is_reported_by_get_not_a_hang(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fifo(queue_path) as queue:
        queue.push([b"kept"]).get()
        core = queue._engine
        real_drain = core.drain

        def broken_drain() -> None:
            monkeypatch.setattr(core, "drain", real_drain)
            raise ZeroDivisionError("a bug in the worker")

        monkeypatch.setattr(core, "drain", broken_drain)
        failed = queue.push([b"never stored"])
        with pytest.raises(ZeroDivisionError, match="a bug in the worker"):
            failed.get()
        # The failed push was withdrawn: it is not run by a later group.
        assert queue.pop(10).get().data == [b"kept"]
        assert queue.pop(10).get().data == []
        assert queue.inflight_ops == 0


# ---------------------------------------------------------------- in-flight limit


def test_calls_beyond_max_inflight_ops_block_and_all_complete(queue_path: str) -> None:
    per_thread = 200
    with fifo(queue_path, max_inflight_ops=2) as queue:
        failures: list[BaseException] = []

        def produce(name: str) -> None:
            try:
                responses = [queue.push([f"{name}-{i}".encode()]) for i in range(per_thread)]
                for response in responses:
                    response.get()
            except BaseException as error:  # reported to the test thread
                failures.append(error)

        threads = [threading.Thread(target=produce, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
        assert queue.inflight_ops == 0
        assert queue.len.get().len == 4 * per_thread
        popped = queue.pop(10 * per_thread).get().data
    assert popped is not None
    assert len(popped) == 4 * per_thread
    # Each producer's items keep their order.
    for n in range(4):
        mine = [item for item in popped if item.startswith(f"t{n}-".encode())]
        assert mine == [f"t{n}-{i}".encode() for i in range(per_thread)]


@GATED_WORKER
def test_caller_blocks_while_max_inflight_ops_are_running(
    queue_path: str, gated_clock: GatedClock
) -> None:
    with MpmcQueue(queue_path, 0, 2, clock=gated_clock) as queue:
        first = queue.add([b"a"])
        gated_clock.wait_until_entered()
        second = queue.add([b"b"])
        assert queue.inflight_ops == 2
        third: list[MpmcResponse] = []
        caller = threading.Thread(target=lambda: third.append(queue.add([b"c"])))
        caller.start()
        caller.join(0.1)
        # Two operations are in flight: the third call has not returned.
        assert caller.is_alive()
        assert third == []

        gated_clock.gate.set()
        caller.join(GATE_TIMEOUT)
        assert not caller.is_alive()
        first.get()
        second.get()
        third[0].get()
        assert queue.next("r", Oldest, 10).get().data == ([b"a", b"b", b"c"], False)
        assert queue.inflight_ops == 0


def test_get_returns_only_once_the_operation_is_done_under_contention(
    queue_path: str,
) -> None:
    # A tiny batch_bytes splits the pending operations into many groups, and
    # a tiny switch interval interleaves the callers' threads as much as
    # possible: get() must still wait for its own operation, never return a
    # result that is not there yet.
    rounds = 300
    threads_count = 8
    problems: list[str] = []
    popped: list[bytes] = []
    popped_lock = threading.Lock()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        queue = PersistentQueueWithCapacity(queue_path, 1_000_000, 1000, batch_bytes=1)
        with queue:

            def work(name: str) -> None:
                for index in range(rounds):
                    pushed = queue.push([f"{name}-{index}".encode()])
                    pushed.get()
                    if not pushed.is_ready:
                        problems.append("push: get() returned before the push was done")
                    pop = queue.pop(1)
                    data = pop.get().data
                    if not pop.is_ready or data is None:
                        problems.append(f"pop: get() returned {data!r} before it was done")
                    else:
                        with popped_lock:
                            popped.extend(data)

            threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(threads_count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            leftover = queue.pop(10 * rounds * threads_count).get().data or []
    finally:
        sys.setswitchinterval(old_interval)
    assert problems[:3] == []
    # No item was lost or duplicated.
    expected = {f"t{n}-{i}".encode() for n in range(threads_count) for i in range(rounds)}
    assert sorted(popped + leftover) == sorted(expected)


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


# ---------------------------------------------------------------- MPMC


def test_mpmc_add_next_and_variant_fields(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        added = queue.add([b"a", b"b", b"c"])
        assert isinstance(added, MpmcResponse)
        add_variant = added.get()
        assert isinstance(add_variant, MpmcResponseVariant)
        assert add_variant.data is None
        assert add_variant.labels is None
        assert add_variant.removed_label is None
        assert add_variant.len is None
        assert add_variant.size is None

        read = queue.next("r", Oldest, 2).get()
        assert read.data == ([b"a", b"b"], False)
        assert isinstance(read.data, tuple)
        assert read.labels is None
        assert read.removed_label is None
        assert read.len is None
        assert queue.next("r").get().data == ([b"c"], False)
        assert queue.next("r", Oldest, 5).get().data == ([], False)
        # Reading removes nothing from the stream.
        assert queue.len.get().len == 3


@pytest.mark.rocksdb_only
def test_mpmc_properties_are_responses(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        assert queue.is_empty
        assert queue.labels.get().labels == []
        assert queue.len.get().len == 0
        queue.add([b"a"]).get()
        queue.next("zeta").get()
        queue.next("alpha").get()
        labels = queue.labels
        assert isinstance(labels, MpmcResponse)
        assert labels.get().labels == ["alpha", "zeta"]
        length = queue.len.get()
        assert length.len == 1
        assert length.labels is None
        disk = queue.disk_size.get()
        assert disk.size is not None
        assert disk.size > 0
        assert not queue.is_empty


def test_mpmc_labels_reflect_operations_issued_before_without_waiting(
    queue_path: str, clock: FakeClock
) -> None:
    # As in RocksQ, reads of labels and len come after the operations issued before.
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        queue.add([b"a", b"b"])
        assert queue.len.get().len == 2
        queue.next("r")
        assert queue.labels.get().labels == ["r"]
        queue.remove_label("r")
        assert queue.labels.get().labels == []


def test_mpmc_labels_are_independent(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        queue.add([b"a", b"b", b"c"])
        first = queue.next("one", Oldest, 2)
        second = queue.next("two", Oldest, 1)
        third = queue.next("one", Oldest, 2)
        assert first.get().data == ([b"a", b"b"], False)
        assert second.get().data == ([b"a"], False)
        assert third.get().data == ([b"c"], False)


def test_mpmc_start_positions(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        assert queue.next("early", Newest, 5).get().data == ([], False)
        queue.add([b"a", b"b", b"c"])
        # A new label at Newest starts at the last stored element.
        assert queue.next("new", Newest, 5).get().data == ([b"c"], False)
        assert queue.next("old", Oldest, 5).get().data == ([b"a", b"b", b"c"], False)
        # One created on an empty queue reads what was added after.
        assert queue.next("early", Oldest, 5).get().data == ([b"a", b"b", b"c"], False)
        # An existing label ignores the start position.
        queue.add([b"d"])
        assert queue.next("old", Newest, 5).get().data == ([b"d"], False)


def test_mpmc_remove_label(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        queue.add([b"a", b"b"])
        queue.next("r", Oldest, 1).get()
        removed = queue.remove_label("r")
        assert isinstance(removed, MpmcResponse)
        variant = removed.get()
        assert variant.removed_label is True
        assert variant.data is None
        assert queue.remove_label("r").get().removed_label is False
        assert queue.remove_label("never").get().removed_label is False
        assert queue.labels.get().labels == []
        # A removed label starts again from scratch.
        assert queue.next("r", Oldest, 5).get().data == ([b"a", b"b"], False)


@NO_CLOCK
def test_mpmc_ttl_expiry(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, 10, clock=clock) as queue:
        queue.add([b"a", b"b"]).get()
        queue.next("reader-all", Oldest, 10).get()
        clock.advance(5)
        queue.add([b"c"]).get()
        clock.advance(6)  # a and b are 11 s old, c is 6 s old
        assert queue.next("late", Oldest, 10).get().data == ([b"c"], False)
        assert queue.next("reader-all", Oldest, 10).get().data == ([b"c"], False)
        assert queue.len.get().len == 1

    with MpmcQueue(queue_path, 10, 10, clock=clock) as queue:
        assert queue.next("behind", Oldest, 1).get().data == ([b"c"], False)
        clock.advance(11)  # c expired too
        queue.add([b"d"])
        assert queue.next("slow", Oldest, 10).get().data == ([b"d"], False)
        # "behind" had read c before it expired: nothing to report.
        assert queue.next("behind", Oldest, 10).get().data == ([b"d"], False)


@NO_CLOCK
def test_mpmc_expired_flag_reported_once(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, 10, clock=clock) as queue:
        queue.add([b"a", b"b"])
        queue.next("r", Oldest, 1).get()  # reads a, not b
        clock.advance(11)
        queue.add([b"c"])
        assert queue.next("r", Oldest, 10).get().data == ([b"c"], True)
        assert queue.next("r", Oldest, 10).get().data == ([], False)


def test_mpmc_ordering_of_back_to_back_reads(queue_path: str, clock: FakeClock) -> None:
    expected = items(300)
    with MpmcQueue(queue_path, 0, 1000, clock=clock) as queue:
        for offset in range(0, 300, 30):
            queue.add(expected[offset : offset + 30])
        reads = [queue.next("r", Oldest, (index % 4) + 1) for index in range(200)]
        received: list[bytes] = []
        for response in reads:
            data = response.get().data
            assert data is not None
            received.extend(data[0])
    assert received == expected


# ---------------------------------------------------------------- async code


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
