"""The same queue on the memory engine and on the RocksDB engine, driven step by step.

Used by tests/memory/test_memory_differential.py (random sequences from
Hypothesis) and tests/memory/test_memory_scenarios.py (chosen sequences):
every result, error class and counter must be the same on both engines after
every step.
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
from rocksq_aio._options import FifoOptions, MpmcOptions
from rocksq_aio._types import StartPosition
from rocksq_aio.memory import MemoryFifo, MemoryMpmc, remove
from rocksq_aio.rocksdb import RocksDBFifo, RocksDBMpmc

from support.clock import FakeClock

OLDEST, NEWEST = StartPosition.Oldest, StartPosition.Newest


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
        # Settles of this handle's reservations only: on RocksDB, a group that
        # fails at a stale one keeps some of its effects in memory, not on disk.
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
