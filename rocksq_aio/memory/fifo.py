"""The memory FIFO engine: push, pop and reservations on a queue kept in this process.

It behaves as the RocksDB FIFO engine does, seen from outside, and is tested
against it operation by operation (``tests/memory/test_memory_engine.py``). To do
that it keeps what RocksDB keeps: the head's index, the items from there on,
and each unsettled reservation's items under (its number, the index each item
had). The indices are visible only where the RocksDB engine lets them show
(``_reopened``, where an empty queue's head moves on).
"""

from __future__ import annotations

import itertools
from collections import deque

from .. import _validate
from .._dispatch import Operation, OperationKind, Reservation, pop_operation, push_operation
from .._errors import LeaseExpiredError, QueueFullError
from .._leases import LeaseTable
from .._options import FifoOptions
from .base import MemoryQueue

MAX_INDEX = 2**64 - 1

UNSAVED_LIMIT = 1024
"""How far past its tail the RocksDB engine restarts an empty queue's head at
open (``recovered_fifo_bounds``, its ``save_counters_every``)."""


def queue_full(length: int, count: int, capacity: int) -> QueueFullError:
    # The RocksDB engine's message, word for word.
    return QueueFullError(
        f"Queue is full: {length} elements stored, pushing {count} would exceed "
        f"max_elements={capacity}; nothing was written"
    )


class FifoStore:
    """A FIFO queue's data, kept in the registry between opens."""

    __slots__ = ("deliveries", "head", "items", "leased", "payload_size")

    def __init__(self) -> None:
        self.head = 0
        """Index of the oldest item; the tail is ``head + len(items)``."""
        self.items: deque[bytes] = deque()
        self.payload_size = 0
        self.leased: dict[tuple[int, int], tuple[bytes, int]] = {}
        """Reserved items and their deliveries, not settled yet, by (reservation
        number, the index each had), as in RocksDB's ``leased``."""
        self.deliveries: dict[int, int] = {}
        """Deliveries of the stored items handed out before, by index (RocksDB's ``deliveries``)."""

    def copy(self) -> FifoStore:
        copied = FifoStore()
        copied.head = self.head
        copied.items = deque(self.items)
        copied.payload_size = self.payload_size
        copied.leased = dict(self.leased)
        copied.deliveries = dict(self.deliveries)
        return copied

    def give_back(self, items: list[bytes], deliveries: list[int] | None = None) -> None:
        """Put items taken earlier back in front of the head, in their order."""
        if len(items) > self.head:
            # The RocksDB engine's check (plan_fifo_give_back), kept so that
            # the same calls fail the same way.
            raise AssertionError("cannot give back more elements than were popped")
        self.head -= len(items)
        self.items.extendleft(reversed(items))
        self.payload_size += sum(map(len, items))
        for index, times in enumerate(deliveries or (), self.head):
            if times:
                self.deliveries[index] = times

    def take(self, limit: int) -> tuple[list[bytes], list[int] | None]:
        """Remove up to ``limit`` items from the head, with their deliveries (None: all 0)."""
        items = self.items
        values = [items.popleft() for _ in range(min(limit, len(items)))]
        counts = None
        if self.deliveries:
            counts = [self.deliveries.pop(i, 0) for i in range(self.head, self.head + len(values))]
        self.head += len(values)
        self.payload_size -= sum(map(len, values))
        return values, (counts if counts and any(counts) else None)


def _reopened(stored: FifoStore) -> FifoStore:
    """The data as the RocksDB engine finds it at open after a clean close (``recovery``)."""
    store = stored.copy()
    if not store.items:
        # An empty queue does not say where its head got to: RocksDB restarts
        # it as far as its tail can have gone unsaved.
        store.head = min(store.head + UNSAVED_LIMIT, MAX_INDEX)
        store.payload_size = 0
    if store.leased:
        # Reservations left at close go back to the head, oldest first.
        leases = [store.leased[key] for key in sorted(store.leased)]
        store.give_back([item for item, _times in leases], [times for _item, times in leases])
        store.leased.clear()
    return store


class MemoryFifo(MemoryQueue):
    """A FIFO queue with a capacity, kept in this process under a name."""

    def __init__(self, name: str, options: FifoOptions) -> None:
        # Validated in the RocksDB engine's order, so a bad argument raises the same error.
        self.max_elements = options.capacity()
        local = options.local()  # sync, cache_bytes, directory_mode: validated, unused
        self._leases: LeaseTable[Reservation] = LeaseTable(options.leases())
        self._clock = options.time_source()
        super().__init__(name, "FIFO", local.batch_bytes)
        try:
            stored = self._slot.data
            if stored is None:
                self._store = FifoStore()
            elif isinstance(stored, FifoStore):
                self._store = _reopened(stored)
            else:  # registry.claim checks the kind
                raise AssertionError("a FIFO slot holds other data")
        except BaseException:
            self._abandon_open()
            raise
        # The next open works on a copy of this, so that once closed this
        # handle's properties stay as they were at close, as RocksDB's do.
        self._slot.data = self._store
        self._reserved_count = 0
        # Numbered per handle, as on RocksDB: a reopen gives every earlier one back.
        self._reservation_numbers = itertools.count()

    @property
    def len(self) -> int:
        return len(self._store.items)

    def __len__(self) -> int:
        return len(self._store.items)

    @property
    def is_empty(self) -> bool:
        return not self._store.items

    @property
    def payload_size(self) -> int:
        """Sum of the stored items' sizes in bytes."""
        return self._store.payload_size

    @property
    def payload_size_is_known(self) -> bool:
        return True

    @property
    def pending(self) -> int:
        """Items reserved and not yet acked or nacked."""
        return self._reserved_count


    # ------------------------------------------------------------ blocking face

    def push(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically; raise QueueFullError (writing nothing) if they don't fit.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        operation = push_operation(items)
        if not operation.arguments[0] and not self._leases.due_now():
            # The RocksDB engine's blocking push returns before the capacity
            # check: an empty push succeeds even on a queue reopened with a
            # capacity below its length (a push operation in a group fails).
            self.check_usable()
            return
        self.run(operation)

    def pop(self, max_elements: object = 1, no_gil: object = True) -> list[bytes]:
        """Remove and return up to ``max_elements`` items from the head ([] when empty).

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        result: list[bytes] = self.run(pop_operation(max_elements))
        return result

    # ------------------------------------------------------------ dispatcher

    def _execute(self, group: list[Operation]) -> None:
        # Nothing fails halfway (a refused settle is that operation's error
        # alone), so changing the store in place commits as RocksDB does.
        store = self._store
        capacity = self.max_elements
        leases = self._leases
        now = leases.now()
        if leases.due(now):
            self._release_locked([reservation for _number, reservation in leases.take_expired(now)])
        reservations: list[Reservation] = []
        pushed = False
        for operation in group:
            kind = operation.kind
            if kind is OperationKind.PUSH:
                values: list[bytes] = operation.arguments[0]
                length = len(store.items)
                if length + len(values) > capacity:
                    operation.error = queue_full(length, len(values), capacity)
                    continue
                store.items.extend(values)
                store.payload_size += sum(map(len, values))
                pushed = pushed or bool(values)
            elif kind is OperationKind.POP:
                # The token: their deliveries, restored if they are given back.
                operation.result, operation.token = store.take(operation.arguments[0])
            elif kind is OperationKind.RESERVE:
                head = store.head
                values, before = store.take(operation.arguments[0])
                deliveries = [1] * len(values) if before is None else [n + 1 for n in before]
                # The token names the leases: (reservation number, first index).
                number = next(self._reservation_numbers)
                reservation = Reservation(
                    values, (number, head), self.generation, deliveries=deliveries
                )
                for index, value, times in zip(
                    range(head, head + len(values)), values, deliveries, strict=True
                ):
                    store.leased[number, index] = (value, times)
                operation.result = reservation
                if values:
                    reservations.append(reservation)
            elif kind is OperationKind.PEEK:
                operation.result = list(itertools.islice(store.items, operation.arguments[0]))
            elif kind is OperationKind.EXTEND:
                try:
                    self._extend_locked(operation.arguments[0], now)
                except LeaseExpiredError as refusal:
                    operation.error = refusal
            else:
                try:
                    self._settle_locked(operation.arguments[0], kind)
                except LeaseExpiredError as refusal:
                    operation.error = refusal  # changed nothing; the group goes on
        if pushed:
            self.arrivals += 1
        for reservation in reservations:
            leases.add(reservation.token[0], reservation, now)
            self._reserved_count += len(reservation.items)

    def _settle_locked(self, reservation: Reservation, kind: OperationKind) -> None:
        if reservation.settled or not reservation.items:
            reservation.settled = True
            return
        self._check_lease(reservation)
        if kind is OperationKind.NACK:
            self._release_locked([reservation])
        else:
            self._forget_leases(reservation)
            self._reserved_count -= len(reservation.items)
        self._leases.pop(reservation.token[0])
        reservation.settled = True

    def _forget_leases(self, reservation: Reservation) -> None:
        number, first = reservation.token
        for index in range(first, first + len(reservation.items)):
            del self._store.leased[number, index]

    def _release_locked(self, released: list[Reservation]) -> None:
        """Give back reservations together, the first in front (RocksDB's plan_fifo_release)."""
        items = [item for reservation in released for item in reservation.items]
        deliveries = [times for reservation in released for times in reservation.deliveries]
        self._store.give_back(items, deliveries)
        for reservation in released:
            self._forget_leases(reservation)
        self._reserved_count -= len(items)
        self.arrivals += 1

    def _give_back_locked(self, read: Operation, delivered: int) -> None:
        if read.kind is OperationKind.POP and read.result:
            items: list[bytes] = read.result[delivered:]
            counts: list[int] | None = read.token
            if items:
                self._store.give_back(items, None if counts is None else counts[delivered:])
                self.arrivals += 1
            read.result = read.result[:delivered]
        elif read.kind is OperationKind.RESERVE and read.result is not None:
            self._settle_locked(read.result, OperationKind.NACK)
