"""The memory MPMC engine: one stream, labels with positions, element TTL, in this process.

It behaves as the RocksDB MPMC engine does, seen from outside, and is tested
against it operation by operation (``tests/memory/test_memory_engine.py``), so it
keeps what RocksDB keeps: elements by index with their timestamps, each
label's position, the items given back to a label that had read further
(served to it first), and each unsettled reservation's items.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from .. import _validate
from .._dispatch import (
    Operation,
    OperationKind,
    Reservation,
    add_operation,
    next_operation,
    remove_label_operation,
)
from .._errors import LeaseExpiredError
from .._options import MpmcOptions
from .._types import StartPosition
from .base import MemoryQueue


@dataclass(frozen=True, slots=True)
class Position:
    index: int
    """The next element this label reads."""
    expired_unseen: bool = False
    """Elements this label had not read were removed by TTL; reported once by next()."""


class MpmcStore:
    """An MPMC queue's data, kept in the registry between opens."""

    __slots__ = ("elements", "given_back", "head", "leased", "newest_ms", "positions", "tail")

    def __init__(self) -> None:
        self.head = 0
        self.tail = 0
        self.newest_ms = 0
        """Timestamp of the newest element ever added: stamps never go below it."""
        self.elements: dict[int, tuple[int, bytes]] = {}
        """(timestamp in ms, item) by index, for the indices [head, tail)."""
        self.positions: dict[str, Position] = {}
        self.given_back: dict[str, deque[bytes]] = {}
        self.leased: dict[tuple[str, int], list[bytes]] = {}
        """Reserved items not settled yet, by (label, the handle's reservation number)."""

    def copy(self) -> MpmcStore:
        copied = MpmcStore()
        copied.head, copied.tail, copied.newest_ms = self.head, self.tail, self.newest_ms
        copied.elements = dict(self.elements)
        copied.positions = dict(self.positions)
        copied.given_back = {label: deque(items) for label, items in self.given_back.items()}
        copied.leased = dict(self.leased)
        return copied


def _reopened(stored: MpmcStore) -> MpmcStore:
    """The data as the RocksDB engine finds it at open (``recovery.open_mpmc``).

    Reservations left at close are given back to their label, first, in the
    order they were made.
    """
    store = stored.copy()
    by_label: dict[str, list[bytes]] = {}
    for label, number in sorted(store.leased):
        by_label.setdefault(label, []).extend(store.leased[label, number])
    store.leased.clear()
    for label, items in by_label.items():
        store.given_back.setdefault(label, deque()).extendleft(reversed(items))
    return store


class MemoryMpmc(MemoryQueue):
    """One stream read by many labelled consumers, with element TTL, kept in this process."""

    def __init__(self, name: str, options: MpmcOptions) -> None:
        # Validated in the RocksDB engine's order, so a bad argument raises the same error.
        self.ttl = options.ttl_seconds()
        self._clock = options.time_source()
        local = options.local()  # sync, cache_bytes, directory_mode: validated, unused
        # Rounded up, so that a TTL under a millisecond still expires.
        self._ttl_ms = math.ceil(self.ttl * 1000)
        # Numbered per handle, as on RocksDB: a reopen gives every earlier one back.
        self._reservation_numbers = itertools.count()
        self._reserved_counts: dict[str, int] = {}
        super().__init__(name, "MPMC", local.batch_bytes)
        try:
            stored = self._slot.data
            if stored is None:
                self._store = MpmcStore()
            elif isinstance(stored, MpmcStore):
                self._store = _reopened(stored)
            else:  # registry.claim checks the kind
                raise AssertionError("an MPMC slot holds other data")
        except BaseException:
            self._abandon_open()
            raise
        # A reopen copies the data, so this handle's properties stay as they
        # were at close, as a closed RocksDB handle's do.
        self._slot.data = self._store

    @property
    def len(self) -> int:
        """Elements stored; expired ones leave at the next add, next, reserve, settle or
        remove_label."""
        return self._store.tail - self._store.head

    def __len__(self) -> int:
        return self._store.tail - self._store.head

    @property
    def is_empty(self) -> bool:
        return self._store.tail == self._store.head

    @property
    def labels(self) -> list[str]:
        return sorted(self._store.positions)

    def pending(self, label: str) -> int:
        """Items ``label`` reserved and has not acked or nacked yet."""
        return self._reserved_counts.get(label, 0)

    # ------------------------------------------------------------ blocking face

    def add(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically, stamped with the current time.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        self.run(add_operation(items))

    def next(
        self,
        label: object,
        start_position: object = StartPosition.Oldest,
        max_elements: object = 1,
        no_gil: object = True,
    ) -> tuple[list[bytes], bool]:
        """Read up to ``max_elements`` for ``label`` and save its new position.

        The bool is True exactly once after elements this label had not read
        were removed by TTL. ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        if (
            max_elements == 1
            and type(max_elements) is int
            and type(label) is str
            and (start_position is StartPosition.Oldest or start_position is StartPosition.Newest)
        ):
            # The RocksDB engine's one-item path reports a closed queue before
            # it validates the label (an empty one, say): so does this one.
            self.check_usable()
        result: tuple[list[bytes], bool] = self.run(
            next_operation(label, start_position, max_elements)
        )
        return result

    def remove_label(self, label: object, no_gil: object = True) -> bool:
        """Forget ``label`` and its position; False when it did not exist.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        removed: bool = self.run(remove_label_operation(label))
        return removed

    # ------------------------------------------------------------ dispatcher

    def _execute(self, group: list[Operation]) -> None:
        # One clock reading per group, as RocksDB's _now_ms(): every add of
        # the group gets the same stamp, and expiry happens once, first.
        now_ms = int(self._clock() * 1000)
        store = self._store
        added = False
        settles = (OperationKind.ACK, OperationKind.NACK)
        self._expire(now_ms)
        for operation in group:
            kind = operation.kind
            if kind is OperationKind.ADD:
                values: list[bytes] = operation.arguments[0]
                if values:
                    stamp = max(now_ms, store.newest_ms)  # never below an earlier stamp
                    for index, value in enumerate(values, store.tail):
                        store.elements[index] = (stamp, value)
                    store.tail += len(values)
                    store.newest_ms = stamp
                    added = True
            elif kind is OperationKind.NEXT:
                items, expired, operation.token = self._read(operation.arguments)
                operation.result = (items, expired)
            elif kind is OperationKind.RESERVE:
                label = operation.arguments[0]
                # A reserve clears the expiry report without making it, as on RocksDB.
                items, _expired, _start = self._read(operation.arguments)
                key = (label, next(self._reservation_numbers))
                if items:
                    store.leased[key] = items
                    self._reserved_counts[label] = self._reserved_counts.get(label, 0) + len(items)
                operation.result = Reservation(items, key, self.generation, label)
            elif kind in settles:
                try:
                    self._settle_locked(operation.arguments[0], kind)
                except LeaseExpiredError as refusal:
                    operation.error = refusal  # changed nothing; the group goes on
            else:
                label = operation.arguments[0]
                operation.result = store.positions.pop(label, None) is not None
                store.given_back.pop(label, None)
        if added:
            self.arrivals += 1

    def _expire(self, now_ms: int) -> None:
        """Drop elements stamped at or before now - ttl; move the labels that had not read them."""
        store = self._store
        if self._ttl_ms <= 0 or store.head == store.tail:
            return
        cutoff = now_ms - self._ttl_ms
        elements = store.elements
        if elements[store.head][0] > cutoff:
            return
        # Stamps never decrease along the queue: bisect for the first live one.
        low, high = store.head, store.tail
        while low < high:
            middle = (low + high) // 2
            if elements[middle][0] > cutoff:
                high = middle
            else:
                low = middle + 1
        for index in range(store.head, low):
            del elements[index]
        for label, position in store.positions.items():
            if position.index < low:
                store.positions[label] = Position(low, expired_unseen=True)
        store.head = low

    def _read(self, arguments: tuple[Any, ...]) -> tuple[list[bytes], bool, int | None]:
        """A next(): items given back to the label first, else from its position.

        Returns the items, the expiry report and the index of the first item
        (None for items given back before).
        """
        label, start_position, limit = arguments
        store = self._store
        waiting = store.given_back.get(label)
        if waiting:
            # Neither creates the label nor makes its expiry report, as on RocksDB.
            return [waiting.popleft() for _ in range(min(limit, len(waiting)))], False, None
        saved = store.positions.get(label)
        if saved is not None:
            start = saved
        elif start_position is StartPosition.Oldest:
            start = Position(store.head)
        else:
            # RocksQ's rule: a new label at Newest starts at the last stored element.
            start = Position(store.tail - 1 if store.tail > store.head else store.tail)
        stop = min(start.index + limit, store.tail)  # a position is never past the tail
        items = [store.elements[index][1] for index in range(start.index, stop)]
        moved = Position(stop)
        if saved != moved:
            store.positions[label] = moved
        return items, start.expired_unseen, start.index

    def _settle_locked(self, reservation: Reservation, kind: OperationKind) -> None:
        if reservation.settled:
            return
        if not reservation.items:
            reservation.settled = True
            return
        self.check_settle(reservation)
        reservation.settled = True
        label = cast(str, reservation.label)
        self._reserved_counts[label] -= len(reservation.items)
        self._store.leased.pop(reservation.token, None)
        if kind is OperationKind.NACK:
            waiting = self._store.given_back.setdefault(label, deque())
            waiting.extendleft(reversed(reservation.items))
            self.arrivals += 1

    def _give_back_locked(self, read: Operation, delivered: int) -> None:
        if read.kind is OperationKind.RESERVE:
            self._settle_locked(read.result, OperationKind.NACK)
            return
        if read.kind is not OperationKind.NEXT:
            return
        items, expired = read.result
        start: int | None = read.token
        read.result = (items[:delivered], False)
        # The expiry report goes back with a read none of whose items was delivered.
        self._give_back_next(
            read.arguments[0],
            items[delivered:],
            None if start is None else start + delivered,
            expired and delivered == 0,
        )

    def _give_back_next(
        self, label: str, items: list[bytes], start: int | None, expired: bool
    ) -> None:
        if not items:
            return
        self.arrivals += 1
        store = self._store
        saved = store.positions.get(label)
        if start is not None and saved is not None and saved.index == start + len(items):
            # Nothing read past them since: move the label back. Elements that
            # expired meanwhile are gone, and the label is told once.
            store.positions[label] = Position(max(start, store.head), expired or start < store.head)
            return
        # The label read further meanwhile: its position cannot move back, so
        # these items are served first to its next read.
        store.given_back.setdefault(label, deque()).extendleft(reversed(items))
