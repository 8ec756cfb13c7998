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
from .._options import FifoOptions
from . import format as _format
from . import plan as _plan
from . import recovery
from .base import RocksDBQueue
from .format import FIFO_COLUMN_FAMILIES, FifoState
from .plan import WritePlan


class FifoSnapshot(NamedTuple):
    head: int
    """Index of the oldest element."""
    tail: int
    """Index the next pushed element gets."""
    pending: int
    """Items reserved and not yet settled."""


# Builds a FifoState without NamedTuple.__new__'s Python-level call: half
# the cost, on the one-item hot paths.
_new_state = tuple.__new__


class RocksDBFifo(RocksDBQueue[FifoState]):
    """A FIFO queue with a capacity, kept in a RocksDB directory."""

    def __init__(self, path: str, options: FifoOptions) -> None:
        self.max_elements = options.capacity()
        local = options.local()
        self._cache_limit = local.cache_bytes
        super().__init__(path, FIFO_COLUMN_FAMILIES, local)
        try:
            self._state = recovery.open_fifo(self._store, self.save_counters_every)
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

    @property
    def payload_size_is_known(self) -> bool:
        """False until payload_size has counted the items once after an unclean shutdown."""
        return self._state.payload_size < _format.PAYLOAD_UNKNOWN_FLOOR

    def push(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically; raise QueueFullError (writing nothing) if they don't fit.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        one_bytes_item = type(items) is list and len(items) == 1 and type(items[0]) is bytes
        if one_bytes_item:
            # One bytes item and no other caller: the blocking face's hot path.
            lock = self._lock
            if lock.acquire(False):
                try:
                    if self._push_one_locked(cast("list[bytes]", items)[0]):
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

    def _push_one_locked(self, value: bytes) -> bool:
        """Push one item, the hot path of every face; False if it needs the general path.

        Spelled out because each helper call here costs about a tenth of the push.
        """
        store = self._store
        if len(value) > store.batch_bytes:
            return False
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
                tail, value, _format.pack_fifo_counters(head, tail + 1, payload_size + size)
            )
            self._unsaved = 0
        self._state = _new_state(FifoState, (head, tail + 1, payload_size + size))
        self._cache.append(value)
        self._cache_size += size
        self.arrivals += 1
        if self._cache_size > self._cache_limit:
            self._trim_cache()
        return True

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
        if not lock.acquire(False):
            result: list[bytes] = self.run(Operation(OperationKind.POP, (limit,)))
            return result
        try:
            if limit == 1:
                popped = self._pop_one_locked()
                if popped is not None:
                    return popped
            store = self._store
            state = self._state
            head, tail, _payload_size = state
            if store.failure is not None or store.closed:
                store.check_usable()
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

    def _pop_one_locked(self) -> list[bytes] | None:
        """Pop one item when the head is cached or the queue is empty, the hot path of
        every face; None if it needs the general path."""
        store = self._store
        state = self._state
        cache = self._cache
        head, tail, payload_size = state
        if store.failure is not None or store.closed:
            store.check_usable()
        if head == tail:
            return []
        if not cache or tail - len(cache) != head:
            return None
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

    def _give_back_items_locked(self, items: list[bytes]) -> None:
        """Put items popped earlier back at the head, in order."""
        if not items:
            return
        self._store.check_usable()
        self._trim_cache()  # see _settle_locked
        plan = WritePlan()
        state = _plan.plan_fifo_give_back(self._state, items, plan)
        self._store.apply(plan)
        self._state = state
        self.arrivals += 1

    def _give_back_locked(self, read: Operation, delivered: int) -> None:
        if read.kind is OperationKind.POP and read.result:
            self._give_back_items_locked(read.result[delivered:])
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
        self.check_settle(reservation)
        self._store.check_usable()
        # Nacked items go back below the head: no cached entry may still
        # claim those indices for items popped before.
        self._trim_cache()
        plan = WritePlan()
        state = self._state
        number, first = reservation.token
        if kind is OperationKind.NACK:
            state = _plan.plan_fifo_nack(state, number, first, reservation.items, plan)
        else:
            _plan.plan_fifo_ack(number, first, len(reservation.items), plan)
        self._store.apply(plan)
        self._state = state
        reservation.settled = True
        self._reserved_count -= len(reservation.items)
        if kind is OperationKind.NACK:
            self.arrivals += 1

    def _execute(self, group: list[Operation]) -> None:
        if len(group) == 1:
            # One caller's one-item push or pop: the blocking face's hot path.
            operation = group[0]
            if operation.kind is OperationKind.PUSH:
                values = operation.arguments[0]
                if len(values) == 1 and self._push_one_locked(values[0]):
                    return
            elif operation.kind is OperationKind.POP and operation.arguments[0] == 1:
                popped = self._pop_one_locked()
                if popped is not None:
                    operation.result = popped
                    return
        state = self._state
        plan = WritePlan()
        cached = 0
        reservations: list[Reservation] = []
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
                    state = _plan.plan_fifo_pop(state, values, plan)
                    operation.result = values
                elif operation.kind is OperationKind.RESERVE:
                    values = self._read_head(state, min(operation.arguments[0], state.length))
                    # The token names the leases: (reservation number, first index).
                    number = next(self._reservation_numbers)
                    reservation = Reservation(values, (number, state.head), self.generation)
                    if values:
                        state = _plan.plan_fifo_reserve(state, number, values, plan)
                    operation.result = reservation
                    reservations.append(reservation)
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
        self._reserved_count += sum(len(reservation.items) for reservation in reservations)
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
