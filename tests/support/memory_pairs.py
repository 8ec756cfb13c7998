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
from typing import Any, ClassVar

from rocksq_aio import _dispatch as dispatch
from rocksq_aio._dispatch import Operation, OperationKind, Reservation, Stage
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

    ENGINES: tuple[Any, Any]
    """This kind's memory and RocksDB engine classes."""
    OTHER_KIND: tuple[Any, Any, Any]
    """The memory and RocksDB engine classes of the other kind, and its options class."""

    def open_engine(self, side: int, engines: tuple[Any, Any], options: Any) -> Any:
        """Open ``engines[side]`` (memory, RocksDB) on this pair's name or path."""
        return engines[0](self.name, options) if side == 0 else engines[1](self.path, options)

    def open_other_kind(self, side: int) -> Any:
        """The other kind of queue on the same name or path."""
        memory, rocksdb, options = self.OTHER_KIND
        return self.open_engine(side, (memory, rocksdb), options())

    def properties(self, engine: Any) -> Any:
        """What must agree after every step: what both kinds have, then this kind's own."""
        common = (engine.len, len(engine), engine.is_empty, engine.arrivals, engine.closed)
        return (*common, *self.own_properties(engine))

    def own_properties(self, engine: Any) -> tuple[Any, ...]:
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
        self.both(lambda engine, side: engine.run(dispatch.settle_operation(pair[side], ack=ack)))
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
                back = dispatch.give_back_operation(read, delivered)
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
                back = dispatch.give_back_operation(read, delivered)
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

    CALLS: ClassVar[dict[str, Callable[..., Operation]]]
    """The steps that call one method, by name (push, pop; add, next, remove_label),
    with the builder of the same operation: the step runs one or the other."""
    READ = ""
    """The name of the read ("pop" or "next"); its give-back step is give_back_<READ>."""
    RESERVE: Callable[..., Operation]
    """The builder of a reservation: reserve_operation or reserve_label_operation."""

    @staticmethod
    def spread(argument: Any) -> tuple[Any, ...]:
        """A step's argument as call arguments: a tuple (label, position, count) spread,
        a list of items copied (each call gets a list of its own)."""
        if isinstance(argument, tuple):
            return argument
        return (list(argument) if isinstance(argument, list) else argument,)

    def read_operation(self, argument: Any) -> Operation:
        return self.CALLS[self.READ](*self.spread(argument))

    def reserving(self, argument: Any) -> Operation:
        return self.RESERVE(*self.spread(argument))

    def play_own(self, kind: str, *arguments: Any) -> None:
        if kind in self.CALLS:
            argument, via = arguments
            self.call(via, kind, argument)
        elif kind == "reserve":
            self.reserve(lambda: self.reserving(arguments[0]))
        elif kind == f"give_back_{self.READ}":
            self.give_back(lambda: self.read_operation(arguments[0]), arguments[1])
        elif kind == "give_back_reserve":
            self.give_back(lambda: self.reserving(arguments[0]), None)
        elif kind == "hold":
            self.hold(lambda: self.read_operation(arguments[0]))
        elif kind == "group":
            subsequence, abandon = arguments
            self.group([self.suboperation(sub) for sub in subsequence], abandon)
        else:
            self.play_other(kind, *arguments)

    def play_other(self, kind: str, *arguments: Any) -> None:
        raise AssertionError(kind)

    def call(self, via: bool, method: str, argument: Any) -> None:
        """Call ``method`` on both engines (``via``), or run the same operation."""

        def action(engine: Any, _side: int) -> Any:
            if via:
                return getattr(engine, method)(*self.spread(argument))
            return engine.run(self.CALLS[method](*self.spread(argument)))

        self.both(action)

    def suboperation(self, step: tuple[Any, ...]) -> Callable[[int], Operation]:
        """The builder of a group's operation (for each side: a settle differs by side)."""
        kind = step[0]
        if kind in self.CALLS:
            return lambda _side: self.CALLS[kind](*self.spread(step[1]))
        if kind == "reserve":
            return lambda _side: self.reserving(step[1])
        return self.settle_suboperation(step)

    def settle_suboperation(self, step: tuple[Any, ...]) -> Callable[[int], Operation]:
        raise NotImplementedError


class FifoPair(Pair):
    ENGINES = (MemoryFifo, RocksDBFifo)
    OTHER_KIND = (MemoryMpmc, RocksDBMpmc, MpmcOptions)
    CALLS: ClassVar[dict[str, Callable[..., Operation]]] = {
        "push": dispatch.push_operation,
        "pop": dispatch.pop_operation,
    }
    READ = "pop"
    RESERVE = staticmethod(dispatch.reserve_operation)

    def __init__(self, name: str, directory: str, batch_bytes: int) -> None:
        super().__init__(name, directory)
        self.batch_bytes = batch_bytes

    def options(self, capacity: int) -> FifoOptions:
        return FifoOptions(max_elements=capacity, batch_bytes=self.batch_bytes)

    def open(self, side: int, *arguments: Any) -> Any:
        options = self.options(arguments[0] if arguments else 100)
        return self.open_engine(side, self.ENGINES, options)

    def closed_calls(self) -> list[Callable[[Any, int], Any]]:
        return [
            lambda engine, _side: engine.push([b"x"]),
            lambda engine, _side: engine.push([]),
            lambda engine, _side: engine.pop(2),
            lambda engine, _side: engine.run(dispatch.reserve_operation(1)),
            lambda engine, _side: engine.submit(dispatch.push_operation([b"y"])),
        ]

    def settle_suboperation(self, step: tuple[Any, ...]) -> Callable[[int], Operation]:
        # A settle, of a reservation of this handle or (stale) of one before a
        # reopen: the RocksDB engine commits a group's operations before each
        # settle, so one that fails leaves the same state on both engines.
        _kind, index, ack, stale = step
        pool = (self.stale if stale else None) or self.reservations
        if not pool:
            return lambda _side: dispatch.pop_operation(1)
        chosen = pool[index % len(pool)]
        return lambda side: dispatch.settle_operation(chosen[side], ack=ack)

    def own_properties(self, engine: Any) -> tuple[Any, ...]:
        return (engine.payload_size, engine.pending, engine.max_elements)


class MpmcPair(Pair):
    LABELS = ("a", "b", "é")
    ENGINES = (MemoryMpmc, RocksDBMpmc)
    OTHER_KIND = (MemoryFifo, RocksDBFifo, FifoOptions)
    CALLS: ClassVar[dict[str, Callable[..., Operation]]] = {
        "add": dispatch.add_operation,
        "next": dispatch.next_operation,
        "remove_label": dispatch.remove_label_operation,
    }
    READ = "next"
    RESERVE = staticmethod(dispatch.reserve_label_operation)

    def __init__(self, name: str, directory: str, batch_bytes: int, clock: FakeClock) -> None:
        super().__init__(name, directory)
        self.batch_bytes = batch_bytes
        self.clock = clock

    def open(self, side: int, *arguments: Any) -> Any:
        ttl = arguments[0] if arguments else 0
        options = MpmcOptions(ttl=ttl, clock=self.clock, batch_bytes=self.batch_bytes)
        return self.open_engine(side, self.ENGINES, options)

    def closed_calls(self) -> list[Callable[[Any, int], Any]]:
        return [
            lambda engine, _side: engine.add([b"x"]),
            lambda engine, _side: engine.next("a"),
            lambda engine, _side: engine.next(""),
            lambda engine, _side: engine.remove_label("a"),
            lambda engine, _side: engine.run(dispatch.reserve_label_operation("a", NEWEST, 2)),
        ]

    def play_other(self, kind: str, *arguments: Any) -> None:
        if kind != "advance":
            raise AssertionError(kind)
        self.clock.advance(arguments[0] / 1000)
        self.check()

    def settle_suboperation(self, step: tuple[Any, ...]) -> Callable[[int], Operation]:
        # Settles of this handle's reservations only (stale ones are played
        # alone, by stale_settle).
        if not self.reservations:
            return lambda _side: dispatch.add_operation([])
        chosen = self.reservations[step[1] % len(self.reservations)]
        return lambda side: dispatch.settle_operation(chosen[side], ack=step[2])

    def own_properties(self, engine: Any) -> tuple[Any, ...]:
        return (engine.labels, [engine.pending(label) for label in self.LABELS], engine.ttl)


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
