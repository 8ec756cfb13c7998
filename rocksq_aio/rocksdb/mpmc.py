"""The RocksDB MPMC engine: one stream, labels with saved positions, element TTL.

Like the FIFO engine, operations arrive through the dispatcher (``_execute``)
or, for the blocking face, through ``add`` and ``next``, whose one-item cases
are single puts spelled out for speed. Element TTL is ours, not RocksDB's
(whose TTL mode would expire counters and positions too).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any, NamedTuple, cast

from .. import _validate
from .._dispatch import (
    NextGiveBack,
    Operation,
    OperationKind,
    Reservation,
    add_operation,
    next_operation,
    remove_label_operation,
    split_next_read,
)
from .._errors import LeaseExpiredError, QueueCorruptedError
from .._leases import NEVER, LeaseTable
from .._options import MpmcOptions
from .._types import StartPosition
from . import format as _format
from . import plan as _plan
from . import recovery
from .base import RocksDBQueue
from .format import DATA_CF, MPMC_COLUMN_FAMILIES, LabelPosition, MpmcState
from .plan import WritePlan


class MpmcSnapshot(NamedTuple):
    head: int
    """Index of the oldest element still stored."""
    tail: int
    """Index the next added element gets."""
    newest_timestamp_ms: int
    positions: dict[str, LabelPosition]
    given_back: dict[str, list[bytes]]
    """Items given back to a label that had read further, served to it first."""
    pending: dict[str, int]
    """Items each label reserved and has not settled."""


# Builds an MpmcState without NamedTuple.__new__'s Python-level call.
_new_state = tuple.__new__


class LabelPositions:
    """The labels' accessors, answered from the state in memory (the engine's or a view's)."""

    _state: MpmcState

    @property
    def labels(self) -> list[str]:
        return sorted(self._state.positions)

    def position(self, label: str) -> int | None:
        """The index ``label`` reads next, or None for an unknown label."""
        saved = self._state.positions.get(label)
        return None if saved is None else saved.index


class RocksDBMpmc(LabelPositions, RocksDBQueue[MpmcState]):
    """One stream read by many labelled consumers, with element TTL, in a RocksDB directory."""

    def __init__(self, path: str, options: MpmcOptions) -> None:
        self.ttl = options.ttl_seconds()
        self._clock = options.time_source()
        local = options.local()
        self._leases: LeaseTable[Reservation] = LeaseTable(options.leases())
        self._cache_limit = local.cache_bytes
        # Recently added items (without their stamps) by index, oldest first:
        # labels that keep up read them without touching the disk.
        self._cache: dict[int, bytes] = {}
        self._cache_size = 0
        # Rounded up, so that a TTL under a millisecond still expires.
        self._ttl_ms = math.ceil(self.ttl * 1000)
        self._reservation_numbers = itertools.count()
        self._reserved_counts: dict[str, int] = {}
        super().__init__(path, MPMC_COLUMN_FAMILIES, local)
        try:
            # Items of a committed next() that could not be given back by
            # moving the label back (it read further meanwhile): served
            # first to that label.
            self._state, self._given_back = recovery.open_mpmc(
                self._store, self.save_counters_every
            )
            self._head_timestamp_ms = self._timestamp_at(self._state.head, None)
        except BaseException:
            self._store.close()
            raise

    def _encoded_counters(self) -> bytes:
        return _format.encode_mpmc_counters(self._state)

    def _timestamp_at(self, index: int, state: MpmcState | None) -> int | None:
        tail = (state or self._state).tail
        if index >= tail:
            return None
        value = self._store.get(DATA_CF, _format.encode_index(index))
        if value is None:
            raise QueueCorruptedError(f"element {index} is missing from the queue at {self.path!r}")
        return _format.stamped_timestamp(value)

    def add(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically, stamped with the current time.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        # One bytes item and no other caller: the blocking face's hot path.
        if type(items) is list and len(items) == 1 and type(items[0]) is bytes:
            lock = self._lock
            if lock.acquire(False):
                try:
                    if self._add_one_locked(items[0]):
                        return
                finally:
                    lock.release()
        self.run(add_operation(items))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _due_cutoff(self, now_ms: int) -> int | None:
        """The expiry cutoff if the element at the head has expired, else None."""
        cutoff = _plan.expiry_cutoff_ms(now_ms, self._ttl_ms)
        head_timestamp = self._head_timestamp_ms
        if cutoff is None or head_timestamp is None or head_timestamp > cutoff:
            return None
        return cutoff

    def _add_one_locked(self, value: bytes) -> bool:
        """The add() of one item as a single put, if nothing expires; False otherwise."""
        store = self._store
        if store.failure is not None or store.closed:
            store.check_usable()
        now_ms = self._now_ms()
        leases = self._leases
        if self._due_cutoff(now_ms) is not None or (
            leases.earliest != NEVER and leases.clock() >= leases.earliest
        ):
            return False  # the general path plans the expiry in the same batch
        head_timestamp = self._head_timestamp_ms
        head, tail, newest, positions = self._state
        if len(value) + _format.TIMESTAMP_BYTES > store.batch_bytes or tail >= _format.MAX_INDEX:
            return False
        timestamp = now_ms if now_ms > newest else newest
        if self._unsaved < self.save_counters_every:
            store.put_element(tail, _format.stamp(timestamp, value))
            self._unsaved += 1
        else:
            counters = _format.pack_mpmc_counters(head, tail + 1, timestamp)
            store.write_element(tail, _format.stamp(timestamp, value), counters)
            self._unsaved = 0
        self._state = _new_state(MpmcState, (head, tail + 1, timestamp, positions))
        if head_timestamp is None:
            self._head_timestamp_ms = timestamp if head == tail else self._timestamp_at(head, None)
        self._remember([value])
        self.arrivals += 1
        return True

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
            lock = self._lock
            if lock.acquire(False):
                try:
                    read = self._next_one_locked(label)
                    if read is not None:
                        return read
                finally:
                    lock.release()
        result: tuple[list[bytes], bool] = self.run(
            next_operation(label, start_position, max_elements)
        )
        return result

    def _next_one_locked(self, label: str) -> tuple[list[bytes], bool] | None:
        """next(label) of one item for a known label as a single put; None if it needs more."""
        store = self._store
        if store.failure is not None or store.closed:
            store.check_usable()
        head, tail, newest, positions = self._state
        saved = positions.get(label)  # a known label was validated when it was first used
        leases = self._leases
        if (
            saved is None
            or saved.expired_unseen
            or self._given_back.get(label)
            or self._due_cutoff(self._now_ms()) is not None
            or (leases.earliest != NEVER and leases.clock() >= leases.earliest)
        ):
            return None
        index = saved.index
        if index >= tail:
            return [], False
        item = self._cache.get(index)
        if item is None:
            item = _format.unstamp(store.read_elements(index, 1)[0])
        moved = LabelPosition(index + 1)
        store.put_position(label.encode("utf-8"), _format.encode_position(moved))
        moved_positions = dict(positions)
        moved_positions[label] = moved
        self._state = _new_state(MpmcState, (head, tail, newest, moved_positions))
        return [item], False

    def _remember(self, values: list[bytes]) -> None:
        """Cache values just added at the tail; forget the oldest beyond the limit."""
        cache = self._cache
        first = self._state.tail - len(values)
        for offset, value in enumerate(values):
            cache[first + offset] = value
        self._cache_size += sum(map(len, values))
        # Every add comes through here: the cache holds [tail - len(cache), tail).
        oldest = self._state.tail - len(cache)
        while self._cache_size > self._cache_limit:
            self._cache_size -= len(cache.pop(oldest))
            oldest += 1

    def remove_label(self, label: object, no_gil: object = True) -> bool:
        """Forget ``label`` and its position; False when it did not exist.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        removed: bool = self.run(remove_label_operation(label))
        return removed

    def _expire(self, state: MpmcState, now_ms: int, plan: WritePlan) -> MpmcState:
        cutoff = self._due_cutoff(now_ms)
        if cutoff is None:
            return state
        if state.newest_timestamp_ms <= cutoff:
            new_head = state.tail
        else:
            # Stamps never decrease along the queue: bisect for the first live one.
            low, high = state.head, state.tail - 1
            while low < high:
                middle = (low + high) // 2
                stamp = self._timestamp_at(middle, state)
                if stamp is not None and stamp > cutoff:
                    high = middle
                else:
                    low = middle + 1
            new_head = low
        return _plan.plan_mpmc_expire(state, new_head, plan)

    def _execute(self, group: list[Operation]) -> None:
        if len(group) == 1:
            # One caller's one-item add or next: the blocking face's hot paths.
            operation = group[0]
            if operation.kind is OperationKind.ADD:
                values = operation.arguments[0]
                if len(values) == 1 and self._add_one_locked(values[0]):
                    return
            elif operation.kind is OperationKind.NEXT and operation.arguments[2] == 1:
                label = operation.arguments[0]
                saved = self._state.positions.get(label)
                read = self._next_one_locked(label)
                if read is not None and saved is not None:
                    operation.result = read
                    operation.token = saved.index  # where its item came from (give-backs)
                    return
        plan = WritePlan()
        now_ms = self._now_ms()
        state = self._expire(self._state, now_ms, plan)
        leases = self._leases
        now = leases.now()
        if leases.due(now):
            self._plan_release([reservation for _n, reservation in leases.take_expired(now)], plan)
        reserved: list[Reservation] = []
        reserved_ms: int | None = None
        committed_tail = state.tail
        added: list[bytes] = []  # items (unstamped) this group adds, from committed_tail on
        for operation in group:
            if operation.kind is OperationKind.ADD:
                values = operation.arguments[0]
                state = _plan.plan_mpmc_add(state, values, now_ms, plan)
                added.extend(values)
            elif operation.kind is OperationKind.NEXT:
                state, items, expired, operation.token = self._plan_read(
                    state, operation.arguments, plan, committed_tail, added
                )
                operation.result = (items, expired)
            elif operation.kind is OperationKind.RESERVE:
                label = operation.arguments[0]
                state, items, _expired, source = self._plan_read(
                    state, operation.arguments, plan, committed_tail, added
                )
                number = next(self._reservation_numbers)
                key = _format.mpmc_reservation_key(label, number)
                deliveries = [n + 1 for n in source] if isinstance(source, list) else None
                reservation = Reservation(
                    items, (number, key), self.generation, label, deliveries
                )
                if items:
                    if reserved_ms is None:
                        reserved_ms = int(self._clock() * 1000)
                    leased = list(zip(items, reservation.deliveries, strict=True))
                    _plan.plan_mpmc_reserve(key, reserved_ms, leased, plan)
                    self._reserved_counts[label] = self._reserved_counts.get(label, 0) + len(items)
                    reserved.append(reservation)
                operation.result = reservation
            elif operation.kind in (OperationKind.ACK, OperationKind.NACK):
                try:
                    self._plan_settle(operation.arguments[0], operation.kind, plan)
                except LeaseExpiredError as refusal:
                    operation.error = refusal  # changed nothing; the group goes on
            elif operation.kind is OperationKind.PEEK:
                label, limit = operation.arguments
                waiting = self._given_back.get(label)
                if waiting:
                    operation.result = [item for item, _n in itertools.islice(waiting, limit)]
                else:
                    start = _plan.label_start(state, label, StartPosition.Oldest)
                    count = _plan.readable_count(state, start, limit)
                    operation.result = self._read(start.index, count, committed_tail, added)
            elif operation.kind is OperationKind.EXTEND:
                try:
                    self._extend_locked(operation.arguments[0], now)
                except LeaseExpiredError as refusal:
                    operation.error = refusal
            else:
                label = operation.arguments[0]
                state, removed = _plan.plan_mpmc_remove_label(state, label, plan)
                if self._given_back.pop(label, None):
                    _plan.plan_mpmc_given_back(label, [], plan)
                operation.result = removed
        if not plan.is_empty:
            self._store.apply(plan)
            if added:
                self.arrivals += 1
        for reservation in reserved:
            leases.add(reservation.token[0], reservation, now)
        head_moved = state.head != self._state.head or self._head_timestamp_ms is None
        self._state = state
        if added:
            self._remember(added)
        if head_moved:
            self._head_timestamp_ms = self._timestamp_at(state.head, None)

    def _plan_read(
        self,
        state: MpmcState,
        arguments: tuple[Any, ...],
        plan: WritePlan,
        committed_tail: int,
        added: list[bytes],
    ) -> tuple[MpmcState, list[bytes], bool, int | list[int]]:
        """Plan a next(): items given back to the label first, else from its position.

        Returns the new state, the items, the expiry report and where the items
        came from: the index of the first, or (given back before) their deliveries.
        """
        label, start_position, limit = arguments
        given_back = self._given_back.get(label)
        if given_back:
            taken = [given_back.popleft() for _ in range(min(limit, len(given_back)))]
            _plan.plan_mpmc_given_back(label, list(given_back), plan)
            return state, [item for item, _n in taken], False, [times for _item, times in taken]
        start = _plan.label_start(state, label, start_position)
        count = _plan.readable_count(state, start, limit)
        items = self._read(start.index, count, committed_tail, added)
        state, expired = _plan.plan_mpmc_next(state, label, start, count, plan)
        return state, items, expired, start.index

    def _plan_settle(self, reservation: Reservation, kind: OperationKind, plan: WritePlan) -> None:
        if reservation.settled:
            return
        if not reservation.items:
            reservation.settled = True
            return
        self._check_lease(reservation)
        reservation.settled = True
        self._leases.pop(reservation.token[0])
        if kind is OperationKind.NACK:
            self._plan_release([reservation], plan)
            return
        _plan.plan_mpmc_settle(reservation.token[1], plan)
        self._reserved_counts[cast(str, reservation.label)] -= len(reservation.items)

    def _plan_release(self, released: list[Reservation], plan: WritePlan) -> None:
        """Give back reservations to their labels, first, the first in front of the others."""
        by_label: dict[str, list[tuple[bytes, int]]] = {}
        for reservation in released:
            label = cast(str, reservation.label)
            _plan.plan_mpmc_settle(reservation.token[1], plan)
            self._reserved_counts[label] -= len(reservation.items)
            by_label.setdefault(label, []).extend(
                zip(reservation.items, reservation.deliveries, strict=True)
            )
        for label, items in by_label.items():
            waiting = self._given_back.setdefault(label, deque())
            waiting.extendleft(reversed(items))
            _plan.plan_mpmc_given_back(label, list(waiting), plan)
        self.arrivals += 1

    # ------------------------------------------------------------ inspection

    def snapshot(self) -> MpmcSnapshot:
        """The counters, positions, given-back items and reservations, for tools."""
        with self._lock:
            head, tail, newest, positions = self._state
            return MpmcSnapshot(
                head,
                tail,
                newest,
                dict(positions),
                {
                    label: [item for item, _times in waiting]
                    for label, waiting in self._given_back.items()
                    if waiting
                },
                {label: count for label, count in self._reserved_counts.items() if count},
            )

    def read_stored(self, start: int, count: int) -> list[tuple[int, bytes]]:
        """(timestamp in ms, item) at indices [start, start + count), consuming nothing."""
        with self._lock:
            self._store.check_usable()
            values = self._store.read_elements(start, count)
        return [(_format.stamped_timestamp(value), _format.unstamp(value)) for value in values]

    def mark_expired_unseen(self, label: str) -> None:
        """Make ``label``'s next read report that it missed expired elements (imports)."""
        with self._lock:
            self._store.check_usable()
            state = self._state
            saved = state.positions.get(label)
            if saved is None:
                raise KeyError(label)
            marked = LabelPosition(saved.index, expired_unseen=True)
            plan = WritePlan()
            plan.position_writes.append((label.encode("utf-8"), _format.encode_position(marked)))
            self._store.apply(plan)
            positions = dict(state.positions)
            positions[label] = marked
            self._state = state._replace(positions=positions)

    # ------------------------------------------------------------ reservations

    def pending(self, label: str) -> int:
        """Items ``label`` reserved and has not acked or nacked yet."""
        return self._reserved_counts.get(label, 0)

    def _read(self, start: int, count: int, committed_tail: int, added: list[bytes]) -> list[bytes]:
        """Items (unstamped) at [start, start + count): cached, stored, or added by this group."""
        committed_stop = start + max(0, min(count, committed_tail - start))
        # The cache holds the committed indices [committed_tail - len(cache), committed_tail).
        cached_from = min(max(start, committed_tail - len(self._cache)), committed_stop)
        unstamp = _format.unstamp
        values = [unstamp(value) for value in self._store.read_elements(start, cached_from - start)]
        values.extend(self._cache[index] for index in range(cached_from, committed_stop))
        if committed_stop < start + count:
            offset = committed_stop - committed_tail
            values.extend(added[offset : offset + count - len(values)])
        return values

    def _give_back_locked(self, read: Operation, delivered: int) -> None:
        if read.kind is OperationKind.RESERVE:
            plan = WritePlan()
            self._plan_settle(read.result, OperationKind.NACK, plan)
            if not plan.is_empty:
                self._store.apply(plan)
            return
        if read.kind is not OperationKind.NEXT:
            return
        self._give_back_next_locked(split_next_read(read, delivered))

    def _give_back_next_locked(self, back: NextGiveBack) -> None:
        label, items, start, expired, deliveries = back
        if not items:
            return
        self.arrivals += 1
        if start is not None:
            plan = WritePlan()
            state, rewound = _plan.plan_mpmc_rewind(
                self._state, label, start, len(items), plan, expired_unseen=expired
            )
            if rewound:
                self._store.apply(plan)
                self._state = state
                return
        # The label read further meanwhile: its saved position cannot move
        # back, so these items are saved apart and served to its next read.
        waiting = self._given_back.setdefault(label, deque())
        returned = list(zip(items, deliveries or [0] * len(items), strict=True))
        plan = WritePlan()
        _plan.plan_mpmc_given_back(label, [*returned, *waiting], plan)
        self._store.apply(plan)
        waiting.extendleft(reversed(returned))
