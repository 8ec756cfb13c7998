"""The RocksDB FIFO engine: push, pop and reservations on a RocksDB directory.

Operations arrive through the dispatcher (group commit, ``_execute``) or, for
the blocking face, through ``push`` and ``pop``, whose one-item cases are
spelled out in full: they are the hot path, and each helper call there costs
about a tenth of the whole push.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import NamedTuple, cast

from .. import _validate
from .._dispatch import Operation, OperationKind, Reservation
from .._errors import LeaseExpiredError
from .._leases import NEVER, LeaseTable
from .._options import FifoOptions
from . import format as _format
from . import plan as _plan
from . import recovery
from .base import RocksDBQueue
from .format import FIFO_COLUMN_FAMILIES, FifoState
from .plan import Released, WritePlan


class FifoSnapshot(NamedTuple):
    head: int
    """Index of the oldest element."""
    tail: int
    """Index the next pushed element gets."""
    pending: int
    """Items reserved and not yet settled."""


def _released(reservation: Reservation) -> Released:
    number, first = reservation.token
    return Released(number, first, reservation.items, reservation.deliveries)


# Builds a FifoState without NamedTuple.__new__'s Python-level call: half
# the cost, on the one-item hot paths.
_new_state = tuple.__new__


class RocksDBFifo(RocksDBQueue[FifoState]):
    """A FIFO queue with a capacity, kept in a RocksDB directory."""

    def __init__(self, path: str, options: FifoOptions) -> None:
        self.max_elements = options.capacity()
        local = options.local()
        self._leases: LeaseTable[Reservation] = LeaseTable(options.leases())
        self._clock = options.time_source()
        self._cache_limit = local.cache_bytes
        super().__init__(path, FIFO_COLUMN_FAMILIES, local)
        try:
            self._state, self._deliveries = recovery.open_fifo(
                self._store, self.save_counters_every
            )
        except BaseException:
            self._store.close()
            raise
        # Items at indices [tail - len(cache), tail), newest last.
        self._cache: deque[bytes] = deque()
        self._cache_size = 0
        self._reserved_count = 0
        # Every lease found at open was released, so numbers start again.
        self._reservation_numbers = itertools.count()

    def _encoded_counters(self) -> bytes:
        return _format.encode_fifo_state(self._state)

    @property
    def payload_size_is_known(self) -> bool:
        """False until payload_size has counted the items once after an unclean shutdown."""
        return self._state.payload_size < _format.PAYLOAD_UNKNOWN_FLOOR

    @property
    def payload_size(self) -> int:
        """Sum of the stored items' sizes in bytes.

        Answered from memory, except the first time after an unclean shutdown,
        when it is counted by reading the queue once.
        """
        payload = self._state.payload_size
        if payload < _format.PAYLOAD_UNKNOWN_FLOOR:
            return payload
        with self._lock:
            head, tail, payload = self._state
            if payload >= _format.PAYLOAD_UNKNOWN_FLOOR:
                payload = 0 if head == tail else self._store.payload_of(head, tail)
                self._state = FifoState(head, tail, payload)
            return payload

    def push(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically; raise QueueFullError (writing nothing) if they don't fit.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        one_bytes_item = type(items) is list and len(items) == 1 and type(items[0]) is bytes
        leases = self._leases
        if leases.earliest != NEVER and leases.clock() >= leases.earliest:
            # A lease expired: the general path releases it first.
            values = cast("list[bytes]", items) if one_bytes_item else _validate.item_list(items)
            self.run(Operation(OperationKind.PUSH, (list(values),), sum(map(len, values))))
            return
        if one_bytes_item:
            # One bytes item and no other caller: the blocking face's hot
            # path, spelled out because each helper call costs about as much
            # as a tenth of the whole push.
            value: bytes = cast("list[bytes]", items)[0]
            lock = self._lock
            store = self._store
            if len(value) <= store.batch_bytes and lock.acquire(False):
                try:
                    if store.failure is not None or store.closed:
                        store.check_usable()
                    head, tail, payload_size = self._state
                    if tail - head >= self.max_elements:
                        raise _plan.queue_full(tail - head, 1, self.max_elements)
                    size = len(value)
                    if self._unsaved < self.save_counters_every:
                        store.put_element(tail, value)
                        self._unsaved += 1
                    else:
                        store.write_element(
                            tail,
                            value,
                            _format.pack_fifo_counters(head, tail + 1, payload_size + size),
                        )
                        self._unsaved = 0
                    self._state = _new_state(FifoState, (head, tail + 1, payload_size + size))
                    self._cache.append(value)
                    self._cache_size += size
                    self.arrivals += 1
                    if self._cache_size > self._cache_limit:
                        self._trim_cache()
                    return
                finally:
                    lock.release()
        # One bytes item is used as it is, without the validating copy.
        values = cast("list[bytes]", items) if one_bytes_item else _validate.item_list(items)
        # The one-caller case skips the Operation and the pending queue: it
        # is the hot path of the blocking face.
        lock = self._lock
        if not lock.acquire(False):
            self.run(Operation(OperationKind.PUSH, (list(values),), sum(map(len, values))))
            return
        try:
            store = self._store
            if store.failure is not None or store.closed:
                store.check_usable()
            if not values:
                return
            size = len(values[0]) if len(values) == 1 else sum(map(len, values))
            state = self._state
            new_state = _plan.fifo_pushed(state, len(values), size, self.max_elements)
            cache = self._cache
            cache.extend(values)
            try:
                if size <= store.batch_bytes:
                    store.write_elements(state.tail, values, _format.encode_fifo_state(new_state))
                else:
                    plan = WritePlan()
                    _plan.plan_fifo_push(state, values, self.max_elements, plan)
                    store.apply(plan)
            except BaseException:
                for _ in values:
                    cache.pop()
                raise
            self._cache_size += size
            self._state = new_state
            self.arrivals += 1
            if self._cache_size > self._cache_limit:
                self._trim_cache()
        finally:
            lock.release()

    def pop(self, max_elements: object = 1, no_gil: object = True) -> list[bytes]:
        """Remove and return up to ``max_elements`` items from the head ([] when empty).

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        limit = (
            max_elements
            if type(max_elements) is int and max_elements > 0
            else _validate.positive_int(max_elements, "max_elements")
        )
        lock = self._lock
        leases = self._leases
        if (
            self._deliveries
            or (leases.earliest != NEVER and leases.clock() >= leases.earliest)
            or not lock.acquire(False)
        ):
            # Contended, a lease expired (the general path releases it first),
            # or items handed out before are stored (their deliveries go too).
            result: list[bytes] = self.run(Operation(OperationKind.POP, (limit,)))
            return result
        try:
            store = self._store
            state = self._state
            cache = self._cache
            head, tail, payload_size = state
            if store.failure is not None or store.closed:
                store.check_usable()
            if limit == 1 and cache and tail - len(cache) == head:
                # The head is the oldest cached item: the hot path, spelled out.
                value = cache[0]
                size = len(value)
                if size > payload_size:
                    _plan.fifo_popped(state, 1, size)  # raises
                if self._unsaved < self.save_counters_every:
                    store.delete_element(head)
                    self._unsaved += 1
                else:
                    store.write_element(
                        head, None, _format.pack_fifo_counters(head + 1, tail, payload_size - size)
                    )
                    self._unsaved = 0
                self._state = _new_state(FifoState, (head + 1, tail, payload_size - size))
                cache.popleft()
                self._cache_size -= size
                return [value]
            values = self._read_head(state, min(limit, tail - head))
            if values:
                size = len(values[0]) if len(values) == 1 else sum(map(len, values))
                new_state = _plan.fifo_popped(state, len(values), size)
                if len(values) == 1 and self._unsaved < self.save_counters_every:
                    # Draining a backlog read from disk, one item at a time.
                    store.delete_element(head)
                    self._unsaved += 1
                else:
                    counters = _format.encode_fifo_state(new_state)
                    store.delete_elements(head, new_state.head, counters)
                    self._unsaved = 0
                self._state = new_state
                self._trim_cache()
            return values
        finally:
            lock.release()

    def _give_back_items_locked(self, items: list[bytes], deliveries: list[int] | None) -> None:
        """Put items popped earlier back at the head, in order, with their deliveries."""
        if not items:
            return
        self._store.check_usable()
        self._trim_cache()  # see _release_locked
        plan = WritePlan()
        state = _plan.plan_fifo_give_back(self._state, items, plan, deliveries)
        self._store.apply(plan)
        self._state = state
        self._count_deliveries(state.head, deliveries)
        self.arrivals += 1

    def _count_deliveries(self, first: int, deliveries: list[int] | None) -> None:
        """Note the deliveries of items just put at indices ``first`` on."""
        for index, times in enumerate(deliveries or (), first):
            if times:
                self._deliveries[index] = times

    def _take_deliveries(self, first: int, count: int) -> tuple[list[int] | None, list[int]]:
        """The deliveries of the stored items [first, first + count) (None: all 0), forgotten,
        and the indices among them that had some."""
        if not self._deliveries:
            return None, []
        counts = [self._deliveries.pop(index, 0) for index in range(first, first + count)]
        counted = [index for index, times in enumerate(counts, first) if times]
        return (counts if counted else None), counted

    def _give_back_locked(self, read: Operation, delivered: int) -> None:
        if read.kind is OperationKind.POP and read.result:
            counts: list[int] | None = read.token
            self._give_back_items_locked(
                read.result[delivered:], None if counts is None else counts[delivered:]
            )
            read.result = read.result[:delivered]
        elif read.kind is OperationKind.RESERVE and read.result is not None:
            self._settle_locked(read.result, OperationKind.NACK)

    # ------------------------------------------------------------ inspection

    def snapshot(self) -> FifoSnapshot:
        """The counters as of now, for tools (the command line's ``info``)."""
        with self._lock:
            head, tail, _payload = self._state
            return FifoSnapshot(head, tail, self.pending)

    def read_stored(self, start: int, count: int) -> list[bytes]:
        """The items at indices [start, start + count) without consuming them."""
        with self._lock:
            self._store.check_usable()
            return self._store.read_elements(start, count)

    # ------------------------------------------------------------ reservations

    @property
    def pending(self) -> int:
        """Items reserved and not yet acked or nacked."""
        return self._reserved_count


    def _settle_locked(self, reservation: Reservation, kind: OperationKind) -> None:
        if reservation.settled or not reservation.items:
            reservation.settled = True
            return
        self._check_lease(reservation)
        self._store.check_usable()
        number, first = reservation.token
        plan = WritePlan()
        if kind is OperationKind.NACK:
            self._release_locked([_released(reservation)])
        else:
            _plan.plan_fifo_ack(number, first, len(reservation.items), plan)
            self._store.apply(plan)
            self._reserved_count -= len(reservation.items)
        self._leases.pop(number)
        reservation.settled = True

    def _release_locked(self, released: list[Released]) -> None:
        """Give back reservations together, the first in front, with their deliveries."""
        # Released items go back below the head: no cached entry may still
        # claim those indices for items popped before.
        self._trim_cache()
        plan = WritePlan()
        state = _plan.plan_fifo_release(self._state, released, plan)
        self._store.apply(plan)
        self._state = state
        for reservation in released:
            self._count_deliveries(state.head, reservation.deliveries)
            state = state._replace(head=state.head + len(reservation.items))
            self._reserved_count -= len(reservation.items)
        self.arrivals += 1

    def _release_expired_locked(self, now: float) -> None:
        self._release_locked(
            [_released(reservation) for _number, reservation in self._leases.take_expired(now)]
        )

    def _execute(self, group: list[Operation]) -> None:
        leases = self._leases
        now = leases.now()
        if leases.due(now):
            self._store.check_usable()
            self._release_expired_locked(now)
        state = self._state
        plan = WritePlan()
        cached = 0
        reservations: list[Reservation] = []
        reserved_ms: int | None = None
        pushed = False
        try:
            position, count = 0, len(group)
            while position < count:
                operation = group[position]
                position += 1
                if operation.kind is OperationKind.PUSH:
                    # Consecutive pushes become one append: planning them one
                    # by one cost more than writing them.
                    pushes = [operation]
                    while position < count and group[position].kind is OperationKind.PUSH:
                        pushes.append(group[position])
                        position += 1
                    state, refusals = _plan.plan_fifo_pushes(
                        state, [push.arguments[0] for push in pushes], self.max_elements, plan
                    )
                    accepted: list[bytes] = []
                    accepted_size = 0
                    for push, refusal in zip(pushes, refusals, strict=True):
                        if refusal is None:
                            accepted.extend(push.arguments[0])
                            accepted_size += push.size
                        else:
                            push.error = refusal
                    # Later pops of this group read these from the cache.
                    self._cache_tentatively(accepted, accepted_size)
                    cached += len(accepted)
                    pushed = pushed or bool(accepted)
                elif operation.kind is OperationKind.POP:
                    values = self._read_head(state, min(operation.arguments[0], state.length))
                    # The token: their deliveries, restored if they are given back.
                    operation.token, counted = self._take_deliveries(state.head, len(values))
                    state = _plan.plan_fifo_pop(state, values, plan, counted)
                    operation.result = values
                elif operation.kind is OperationKind.RESERVE:
                    values = self._read_head(state, min(operation.arguments[0], state.length))
                    before, counted = self._take_deliveries(state.head, len(values))
                    deliveries = [1] * len(values) if before is None else [n + 1 for n in before]
                    # The token names the leases: (reservation number, first index).
                    number = next(self._reservation_numbers)
                    reservation = Reservation(
                        values, (number, state.head), self.generation, deliveries=deliveries
                    )
                    if values:
                        if reserved_ms is None:
                            reserved_ms = int(self._clock() * 1000)
                        state = _plan.plan_fifo_reserve(
                            state, number, values, deliveries, reserved_ms, plan, counted
                        )
                        reservations.append(reservation)
                    operation.result = reservation
                elif operation.kind is OperationKind.PEEK:
                    operation.result = self._read_head(
                        state, min(operation.arguments[0], state.length)
                    )
                elif operation.kind is OperationKind.EXTEND:
                    try:
                        self._extend_locked(operation.arguments[0], now)
                    except LeaseExpiredError as refusal:
                        operation.error = refusal
                else:
                    # Settled on their own, after what came before: a nack
                    # writes below the head, which reads of this group must see.
                    if not plan.is_empty:
                        self._store.apply(plan)
                        plan = WritePlan()
                        cached = 0  # committed: no longer to be taken back
                    self._state = state
                    try:
                        self._settle_locked(operation.arguments[0], operation.kind)
                    except LeaseExpiredError as refusal:
                        operation.error = refusal  # changed nothing; the group goes on
                    state = self._state
            if not plan.is_empty:
                self._store.apply(plan)
        except BaseException:
            self._uncache(cached)
            raise
        if pushed:  # not ``cached``: a settle in the group resets that
            self.arrivals += 1
        for reservation in reservations:
            leases.add(reservation.token[0], reservation, now)
            self._reserved_count += len(reservation.items)
        self._state = state
        self._trim_cache()

    def _cache_tentatively(self, values: list[bytes], size: int) -> None:
        # Cached before the write, so the cache may run past the committed
        # tail until the write succeeds, or _uncache() takes them back.
        self._cache.extend(values)
        self._cache_size += size

    def _uncache(self, count: int) -> None:
        for _ in range(count):
            self._cache_size -= len(self._cache.pop())

    def _read_head(self, state: FifoState, count: int) -> list[bytes]:
        if count == 0:
            return []
        cached_from = state.tail - len(self._cache)
        if cached_from <= state.head:  # all of them are cached
            skip = state.head - cached_from
            if count == 1:
                return [self._cache[skip]]
            return list(itertools.islice(self._cache, skip, skip + count))
        from_disk = min(count, cached_from - state.head)
        values = self._store.read_elements(state.head, from_disk)
        from_cache = count - from_disk
        if from_cache:
            skip = state.head + from_disk - cached_from
            values.extend(itertools.islice(self._cache, skip, skip + from_cache))
        return values

    def _trim_cache(self) -> None:
        cache = self._cache
        state = self._state
        # Entries behind the head were popped; the oldest go first when over the limit.
        stale = state.head - (state.tail - len(cache))
        while cache and (stale > 0 or self._cache_size > self._cache_limit):
            self._cache_size -= len(cache.popleft())
            stale -= 1
