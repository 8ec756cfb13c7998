"""The memory engine on its own, driven directly through the dispatcher API:
operations, groups, give-backs, the registry of names, TTL with a fake clock.

Its differential tests against the RocksDB engine are in
test_memory_differential.py (random sequences) and test_memory_scenarios.py
(the sequences a random search seldom finds).
"""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rocksq_aio._dispatch import (
    Operation,
    OperationKind,
    Reservation,
    Stage,
    add_operation,
    give_back_operation,
    next_operation,
    pop_operation,
    push_operation,
    remove_label_operation,
    reserve_label_operation,
    reserve_operation,
    settle_operation,
)
from rocksq_aio._engine import FifoEngine, MpmcEngine
from rocksq_aio._errors import QueueClosedError, QueueError, QueueFullError, QueueLockedError
from rocksq_aio._options import FifoOptions, MpmcOptions
from rocksq_aio._types import StartPosition
from rocksq_aio.memory import CAPABILITIES, MemoryFifo, MemoryMpmc, remove
from rocksq_aio.rocksdb import RocksDBFifo, RocksDBMpmc

from support.clock import FakeClock

OLDEST, NEWEST = StartPosition.Oldest, StartPosition.Newest


@pytest.fixture
def name() -> Iterator[str]:
    """A queue name of its own, removed afterwards."""
    queue_name = f"test-{uuid.uuid4().hex}"
    yield queue_name
    gc.collect()  # a handle a test forgot frees its name when collected
    # A failed test's traceback may keep its handle alive: its failure says enough.
    with contextlib.suppress(QueueLockedError):
        remove(queue_name)


def drain_all(engine: Any, *operations: Operation) -> None:
    """Submit ``operations`` and drain until every one is done: one group when they fit."""
    for operation in operations:
        engine.submit(operation)
    while any(operation.stage is not Stage.DONE for operation in operations):
        engine.drain()


# ---------------------------------------------------------------- FIFO


def test_protocols_capabilities_and_path(name: str) -> None:
    fifo: FifoEngine = MemoryFifo(name, FifoOptions())
    assert fifo.path == f"memory://{name}"
    assert fifo.capabilities is CAPABILITIES
    assert CAPABILITIES.name == "memory" and not CAPABILITIES.durable
    assert fifo.disk_size == 0 and not fifo.closed
    fifo.close()
    mpmc: MpmcEngine = MemoryMpmc(name + "-m", MpmcOptions(ttl=1.5))
    assert mpmc.ttl == 1.5 and mpmc.path == f"memory://{name}-m"
    mpmc.close()
    remove(name + "-m")


def test_push_pop_and_counters(name: str) -> None:
    queue = MemoryFifo(name, FifoOptions(max_elements=3))
    queue.push([b"a", bytearray(b"bc")])
    queue.run(push_operation([memoryview(b"def")]))
    assert (queue.len, len(queue), queue.payload_size, queue.arrivals) == (3, 3, 6, 2)
    with pytest.raises(QueueFullError):
        queue.push([b"x"])
    assert queue.len == 3 and queue.arrivals == 2  # all or nothing
    queue.push([])  # an empty push is a no-op
    assert queue.arrivals == 2
    assert queue.pop(2) == [b"a", b"bc"]
    assert queue.run(pop_operation(5)) == [b"def"]
    assert queue.pop() == [] and queue.is_empty and queue.payload_size == 0
    with pytest.raises(TypeError):
        queue.push([b"a"], no_gil=1)
    with pytest.raises(ValueError):
        queue.pop(0)
    queue.close()


def test_a_group_commits_each_push_on_its_own_and_reads_see_earlier_ones(name: str) -> None:
    queue = MemoryFifo(name, FifoOptions(max_elements=3))
    first, too_big, popped, last = (
        push_operation([b"a", b"b"]),
        push_operation([b"c", b"d"]),
        pop_operation(1),
        push_operation([b"e", b"f"]),
    )
    drain_all(queue, first, too_big, popped, last)
    assert first.outcome() is None and last.outcome() is None
    with pytest.raises(QueueFullError):
        too_big.outcome()
    assert popped.outcome() == [b"a"]
    assert queue.pop(5) == [b"b", b"e", b"f"]
    assert queue.arrivals == 1  # one commit made elements available
    queue.close()


def test_reserve_ack_and_nack(name: str) -> None:
    queue = MemoryFifo(name, FifoOptions())
    queue.push([b"a", b"b", b"c", b"d"])
    first: Reservation = queue.run(reserve_operation(2))
    second: Reservation = queue.run(reserve_operation(1))
    assert (first.items, second.items, queue.pending, queue.len) == ([b"a", b"b"], [b"c"], 3, 1)
    queue.run(settle_operation(second, ack=True))
    queue.run(settle_operation(first, ack=False))  # back at the head, in order
    assert first.settled and second.settled and queue.pending == 0
    queue.run(settle_operation(first, ack=True))  # settled already: nothing happens
    assert queue.pop(5) == [b"a", b"b", b"d"]
    empty: Reservation = queue.run(reserve_operation(3))
    assert empty.items == [] and queue.pending == 0
    queue.close()


def test_abandoned_reads_are_given_back(name: str) -> None:
    queue = MemoryFifo(name, FifoOptions())
    queue.push([b"a", b"b", b"c"])
    pop = pop_operation(2)
    assert queue.run(pop) == [b"a", b"b"]
    give_back = queue.abandon(pop)
    assert give_back is not None and give_back.kind is OperationKind.GIVE_BACK
    queue.run(give_back)
    assert pop.result == [] and queue.pop(5) == [b"a", b"b", b"c"]
    queue.push([b"x", b"y"])
    partly = pop_operation(2)
    queue.run(partly)
    queue.run(give_back_operation(partly, 1))  # the first one was delivered
    assert partly.result == [b"x"] and queue.pop(5) == [b"y"]
    queue.push([b"r"])
    reserve = reserve_operation(1)
    queue.run(reserve)
    give_back = queue.abandon(reserve)
    assert give_back is not None
    queue.run(give_back)  # an abandoned reservation is nacked
    assert queue.pending == 0 and queue.pop() == [b"r"]
    # Withdrawn before it started: it never runs.
    queue.push([b"w"])
    withdrawn = pop_operation(1)
    queue.submit(withdrawn)
    assert queue.abandon(withdrawn) is None and withdrawn.stage is Stage.WITHDRAWN
    queue.drain()
    assert queue.pop() == [b"w"]
    queue.close()


def test_closed_queue_refuses_everything(name: str) -> None:
    queue = MemoryFifo(name, FifoOptions())
    queue.push([b"a"])
    pending = pop_operation(1)
    queue.submit(pending)
    queue.close()
    queue.close()  # idempotent
    assert queue.closed and queue.len == 1
    queue.drain()
    with pytest.raises(QueueClosedError):
        pending.outcome()
    for call in (
        lambda: queue.push([b"b"]),
        lambda: queue.push([]),
        lambda: queue.pop(),
        lambda: queue.run(reserve_operation(1)),
        lambda: queue.submit(push_operation([b"c"])),
    ):
        with pytest.raises(QueueClosedError):
            call()


def test_names_hold_their_data_and_one_handle(name: str) -> None:
    queue = MemoryFifo(name, FifoOptions())
    queue.push([b"a", b"b"])
    with pytest.raises(QueueLockedError):
        MemoryFifo(name, FifoOptions())
    with pytest.raises(QueueLockedError):
        remove(name)
    reservation: Reservation = queue.run(reserve_operation(1))
    queue.close()
    with pytest.raises(QueueError, match=f"memory://{name} holds a FIFO queue, not an MPMC"):
        MemoryMpmc(name, MpmcOptions())
    # Reopened with a smaller capacity: the data and the unsettled reservation come back.
    queue = MemoryFifo(name, FifoOptions(max_elements=1))
    assert (queue.len, queue.pending, queue.max_elements) == (2, 0, 1)
    assert reservation.items == [b"a"]
    with pytest.raises(QueueFullError):
        queue.push([b"c"])
    assert queue.pop(5) == [b"a", b"b"]
    queue.close()
    remove(name)
    remove(name)  # unknown: nothing happens
    queue = MemoryFifo(name, FifoOptions())
    assert queue.len == 0
    queue.close()


def test_bad_options_raise_what_rocksdb_raises(name: str, queue_path: str) -> None:
    bad = [
        FifoOptions(max_elements=0),
        FifoOptions(max_elements=True),
        FifoOptions(sync="yes"),
        FifoOptions(batch_bytes=0),
        FifoOptions(cache_bytes=-1),
        FifoOptions(directory_mode=0o10000),
    ]
    for options in bad:
        with pytest.raises(Exception) as memory_error:
            MemoryFifo(name, options)
        with pytest.raises(Exception) as rocksdb_error:
            RocksDBFifo(queue_path, options)
        assert memory_error.type is rocksdb_error.type
        assert str(memory_error.value) == str(rocksdb_error.value)
    for mpmc_options in [MpmcOptions(ttl=-1), MpmcOptions(clock=3), MpmcOptions(sync=1)]:
        with pytest.raises(Exception) as memory_error:
            MemoryMpmc(name, mpmc_options)
        with pytest.raises(Exception) as rocksdb_error:
            RocksDBMpmc(queue_path, mpmc_options)
        assert memory_error.type is rocksdb_error.type
    MemoryFifo(name, FifoOptions()).close()  # nothing was held by the failed opens


# ---------------------------------------------------------------- MPMC


def test_labels_positions_and_start_positions(name: str) -> None:
    queue = MemoryMpmc(name, MpmcOptions())
    assert queue.next("empty", NEWEST) == ([], False)  # created at the tail
    queue.add([b"a", b"b", b"c"])
    assert queue.next("new", NEWEST, 5) == ([b"c"], False)  # the last stored one
    assert queue.next("old", OLDEST, 2) == ([b"a", b"b"], False)
    assert queue.next("old", NEWEST, 5) == ([b"c"], False)  # known: start ignored
    assert queue.next("empty", OLDEST, 5) == ([b"a", b"b", b"c"], False)
    assert queue.labels == ["empty", "new", "old"]
    assert queue.remove_label("new") and not queue.remove_label("new")
    assert queue.labels == ["empty", "old"] and queue.len == 3
    with pytest.raises(ValueError):
        queue.next("")
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.next("")  # as on RocksDB: closed is reported before the label is checked


def test_mpmc_group_reads_see_earlier_adds(name: str) -> None:
    queue = MemoryMpmc(name, MpmcOptions())
    add, read, removed, again = (
        add_operation([b"a", b"b"]),
        next_operation("x", OLDEST, 5),
        remove_label_operation("x"),
        next_operation("x", NEWEST, 5),
    )
    drain_all(queue, add, read, removed, again)
    assert read.outcome() == ([b"a", b"b"], False)
    assert removed.outcome() is True and again.outcome() == ([b"b"], False)
    assert queue.arrivals == 1
    queue.close()


def test_mpmc_reservations_and_give_backs(name: str) -> None:
    queue = MemoryMpmc(name, MpmcOptions())
    queue.add([b"a", b"b", b"c", b"d"])
    reservation: Reservation = queue.run(reserve_label_operation("x", OLDEST, 2))
    assert reservation.label == "x" and queue.pending("x") == 2 and queue.pending("y") == 0
    assert queue.next("x", OLDEST, 1) == ([b"c"], False)
    queue.run(settle_operation(reservation, ack=False))  # delivered first to the same label
    assert queue.pending("x") == 0
    assert queue.next("x", OLDEST, 5) == ([b"a", b"b"], False)
    assert queue.next("x", OLDEST, 5) == ([b"d"], False)
    read = next_operation("y", OLDEST, 3)
    queue.run(read)
    queue.run(give_back_operation(read, 1))  # nothing read since: the label moves back
    assert read.result == ([b"a"], False)
    assert queue.next("y", OLDEST, 5) == ([b"b", b"c", b"d"], False)
    queue.close()


def test_mpmc_reopen_gives_reservations_back_to_their_label(name: str) -> None:
    queue = MemoryMpmc(name, MpmcOptions())
    queue.add([b"a", b"b", b"c"])
    queue.run(reserve_label_operation("x", OLDEST, 1))
    queue.run(reserve_label_operation("x", OLDEST, 1))
    queue.close()
    with pytest.raises(QueueError, match="holds an MPMC queue, not a FIFO queue"):
        MemoryFifo(name, FifoOptions())
    queue = MemoryMpmc(name, MpmcOptions())
    assert queue.pending("x") == 0
    assert queue.next("x", OLDEST, 5) == ([b"a", b"b"], False)
    assert queue.next("x", OLDEST, 5) == ([b"c"], False)
    queue.close()


def test_ttl_expiry_with_a_fake_clock(name: str, clock: FakeClock) -> None:
    queue = MemoryMpmc(name, MpmcOptions(ttl=0.0015, clock=clock))  # 2 ms, rounded up
    queue.add([b"a"])
    queue.next("reader", OLDEST, 0 + 1)
    queue.next("late", NEWEST, 1)  # reads b"a"
    queue.remove_label("late")
    clock.advance(0.001)
    queue.add([b"b"])
    queue.next("slow", OLDEST, 0 + 1)  # reads b"a"; b"b" left unread
    clock.advance(0.0015)
    assert queue.len == 2  # expired elements leave at the next add, next or remove_label
    queue.add([b"c"])
    assert queue.len == 2  # b"a" expired
    clock.advance(0.001)
    assert not queue.remove_label("nobody")  # b"b" expires: "slow" had not read it
    assert queue.next("slow", OLDEST, 5) == ([b"c"], True)
    assert queue.next("slow", OLDEST, 5) == ([], False)  # reported once
    assert queue.next("reader", OLDEST, 5) == ([b"c"], True)
    # The clock steps back: stamps never decrease, so b"d" expires with b"c".
    clock.advance(-10)
    queue.add([b"d"])
    clock.advance(10.002)
    assert queue.next("reader", OLDEST, 5) == ([], True)
    assert queue.is_empty
    queue.close()


def test_ttl_zero_never_expires_and_the_clock_is_read_once_per_group(name: str) -> None:
    calls: list[None] = []

    def clock() -> float:
        calls.append(None)
        return 1000.0 + len(calls) * 1000

    queue = MemoryMpmc(name, MpmcOptions(ttl=0, clock=clock))
    drain_all(queue, add_operation([b"a"]), next_operation("x"), add_operation([b"b"]))
    assert len(calls) == 1
    queue.add([b"c"])
    assert queue.next("y", OLDEST, 5) == ([b"a", b"b", b"c"], False)
    assert len(calls) == 3
    queue.close()
