"""The memory engine, driven directly through the dispatcher API.

The first half tests it on its own: operations, groups, give-backs, the
registry of names, TTL with a fake clock. The second half is a differential
test: Hypothesis drives the memory engine and the RocksDB engine with the
same random sequences of operations, and every result, error class and
counter must be the same after every step.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from rocksq_aio._errors import (
    QueueClosedError,
    QueueError,
    QueueFullError,
    QueueLockedError,
)
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


# ---------------------------------------------------------------- differential


DIFFERENTIAL_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ITEMS = st.lists(st.binary(max_size=4), max_size=4)
COUNTS = st.integers(min_value=1, max_value=4)
ANY_INDEX = st.integers(min_value=0, max_value=20)
VIA = st.booleans()  # True: the blocking method; False: run(<operation>)
ABANDON = st.one_of(st.none(), st.tuples(st.sampled_from(["withdraw", "running"]), ANY_INDEX))
BATCH_BYTES = st.sampled_from([6, 1024 * 1024])  # 6: groups split by size


def described(value: Any) -> Any:
    if isinstance(value, Reservation):
        return ("reservation", value.items, value.label, value.settled)
    if isinstance(value, tuple):
        return tuple(described(part) for part in value)
    return value


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", described(call()))
    except Exception as error:  # the class is compared, not the message (paths differ)
        return ("error", type(error))


class Pair:
    """The same queue on both engines; index 0 is memory, 1 is RocksDB."""

    engines: list[Any]

    def __init__(self, name: str, directory: str) -> None:
        self.name = name
        self.path = os.path.join(directory, "queue")
        self.opened: list[Any] = []
        self.reservations: list[list[Reservation]] = []
        """Unsettled reservations of the current handles, one per engine."""
        self.stale: list[list[Reservation]] = []
        """Reservations made before a reopen, which the reopen gave back."""
        self.held: list[list[Operation]] = []
        """Finished reads not given back yet (they may be, on a later handle)."""
        self.steps: list[object] = []

    def open(self, side: int, *arguments: Any) -> Any:
        raise NotImplementedError

    def open_other_kind(self, side: int) -> Any:
        raise NotImplementedError

    def properties(self, engine: Any) -> Any:
        raise NotImplementedError

    def start(self, *arguments: Any) -> None:
        self.arguments = arguments
        self.engines = [self.open(side, *arguments) for side in (0, 1)]
        self.opened.extend(self.engines)

    def both(self, action: Callable[[Any, int], Any]) -> None:
        """Run ``action`` on each engine; results, errors and counters must agree."""
        results = [outcome(functools.partial(action, self.engines[side], side)) for side in (0, 1)]
        assert results[0] == results[1], self.steps
        self.check()

    def check(self) -> None:
        memory, rocksdb = (self.properties(engine) for engine in self.engines)
        assert memory == rocksdb, self.steps
        for pair in self.reservations:
            assert pair[0].settled == pair[1].settled, self.steps
        self.reservations = [pair for pair in self.reservations if not pair[0].settled]

    def keep(self, made: list[list[Reservation]]) -> None:
        """Track the reservations both engines just made (memory's, RocksDB's)."""
        for memory, rocksdb in zip(made[0], made[1], strict=True):
            assert described(memory) == described(rocksdb), self.steps
            if not memory.settled:
                self.reservations.append([memory, rocksdb])

    def reserve(self, build: Callable[[], Operation]) -> None:
        made: list[list[Reservation]] = [[], []]

        def action(engine: Any, side: int) -> Any:
            reservation = engine.run(build())
            made[side].append(reservation)
            return reservation

        self.both(action)
        if made[0] and made[1]:
            self.keep(made)

    def settle(self, index: int, ack: bool, *, stale: bool = False) -> None:
        pool = self.stale if stale else self.reservations
        if not pool:
            return
        pair = pool[index % len(pool)]
        self.both(lambda engine, side: engine.run(settle_operation(pair[side], ack=ack)))
        if stale and pair in self.stale:
            self.stale.remove(pair)

    def give_back(self, build: Callable[[], Operation], delivered: int | None) -> None:
        """Run a read, then give it back: by abandon() when delivered is None."""

        def action(engine: Any, side: int) -> Any:
            read = build()
            first = outcome(lambda: engine.run(read))
            if read.stage is not Stage.DONE or read.error is not None:
                return first
            if delivered is None:
                back = engine.abandon(read)
            else:
                back = give_back_operation(read, delivered)
            second = None if back is None else outcome(lambda: engine.run(back))
            return first, second, described(read.result)

        self.both(action)

    def group(
        self,
        builders: list[Callable[[int], Operation]],
        abandon: tuple[str, int] | None,
    ) -> None:
        """Submit several operations, abandon one maybe, drain; as one group when they fit."""
        made: list[list[Reservation]] = [[], []]

        def action(engine: Any, side: int) -> Any:
            operations: list[Operation] = []
            for build in builders:
                operation = build(side)
                engine.submit(operation)  # a closed queue raises here, on both
                operations.append(operation)
            if abandon is not None:
                how, index = abandon
                target = operations[index % len(operations)]
                if how == "withdraw":
                    assert engine.abandon(target) is None
                elif target.kind not in (OperationKind.ACK, OperationKind.NACK):
                    # What abandon() does to an operation being executed.
                    target.abandoned = True
            while any(op.stage in (Stage.PENDING, Stage.RUNNING) for op in operations):
                engine.drain()
            results = []
            for operation in operations:
                if operation.stage is Stage.WITHDRAWN:
                    results.append("withdrawn")
                    continue
                results.append(outcome(operation.outcome))
                if operation.kind is OperationKind.RESERVE and operation.error is None:
                    made[side].append(operation.result)
            return results

        self.both(action)
        if len(made[0]) == len(made[1]):
            self.keep(made)

    def hold(self, build: Callable[[], Operation]) -> None:
        """Run a read and keep it, to give it back after later steps (give_back_held)."""
        reads: list[Operation] = []

        def action(engine: Any, _side: int) -> Any:
            reads.append(build())
            return engine.run(reads[-1])

        self.both(action)
        if all(read.stage is Stage.DONE and read.error is None for read in reads):
            self.held.append(reads)

    def give_back_held(self, index: int, delivered: int | None) -> None:
        """Give back a read held since (the label may have read further, or expired)."""
        if not self.held:
            return
        reads = self.held.pop(index % len(self.held))

        def action(engine: Any, side: int) -> Any:
            read = reads[side]
            if delivered is None:
                back = engine.abandon(read)
            else:
                back = give_back_operation(read, delivered)
            return None if back is None else engine.run(back), described(read.result)

        self.both(action)

    def reopen(self, *arguments: Any) -> None:
        self.arguments = arguments
        for engine in self.engines:
            engine.close()
        self.stale.extend(self.reservations)
        self.reservations = []
        opened: list[Any] = [None, None]

        def action(_engine: Any, side: int) -> None:
            opened[side] = self.open(side, *arguments)
            self.opened.append(opened[side])

        self.both(action)
        if opened[0] is not None and opened[1] is not None:
            self.engines = opened
            self.check()

    def close(self, reopen: bool) -> None:
        """Close (twice: idempotent), try a few calls, and maybe reopen as before."""
        self.both(lambda engine, _side: (engine.close(), engine.close()))
        for call in self.closed_calls():
            self.both(call)
        if reopen:
            self.reopen(*self.arguments)

    def closed_calls(self) -> list[Callable[[Any, int], Any]]:
        raise NotImplementedError

    def second_open(self, other_kind: bool) -> None:
        def action(_engine: Any, side: int) -> None:
            handle = self.open_other_kind(side) if other_kind else self.open(side)
            handle.close()  # opened only while the queue is closed: a reopen, done at once

        self.both(action)

    def finish(self) -> None:
        for engine in self.opened:
            engine.close()

    def play(self, step: tuple[Any, ...]) -> None:
        """Run one step of a sequence (see FIFO_STEPS and MPMC_STEPS) on both engines."""
        self.steps.append(step)
        kind, *arguments = step
        if kind in ("settle", "stale_settle"):
            self.settle(*arguments, stale=kind == "stale_settle")
        elif kind == "give_back_held":
            self.give_back_held(*arguments)
        elif kind == "reopen":
            self.reopen(*arguments)
        elif kind == "close":
            self.close(*arguments)
        elif kind == "second_open":
            self.second_open(*arguments)
        else:
            self.play_own(kind, *arguments)

    def play_own(self, kind: str, *arguments: Any) -> None:
        raise NotImplementedError


class FifoPair(Pair):
    def __init__(self, name: str, directory: str, batch_bytes: int) -> None:
        super().__init__(name, directory)
        self.batch_bytes = batch_bytes

    def options(self, capacity: int) -> FifoOptions:
        return FifoOptions(max_elements=capacity, batch_bytes=self.batch_bytes)

    def open(self, side: int, *arguments: Any) -> Any:
        options = self.options(arguments[0] if arguments else 100)
        return MemoryFifo(self.name, options) if side == 0 else RocksDBFifo(self.path, options)

    def open_other_kind(self, side: int) -> Any:
        if side == 0:
            return MemoryMpmc(self.name, MpmcOptions())
        return RocksDBMpmc(self.path, MpmcOptions())

    def closed_calls(self) -> list[Callable[[Any, int], Any]]:
        return [
            lambda engine, _side: engine.push([b"x"]),
            lambda engine, _side: engine.push([]),
            lambda engine, _side: engine.pop(2),
            lambda engine, _side: engine.run(reserve_operation(1)),
            lambda engine, _side: engine.submit(push_operation([b"y"])),
        ]

    def play_own(self, kind: str, *arguments: Any) -> None:
        if kind == "push":
            items, via = arguments
            self.both(
                lambda engine, _side: (
                    engine.push(list(items)) if via else engine.run(push_operation(list(items)))
                )
            )
        elif kind == "pop":
            count, via = arguments
            self.both(
                lambda engine, _side: engine.pop(count) if via else engine.run(pop_operation(count))
            )
        elif kind == "reserve":
            self.reserve(lambda: reserve_operation(arguments[0]))
        elif kind == "give_back_pop":
            self.give_back(lambda: pop_operation(arguments[0]), arguments[1])
        elif kind == "give_back_reserve":
            self.give_back(lambda: reserve_operation(arguments[0]), None)
        elif kind == "hold":
            self.hold(lambda: pop_operation(arguments[0]))
        elif kind == "group":
            subsequence, abandon = arguments
            self.group([self.suboperation(sub) for sub in subsequence], abandon)
        else:
            raise AssertionError(kind)

    def suboperation(self, step: tuple[Any, ...]) -> Callable[[int], Operation]:
        kind = step[0]
        if kind == "push":
            return lambda _side: push_operation(list(step[1]))
        if kind == "pop":
            return lambda _side: pop_operation(step[1])
        if kind == "reserve":
            return lambda _side: reserve_operation(step[1])
        # A settle, of a reservation of this handle or (stale) of one before a
        # reopen: the RocksDB engine commits a group's operations before each
        # settle, so one that fails leaves the same state on both engines.
        _kind, index, ack, stale = step
        pool = (self.stale if stale else None) or self.reservations
        if not pool:
            return lambda _side: pop_operation(1)
        chosen = pool[index % len(pool)]
        return lambda side: settle_operation(chosen[side], ack=ack)

    def properties(self, engine: Any) -> Any:
        return (
            engine.len,
            len(engine),
            engine.is_empty,
            engine.payload_size,
            engine.pending,
            engine.arrivals,
            engine.max_elements,
            engine.closed,
        )


class MpmcPair(Pair):
    LABELS = ("a", "b", "é")

    def __init__(self, name: str, directory: str, batch_bytes: int, clock: FakeClock) -> None:
        super().__init__(name, directory)
        self.batch_bytes = batch_bytes
        self.clock = clock

    def open(self, side: int, *arguments: Any) -> Any:
        ttl = arguments[0] if arguments else 0
        options = MpmcOptions(ttl=ttl, clock=self.clock, batch_bytes=self.batch_bytes)
        return MemoryMpmc(self.name, options) if side == 0 else RocksDBMpmc(self.path, options)

    def open_other_kind(self, side: int) -> Any:
        if side == 0:
            return MemoryFifo(self.name, FifoOptions())
        return RocksDBFifo(self.path, FifoOptions())

    def closed_calls(self) -> list[Callable[[Any, int], Any]]:
        return [
            lambda engine, _side: engine.add([b"x"]),
            lambda engine, _side: engine.next("a"),
            lambda engine, _side: engine.next(""),
            lambda engine, _side: engine.remove_label("a"),
            lambda engine, _side: engine.run(reserve_label_operation("a", NEWEST, 2)),
        ]

    def play_own(self, kind: str, *arguments: Any) -> None:
        if kind == "add":
            items, via = arguments
            self.both(
                lambda engine, _side: (
                    engine.add(list(items)) if via else engine.run(add_operation(list(items)))
                )
            )
        elif kind == "next":
            read, via = arguments
            self.both(
                lambda engine, _side: (
                    engine.next(*read) if via else engine.run(next_operation(*read))
                )
            )
        elif kind == "remove_label":
            label, via = arguments
            self.both(
                lambda engine, _side: (
                    engine.remove_label(label) if via else engine.run(remove_label_operation(label))
                )
            )
        elif kind == "reserve":
            self.reserve(lambda: reserve_label_operation(*arguments[0]))
        elif kind == "advance":
            self.clock.advance(arguments[0] / 1000)
            self.check()
        elif kind == "give_back_next":
            self.give_back(lambda: next_operation(*arguments[0]), arguments[1])
        elif kind == "give_back_reserve":
            self.give_back(lambda: reserve_label_operation(*arguments[0]), None)
        elif kind == "hold":
            self.hold(lambda: next_operation(*arguments[0]))
        elif kind == "group":
            subsequence, abandon = arguments
            self.group([self.suboperation(sub) for sub in subsequence], abandon)
        else:
            raise AssertionError(kind)

    def suboperation(self, step: tuple[Any, ...]) -> Callable[[int], Operation]:
        kind = step[0]
        if kind == "add":
            return lambda _side: add_operation(list(step[1]))
        if kind == "next":
            return lambda _side: next_operation(*step[1])
        if kind == "reserve":
            return lambda _side: reserve_label_operation(*step[1])
        if kind == "remove_label":
            return lambda _side: remove_label_operation(step[1])
        # Settles of this handle's reservations only (stale ones are played
        # alone, by stale_settle).
        if not self.reservations:
            return lambda _side: add_operation([])
        chosen = self.reservations[step[1] % len(self.reservations)]
        return lambda side: settle_operation(chosen[side], ack=step[2])

    def properties(self, engine: Any) -> Any:
        return (
            engine.len,
            len(engine),
            engine.is_empty,
            engine.labels,
            [engine.pending(label) for label in self.LABELS],
            engine.arrivals,
            engine.ttl,
            engine.closed,
        )


@contextlib.contextmanager
def paired(make: Callable[[str, str], Pair]) -> Iterator[Pair]:
    directory = tempfile.mkdtemp(prefix="rocksq_memory_diff_")
    pair = make(f"diff-{uuid.uuid4().hex}", directory)
    try:
        yield pair
    finally:
        pair.finish()
        gc.collect()
        remove(pair.name)
        shutil.rmtree(directory, ignore_errors=True)


FIFO_SUBOPERATIONS = st.one_of(
    st.tuples(st.just("push"), ITEMS),
    st.tuples(st.just("pop"), COUNTS),
    st.tuples(st.just("reserve"), COUNTS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans(), st.booleans()),
)
DELIVERED = st.none() | st.integers(0, 3)  # None: give back by abandon()
# Mostly reopened at once: every call on a closed queue fails the same way.
REOPEN_AFTER_CLOSE = st.sampled_from([True, True, True, False])

# The everyday operations come up four times as often as the others (a
# reopen costs RocksDB some 30 ms).
FIFO_EVERYDAY = [
    st.tuples(st.just("push"), ITEMS, VIA),
    st.tuples(st.just("pop"), COUNTS, VIA),
    st.tuples(st.just("reserve"), COUNTS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans()),
    st.tuples(st.just("group"), st.lists(FIFO_SUBOPERATIONS, min_size=1, max_size=5), ABANDON),
]
FIFO_STEPS = st.lists(
    st.one_of(
        *FIFO_EVERYDAY,
        *FIFO_EVERYDAY,
        *FIFO_EVERYDAY,
        *FIFO_EVERYDAY,
        st.tuples(st.just("stale_settle"), ANY_INDEX, st.booleans()),
        st.tuples(st.just("give_back_pop"), COUNTS, DELIVERED),
        st.tuples(st.just("give_back_reserve"), COUNTS),
        st.tuples(st.just("hold"), COUNTS),
        st.tuples(st.just("give_back_held"), ANY_INDEX, DELIVERED),
        st.tuples(st.just("reopen"), st.sampled_from([2, 4, 8, 100])),
        st.tuples(st.just("close"), REOPEN_AFTER_CLOSE),
        st.tuples(st.just("second_open"), st.booleans()),
    ),
    min_size=10,
    max_size=30,
)


@DIFFERENTIAL_SETTINGS
@given(steps=FIFO_STEPS, capacity=st.sampled_from([3, 6, 100]), batch_bytes=BATCH_BYTES)
def test_fifo_matches_rocksdb(
    steps: list[tuple[Any, ...]], capacity: int, batch_bytes: int
) -> None:
    with paired(lambda name, directory: FifoPair(name, directory, batch_bytes)) as pair:
        pair.start(capacity)
        for step in steps:
            pair.play(step)


LABELS = st.sampled_from(MpmcPair.LABELS)
POSITIONS = st.sampled_from([OLDEST, NEWEST])
READS = st.tuples(LABELS, POSITIONS, COUNTS)
TTLS = st.sampled_from([0, 0.0015, 0.004])

MPMC_SUBOPERATIONS = st.one_of(
    st.tuples(st.just("add"), ITEMS),
    st.tuples(st.just("next"), READS),
    st.tuples(st.just("reserve"), READS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans()),
    st.tuples(st.just("remove_label"), LABELS),
)
MPMC_EVERYDAY = [
    st.tuples(st.just("add"), ITEMS, VIA),
    st.tuples(st.just("next"), READS, VIA),
    st.tuples(st.just("reserve"), READS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([-3, 0, 1, 2, 3, 5, 10])),
    st.tuples(st.just("group"), st.lists(MPMC_SUBOPERATIONS, min_size=1, max_size=5), ABANDON),
]
MPMC_STEPS = st.lists(
    st.one_of(
        *MPMC_EVERYDAY,
        *MPMC_EVERYDAY,
        *MPMC_EVERYDAY,
        *MPMC_EVERYDAY,
        st.tuples(st.just("stale_settle"), ANY_INDEX, st.booleans()),
        st.tuples(st.just("remove_label"), LABELS, VIA),
        st.tuples(st.just("give_back_next"), READS, DELIVERED),
        st.tuples(st.just("give_back_reserve"), READS),
        st.tuples(st.just("hold"), READS),
        st.tuples(st.just("give_back_held"), ANY_INDEX, DELIVERED),
        st.tuples(st.just("reopen"), TTLS),
        st.tuples(st.just("close"), REOPEN_AFTER_CLOSE),
        st.tuples(st.just("second_open"), st.booleans()),
    ),
    min_size=10,
    max_size=30,
)


@DIFFERENTIAL_SETTINGS
@given(steps=MPMC_STEPS, ttl=TTLS, batch_bytes=BATCH_BYTES)
def test_mpmc_matches_rocksdb(steps: list[tuple[Any, ...]], ttl: float, batch_bytes: int) -> None:
    clock = FakeClock()
    with paired(lambda name, directory: MpmcPair(name, directory, batch_bytes, clock)) as pair:
        pair.start(ttl)
        for step in steps:
            pair.play(step)


# Sequences a random search seldom finds: the rules that need several steps
# in a row, and the RocksDB behaviours that look wrong, which the memory
# engine matches on purpose (each reported to the lead).
A, B, C, D, E = b"a", b"b", b"c", b"d", b"e"

FIFO_SCENARIOS = {
    # The nack puts a and b back under the indices the later reservation
    # still holds leases on (keyed by reservation number too, so both are
    # kept): the reopen puts c, d back in front of them (see
    # test_leases.py for the exact order).
    "nack-under-a-later-lease-reopens-with-every-item": [
        ("push", [A, B, C, D, E], True),
        ("reserve", 2),
        ("reserve", 2),
        ("settle", 0, False),
        ("reopen", 100),
        ("reopen", 100),
        ("pop", 10, True),
    ],
    # The third reservation takes the indices of the second: its ack must
    # forget its own leases only, so the reopen still has c and d.
    "an-ack-under-a-reused-index-keeps-the-other-lease": [
        ("push", [A, B, C, D, E], True),
        ("reserve", 2),
        ("reserve", 2),
        ("settle", 0, False),
        ("reserve", 2),
        ("settle", 1, True),
        ("reopen", 100),
        ("pop", 10, True),
    ],
    # Settling a reservation the reopen gave back already is refused
    # (LeaseExpiredError): before generations, below index 0 an
    # AssertionError, else its items a second time and a negative pending.
    "stale-nack-below-the-first-index": [
        ("push", [A, B, C], True),
        ("reserve", 2),
        ("reopen", 100),
        ("stale_settle", 0, False),
        ("pop", 10, True),
    ],
    "stale-nack-after-an-empty-reopen": [
        ("push", [A, B], True),
        ("reserve", 2),
        ("reopen", 100),
        ("stale_settle", 0, False),
        ("pop", 10, True),
    ],
    "stale-ack-keeps-a-new-lease": [
        ("push", [A, B, C, D], True),
        ("reserve", 2),
        ("reopen", 100),
        ("reserve", 2),
        ("stale_settle", 0, True),
        ("reopen", 100),
        ("pop", 10, True),
    ],
    # Looks wrong on RocksDB: a push followed by an ack in one group does not
    # count as an arrival.
    "push-then-ack-in-one-group": [
        ("push", [A], True),
        ("reserve", 1),
        ("group", [("push", [B]), ("settle", 0, True, False)], None),
        ("group", [("push", [C]), ("pop", 1)], None),
    ],
    "empty-push-over-capacity": [
        ("push", [A, B, C], True),
        ("reopen", 2),
        ("push", [], True),
        ("push", [], False),
        ("group", [("push", []), ("pop", 1), ("push", [])], None),
    ],
    "give-back-after-reading-on": [
        ("push", [A, B, C], True),
        ("hold", 2),
        ("pop", 1, True),
        ("give_back_held", 0, None),
        ("pop", 5, True),
    ],
    "give-back-on-the-next-handle": [
        ("push", [A, B, C], True),
        ("hold", 2),
        ("reopen", 100),
        ("give_back_held", 0, 1),
        ("pop", 5, True),
    ],
}


@pytest.mark.parametrize("steps", FIFO_SCENARIOS.values(), ids=FIFO_SCENARIOS.keys())
def test_fifo_scenarios_match_rocksdb(steps: list[tuple[Any, ...]]) -> None:
    with paired(lambda name, directory: FifoPair(name, directory, 1024 * 1024)) as pair:
        pair.start(100)
        for step in steps:
            pair.play(step)


MPMC_SCENARIOS: dict[str, tuple[float, list[tuple[Any, ...]]]] = {
    "ttl-rounded-up-to-whole-milliseconds": (
        0.0015,
        [
            ("add", [A], True),
            ("advance", 1),
            ("next", ("a", OLDEST, 1), False),
            ("advance", 1),
            ("next", ("b", OLDEST, 5), False),
        ],
    ),
    "expiry-cutoff-is-inclusive": (
        0.004,
        [("add", [A], True), ("advance", 4), ("next", ("a", OLDEST, 1), True)],
    ),
    "stamps-never-go-back": (
        0.004,
        [
            ("add", [A], True),
            ("advance", 5),
            ("next", ("a", OLDEST, 1), True),
            ("advance", -100),
            ("add", [B], True),
            ("advance", 97),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "a-rewind-past-expired-elements-reports-them": (
        0.004,
        [
            ("add", [A, B, C], True),
            ("hold", ("a", OLDEST, 3)),
            ("advance", 5),
            ("add", [D], True),
            ("give_back_held", 0, None),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "a-give-back-keeps-the-expiry-report": (
        0.004,
        [
            ("add", [A], True),
            ("next", ("a", OLDEST, 1), True),
            ("add", [B], True),
            ("advance", 5),
            ("add", [C], True),
            ("hold", ("a", OLDEST, 5)),
            ("give_back_held", 0, None),
            ("next", ("a", OLDEST, 5), True),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "given-back-first-when-the-label-read-on": (
        0,
        [
            ("add", [A, B, C], True),
            ("hold", ("a", OLDEST, 1)),
            ("next", ("a", OLDEST, 1), True),
            ("give_back_held", 0, None),
            ("next", ("a", OLDEST, 5), True),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "newest-on-an-empty-queue-then-adds": (
        0,
        [
            ("next", ("a", NEWEST, 1), True),
            ("add", [A, B], True),
            ("next", ("a", NEWEST, 5), True),
            ("next", ("b", NEWEST, 5), True),
        ],
    ),
    "remove-label-drops-what-was-given-back": (
        0,
        [
            ("add", [A, B], True),
            ("reserve", ("a", OLDEST, 2)),
            ("settle", 0, False),
            ("remove_label", "a", True),
            ("next", ("a", NEWEST, 5), True),
        ],
    ),
    # Refused (LeaseExpiredError, before generations a KeyError for a label
    # without reservations on this handle); the rest of the group goes on.
    "a-refused-stale-settle-still-expires": (
        0.004,
        [
            ("add", [A], True),
            ("reserve", ("a", OLDEST, 1)),
            ("reopen", 0.004),
            ("advance", 5),
            ("stale_settle", 0, True),
            ("next", ("b", OLDEST, 5), True),
        ],
    ),
    # Reservation numbers restart at each open: the stale ack is refused, so
    # it cannot forget the new reservation's lease (the reopen used to lose a).
    "a-stale-ack-keeps-a-new-lease": (
        0,
        [
            ("add", [A, B, C], True),
            ("reserve", ("a", OLDEST, 1)),
            ("reopen", 0),
            ("reserve", ("a", OLDEST, 1)),
            ("stale_settle", 0, True),
            ("reopen", 0),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
}


@pytest.mark.parametrize("ttl, steps", MPMC_SCENARIOS.values(), ids=MPMC_SCENARIOS.keys())
def test_mpmc_scenarios_match_rocksdb(ttl: float, steps: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    with paired(lambda name, directory: MpmcPair(name, directory, 1024 * 1024, clock)) as pair:
        pair.start(ttl)
        for step in steps:
            pair.play(step)
