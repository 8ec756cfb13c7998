"""The synchronous core: all queue behaviour lives here.

Every operation becomes an :class:`Operation` that is submitted to the queue
and executed by ``drain()``, which takes the queue's lock, merges everything
pending (in arrival order, bounded in bytes) into one plan, writes it as one
atomic batch and completes all the merged operations at once (group commit).
The blocking face calls ``run()`` (submit, then drain until done); the async
and nonblocking faces submit and call ``drain()`` from a worker thread.

A caller that stops waiting calls ``abandon()``: an operation that had not
started is withdrawn, and items of a pop or next that already committed are
given back instead of being lost.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from . import _plan, _validate
from ._errors import QueueCorruptedError, QueueError
from ._plan import (
    DATA_CF,
    FIFO_COLUMN_FAMILIES,
    FIFO_KIND,
    FIFO_KIND_V1,
    FIFO_KINDS,
    KIND_KEY,
    META_CF,
    MPMC_COLUMN_FAMILIES,
    MPMC_KIND,
    MPMC_KIND_V1,
    MPMC_KINDS,
    STATE_KEY,
    FifoState,
    LabelPosition,
    MpmcState,
    WritePlan,
)
from ._storage import DEFAULT_BATCH_BYTES, Store, directory_size
from ._types import StartPosition

DEFAULT_CAPACITY = 1_000_000_000
DEFAULT_DIRECTORY_MODE = 0o700
"""Mode of the directories a queue creates: queued work is often private."""
SAVE_COUNTERS_EVERY = 1024
"""One-item pushes and pops write only their data key; every this many, the
counters go with it, which bounds what the next open has to look through."""
DEFAULT_CACHE_BYTES = 8 * 1024 * 1024
"""Recently pushed items kept in memory so a pop soon after a push needs no read.
Bounded in bytes, so memory never depends on the queue's capacity or length."""

Clock = Callable[[], float]

# Builds a FifoState/MpmcState without NamedTuple.__new__'s Python-level
# call: half the cost, on the one-item hot paths.
_new_state = tuple.__new__


class Kind(enum.Enum):
    PUSH = "push"
    POP = "pop"
    ADD = "add"
    NEXT = "next"
    REMOVE_LABEL = "remove_label"
    RESERVE = "reserve"
    ACKNOWLEDGE = "acknowledge"
    RELEASE = "release"


# Settling a lease must happen even when its caller stops waiting.
_NEVER_WITHDRAWN = (Kind.ACKNOWLEDGE, Kind.RELEASE)


class Lease:
    """Items handed out by reserve(): removed on acknowledge, back at the head on release."""

    __slots__ = ("indices", "items", "settled")

    def __init__(self, indices: range, items: list[bytes]) -> None:
        self.indices = indices
        self.items = items
        self.settled = False


class Stage(enum.IntEnum):
    PENDING = 0
    RUNNING = 1
    DONE = 2
    WITHDRAWN = 3


class MpmcLease:
    """Items a label reserved: settled by acknowledge (done) or release (redeliver)."""

    __slots__ = ("items", "key", "label", "settled")

    def __init__(self, label: str, key: bytes, items: list[bytes]) -> None:
        self.label = label
        self.key = key
        self.items = items
        self.settled = False


class Operation:
    """One validated call waiting for, or done by, a group commit."""

    __slots__ = ("abandoned", "arguments", "error", "kind", "result", "size", "stage")

    def __init__(self, kind: Kind, arguments: tuple[Any, ...], size: int = 0) -> None:
        self.kind = kind
        self.arguments = arguments
        self.size = size
        self.stage = Stage.PENDING
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _check_kind(store: Store, expected: tuple[bytes, ...]) -> tuple[bytes, bytes] | None:
    """Return the stored kind and counters, or None for a queue that was never initialised."""
    kind = store.get(META_CF, KIND_KEY)
    state = store.get(META_CF, STATE_KEY)
    if kind is None and state is None:
        if store.data_key_bounds() is not None:
            raise QueueCorruptedError(f"queue at {store.path!r} holds elements but no counters")
        return None
    if kind is None:
        raise QueueCorruptedError(f"queue at {store.path!r} has counters but lost its kind")
    if kind not in expected:
        names = {kind: "a FIFO queue" for kind in FIFO_KINDS} | {
            kind: "an MPMC queue" for kind in MPMC_KINDS
        }
        found = names.get(kind or b"", f"an unknown kind {kind!r}")
        raise QueueError(f"path {store.path!r} holds {found}, not {names[expected[0]]}")
    if state is None:
        raise QueueCorruptedError(f"queue at {store.path!r} has lost its counters")
    return kind, state


def _check_data_matches(store: Store, head: int, tail: int) -> None:
    """Cross-check the counters with the stored keys and drop staged orphans."""
    bounds = store.data_key_bounds()
    if bounds is None:
        if head != tail:
            raise QueueCorruptedError(
                f"queue at {store.path!r} counts {tail - head} elements but stores none"
            )
        return
    first, last = bounds
    if head < tail:
        if first > head or last < tail - 1:
            raise QueueCorruptedError(
                f"queue at {store.path!r} counts elements [{head}, {tail}) but stores "
                f"keys from {first} to {last}"
            )
        if store.get(DATA_CF, _plan.encode_index(head)) is None or (
            store.get(DATA_CF, _plan.encode_index(tail - 1)) is None
        ):
            raise QueueCorruptedError(
                f"queue at {store.path!r} is missing the element at its head or tail"
            )
    if first < head or last >= tail:
        store.discard_outside(head, tail)


StateT = TypeVar("StateT", FifoState, MpmcState)


class _CoreBase(Generic[StateT]):
    _store: Store
    _state: StateT
    _lock: threading.Lock
    _pending: deque[Operation]
    _pending_lock: threading.Lock
    _unsaved: int
    """One-item writes since the counters were last saved (format v2)."""

    def _start_dispatch(self) -> None:
        # Counts commits that made elements available; async waiters watch it.
        self.arrivals = 0
        self._lock = threading.Lock()
        self._pending = deque()
        self._pending_lock = threading.Lock()

    @property
    def path(self) -> str:
        return self._store.path

    # The properties read memory only: no I/O, safe from an event loop.
    @property
    def len(self) -> int:
        """Elements stored (MPMC: expired ones leave at the next add, next or remove_label)."""
        return self._state.length

    def __len__(self) -> int:
        return self._state.length

    @property
    def is_empty(self) -> bool:
        return self._state.length == 0

    @property
    def closed(self) -> bool:
        return self._store.closed

    @property
    def sync(self) -> bool:
        return self._store.sync

    @property
    def batch_bytes(self) -> int:
        return self._store.batch_bytes

    @property
    def disk_size(self) -> int:
        """Bytes used by the queue's directory."""
        return directory_size(self._store.path)

    # ------------------------------------------------------------ dispatch

    def submit(self, operation: Operation) -> None:
        self._store.check_usable()
        with self._pending_lock:
            self._pending.append(operation)

    def drain(self) -> None:
        """Execute pending operations as one group; returns at once if none are pending."""
        with self._lock:
            with self._pending_lock:
                group = self._take_group()
            if not group:
                return
            try:
                self._store.check_usable()
                self._execute(group)
            except BaseException as error:
                for operation in group:
                    operation.result = None
                    operation.error = error
            with self._pending_lock:
                abandoned = []
                for operation in group:
                    operation.stage = Stage.DONE
                    if operation.abandoned:
                        abandoned.append(operation)
            for operation in abandoned:
                self._give_back_quietly(operation)

    def _take_group(self) -> list[Operation]:
        pending = self._pending
        group: list[Operation] = []
        size = 0
        limit = self._store.batch_bytes
        while pending and (not group or size + pending[0].size <= limit):
            operation = pending.popleft()
            operation.stage = Stage.RUNNING
            size += operation.size
            group.append(operation)
        return group

    def run(self, operation: Operation) -> Any:
        """Execute ``operation`` (with whatever else is pending) and return its result."""
        # Uncontended: execute directly, skipping the pending queue. Anything
        # submitted meanwhile waits for the lock and is drained after us.
        if not self._pending and self._lock.acquire(False):
            try:
                if not self._pending:
                    self._store.check_usable()
                    self._execute([operation])
                    return operation.outcome()
            finally:
                self._lock.release()
        self.submit(operation)
        while operation.stage is not Stage.DONE:
            self.drain()
        return operation.outcome()

    def abandon(self, operation: Operation) -> None:
        """The caller stopped waiting: withdraw the operation or give its items back."""
        with self._pending_lock:
            if operation.kind in _NEVER_WITHDRAWN:
                return
            if operation.stage is Stage.PENDING:
                self._pending.remove(operation)
                operation.stage = Stage.WITHDRAWN
                return
            if operation.stage is Stage.RUNNING:
                operation.abandoned = True  # drain() gives it back when done
                return
        if operation.stage is Stage.DONE:
            with self._lock:
                self._give_back_quietly(operation)

    def _give_back_quietly(self, operation: Operation) -> None:
        # Only fails once the store is in its error state, which every later
        # call reports; the caller giving up must not see a second error.
        with contextlib.suppress(QueueError):
            self._give_back_locked(operation)

    def _execute(self, group: list[Operation]) -> None:
        raise NotImplementedError

    def _give_back_locked(self, operation: Operation) -> None:
        """Return the items of a completed, undelivered read to the queue."""

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the queue; its path can be reopened at once."""
        with self._lock:
            try:
                self._before_close_locked()
            finally:
                self._store.close()

    def _before_close_locked(self) -> None:
        # Saved counters spare the next open its search for the head and tail.
        if self._unsaved and self._store.failure is None and not self._store.closed:
            self._store.apply(WritePlan(meta_puts=[(STATE_KEY, self._encoded_counters())]))
            self._unsaved = 0

    def _encoded_counters(self) -> bytes:
        raise NotImplementedError

    def __enter__(self) -> _CoreBase[StateT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None and not store.closed:
            with contextlib.suppress(QueueError):
                try:
                    self._before_close_locked()
                finally:
                    store.close()


class FifoCore(_CoreBase[FifoState]):
    """A persistent FIFO queue with a capacity."""

    def __init__(
        self,
        path: object,
        max_elements: object = DEFAULT_CAPACITY,
        *,
        sync: object = False,
        batch_bytes: object = DEFAULT_BATCH_BYTES,
        cache_bytes: object = DEFAULT_CACHE_BYTES,
        directory_mode: object = DEFAULT_DIRECTORY_MODE,
    ) -> None:
        absolute = _validate.queue_path(path)
        mode = _validate.directory_mode(directory_mode)
        self.capacity = _validate.positive_int(
            max_elements, "max_elements", maximum=_validate.MAX_CAPACITY
        )
        self._cache_limit = _validate.non_negative_int(cache_bytes, "cache_bytes")
        batch_limit = _validate.positive_int(batch_bytes, "batch_bytes")
        durable = _validate.flag(sync, "sync")
        self._start_dispatch()
        self._store = Store(
            absolute,
            FIFO_COLUMN_FAMILIES,
            sync=durable,
            batch_bytes=batch_limit,
            directory_mode=mode,
        )
        self._unsaved = 0
        """One-item pushes and pops since the counters were last written."""
        try:
            stored = _check_kind(self._store, FIFO_KINDS)
            if stored is None:
                self._state, plan = _plan.plan_fifo_create()
                self._store.apply(plan, sync=True)
            else:
                self._state = self._recover(*stored)
                self._release_dead_leases()
        except BaseException:
            self._store.close()
            raise
        # Items at indices [tail - len(cache), tail), newest last.
        self._cache: deque[bytes] = deque()
        self._cache_size = 0
        self._leased_count = 0

    def _recover(self, kind: bytes, raw_counters: bytes) -> FifoState:
        """The queue's state at open, from its counters and its keys."""
        store = self._store
        saved = _plan.decode_fifo_state(raw_counters)
        store.discard_staged()
        if kind == FIFO_KIND_V1:
            # v1 counters are exact, and keys beyond them are orphans.
            _check_data_matches(store, saved.head, saved.tail)
            state = saved
        else:
            bounds = store.data_key_bounds()
            first = last = None
            if bounds is not None:
                lowest, last = bounds
                first = lowest if lowest >= saved.head else store.first_data_index_from(saved.head)
            head, tail = _plan.recovered_fifo_bounds(saved, first, last, SAVE_COUNTERS_EVERY)
            if (head, tail) == (saved.head, saved.tail):
                state = saved
            elif head == tail:
                state = FifoState(head, tail, 0)
            else:
                # Only a process that died with unsaved counters gets here:
                # the payload is counted when first asked for, not at open.
                state = FifoState(head, tail, _plan.PAYLOAD_UNKNOWN)
            if bounds is not None and (bounds[0] < head or bounds[1] >= tail):
                store.discard_outside(head, tail)
        if state != saved or kind != FIFO_KIND:
            plan = WritePlan(
                meta_puts=[(KIND_KEY, FIFO_KIND), (STATE_KEY, _plan.encode_fifo_state(state))]
            )
            store.apply(plan, sync=True)
        return state

    def _encoded_counters(self) -> bytes:
        return _plan.encode_fifo_state(self._state)

    @property
    def payload_size(self) -> int:
        """Sum of the stored items' sizes in bytes.

        Answered from memory, except the first time after an unclean shutdown,
        when it is counted by reading the queue once.
        """
        payload = self._state.payload_size
        if payload < _plan.PAYLOAD_UNKNOWN_FLOOR:
            return payload
        with self._lock:
            head, tail, payload = self._state
            if payload >= _plan.PAYLOAD_UNKNOWN_FLOOR:
                payload = 0 if head == tail else self._store.payload_of(head, tail)
                self._state = FifoState(head, tail, payload)
            return payload

    @staticmethod
    def push_operation(items: object) -> Operation:
        if type(items) is list and len(items) == 1 and type(items[0]) is bytes:
            return Operation(Kind.PUSH, ([items[0]],), len(items[0]))  # the common case
        values = _validate.item_list(items)
        return Operation(Kind.PUSH, (values,), sum(map(len, values)))

    @staticmethod
    def pop_operation(max_elements: object = 1) -> Operation:
        return Operation(Kind.POP, (_validate.positive_int(max_elements, "max_elements"),))

    def push(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically; raise QueueFullError (writing nothing) if they don't fit.

        ``no_gil`` is RocksQ's argument, accepted and ignored.
        """
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        one_bytes_item = type(items) is list and len(items) == 1 and type(items[0]) is bytes
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
                    if tail - head >= self.capacity:
                        raise _plan.queue_full(tail - head, 1, self.capacity)
                    size = len(value)
                    if self._unsaved < SAVE_COUNTERS_EVERY:
                        store.put_element(tail, value)
                        self._unsaved += 1
                    else:
                        store.write_element(
                            tail,
                            value,
                            _plan.pack_fifo_counters(head, tail + 1, payload_size + size),
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
            self.run(Operation(Kind.PUSH, (list(values),), sum(map(len, values))))
            return
        try:
            store = self._store
            if store.failure is not None or store.closed:
                store.check_usable()
            if not values:
                return
            size = len(values[0]) if len(values) == 1 else sum(map(len, values))
            state = self._state
            new_state = _plan.fifo_pushed(state, len(values), size, self.capacity)
            cache = self._cache
            cache.extend(values)
            try:
                if size <= store.batch_bytes:
                    store.write_elements(state.tail, values, _plan.encode_fifo_state(new_state))
                else:
                    plan = WritePlan()
                    _plan.plan_fifo_push(state, values, self.capacity, plan)
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
        if not lock.acquire(False):
            result: list[bytes] = self.run(Operation(Kind.POP, (limit,)))
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
                if self._unsaved < SAVE_COUNTERS_EVERY:
                    store.delete_element(head)
                    self._unsaved += 1
                else:
                    store.write_element(
                        head, None, _plan.pack_fifo_counters(head + 1, tail, payload_size - size)
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
                if len(values) == 1 and self._unsaved < SAVE_COUNTERS_EVERY:
                    # Draining a backlog read from disk, one item at a time.
                    store.delete_element(head)
                    self._unsaved += 1
                else:
                    store.delete_elements(head, new_state.head, _plan.encode_fifo_state(new_state))
                    self._unsaved = 0
                self._state = new_state
                self._trim_cache()
            return values
        finally:
            lock.release()

    def unpop(self, items: list[bytes]) -> None:
        """Put items popped earlier back at the head, in order."""
        with self._lock:
            self._unpop_locked(items)

    def _unpop_locked(self, items: list[bytes]) -> None:
        if not items:
            return
        self._store.check_usable()
        self._trim_cache()  # see _settle_locked
        plan = WritePlan()
        state = _plan.plan_fifo_unpop(self._state, items, plan)
        self._store.apply(plan)
        self._state = state
        self.arrivals += 1

    def _give_back_locked(self, operation: Operation) -> None:
        if operation.error is not None:
            return
        if operation.kind is Kind.POP and operation.result:
            self._unpop_locked(operation.result)
            operation.result = []
        elif operation.kind is Kind.RESERVE and operation.result is not None:
            self._settle_locked(operation.result, Kind.RELEASE)

    def _release_dead_leases(self) -> None:
        """Leases found at open belong to a process that died before settling them."""
        leased = self._store.family_items(_plan.LEASED_CF)
        if not leased:
            return
        indices = [_plan.decode_index(key) for key, _value in leased]
        if indices[-1] >= self._state.head:
            raise QueueCorruptedError(
                f"queue at {self.path!r} has a lease on element {indices[-1]}, "
                f"at or past its head {self._state.head}"
            )
        plan = WritePlan()
        items = [value for _key, value in leased]
        self._state = _plan.plan_fifo_release(self._state, indices, items, plan)
        self._store.apply(plan, sync=True)

    # ------------------------------------------------------------ leases

    @property
    def pending(self) -> int:
        """Items reserved and not yet acknowledged or released."""
        return self._leased_count

    @staticmethod
    def reserve_operation(max_elements: object = 1) -> Operation:
        return Operation(Kind.RESERVE, (_validate.positive_int(max_elements, "max_elements"),))

    def lease(self, max_elements: object = 1) -> Lease:
        """Hand out up to ``max_elements`` items from the head without losing them.

        They leave the queue now and are deleted by ``acknowledge``; ``release``,
        or the death of the process before either, puts them back at the head.
        """
        lease: Lease = self.run(self.reserve_operation(max_elements))
        return lease

    def acknowledge(self, lease: Lease) -> None:
        """The leased items were processed: delete them for good."""
        self.run(Operation(Kind.ACKNOWLEDGE, (lease,)))

    def release(self, lease: Lease) -> None:
        """The leased items were not processed: put them back at the head."""
        self.run(Operation(Kind.RELEASE, (lease,)))

    def _settle_locked(self, lease: Lease, kind: Kind) -> None:
        if lease.settled or not lease.items:
            lease.settled = True
            return
        self._store.check_usable()
        # Released items go back below the head: no cached entry may still
        # claim those indices for items popped before.
        self._trim_cache()
        plan = WritePlan()
        state = self._state
        if kind is Kind.RELEASE:
            state = _plan.plan_fifo_release(state, lease.indices, lease.items, plan)
        else:
            _plan.plan_fifo_acknowledge(lease.indices, plan)
        self._store.apply(plan)
        self._state = state
        lease.settled = True
        self._leased_count -= len(lease.items)
        if kind is Kind.RELEASE:
            self.arrivals += 1

    def _execute(self, group: list[Operation]) -> None:
        state = self._state
        plan = WritePlan()
        cached = 0
        leased: list[Lease] = []
        try:
            position, count = 0, len(group)
            while position < count:
                operation = group[position]
                position += 1
                if operation.kind is Kind.PUSH:
                    # Consecutive pushes become one append: planning them one
                    # by one cost more than writing them.
                    pushes = [operation]
                    while position < count and group[position].kind is Kind.PUSH:
                        pushes.append(group[position])
                        position += 1
                    state, refusals = _plan.plan_fifo_pushes(
                        state, [push.arguments[0] for push in pushes], self.capacity, plan
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
                elif operation.kind is Kind.POP:
                    values = self._read_head(state, min(operation.arguments[0], state.length))
                    state = _plan.plan_fifo_pop(state, values, plan)
                    operation.result = values
                elif operation.kind is Kind.RESERVE:
                    values = self._read_head(state, min(operation.arguments[0], state.length))
                    lease = Lease(range(state.head, state.head + len(values)), values)
                    if values:
                        state = _plan.plan_fifo_reserve(state, values, plan)
                    operation.result = lease
                    leased.append(lease)
                else:
                    # Settled on their own, after what came before: a release
                    # writes below the head, which reads of this group must see.
                    if not plan.is_empty:
                        self._store.apply(plan)
                        plan = WritePlan()
                        cached = 0  # committed: no longer to be taken back
                    self._state = state
                    self._settle_locked(operation.arguments[0], operation.kind)
                    state = self._state
            if not plan.is_empty:
                self._store.apply(plan)
        except BaseException:
            self._uncache(cached)
            raise
        if cached:
            self.arrivals += 1
        self._leased_count += sum(len(lease.items) for lease in leased)
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


class MpmcCore(_CoreBase[MpmcState]):
    """One persistent stream read by many labelled consumers, with element TTL."""

    def __init__(
        self,
        path: object,
        ttl: object,
        *,
        sync: object = False,
        batch_bytes: object = DEFAULT_BATCH_BYTES,
        clock: Clock = time.time,
        directory_mode: object = DEFAULT_DIRECTORY_MODE,
        cache_bytes: object = DEFAULT_CACHE_BYTES,
    ) -> None:
        absolute = _validate.queue_path(path)
        mode = _validate.directory_mode(directory_mode)
        self.ttl = _validate.ttl_seconds(ttl)
        self._cache_limit = _validate.non_negative_int(cache_bytes, "cache_bytes")
        # Recently added items (without their stamps) by index, oldest first:
        # labels that keep up read them without touching the disk.
        self._cache: dict[int, bytes] = {}
        self._cache_size = 0
        # Rounded up, so that a TTL under a millisecond still expires.
        self._ttl_ms = math.ceil(self.ttl * 1000)
        batch_limit = _validate.positive_int(batch_bytes, "batch_bytes")
        durable = _validate.flag(sync, "sync")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self._clock = clock
        self._start_dispatch()
        # Items of a committed next() that could not be rewound on disk
        # (the label moved on meanwhile): served first to that label.
        self._returned: dict[str, deque[bytes]] = {}
        self._lease_numbers = itertools.count()
        self._leased_counts: dict[str, int] = {}
        self._unsaved = 0
        """One-item adds since the counters were last written."""
        self._store = Store(
            absolute,
            MPMC_COLUMN_FAMILIES,
            sync=durable,
            batch_bytes=batch_limit,
            directory_mode=mode,
        )
        try:
            self._state = self._load()
            self._head_timestamp_ms = self._timestamp_at(self._state.head, None)
        except BaseException:
            self._store.close()
            raise

    def _load(self) -> MpmcState:
        store = self._store
        stored = _check_kind(store, MPMC_KINDS)
        if stored is None:
            state, plan = _plan.plan_mpmc_create()
            store.apply(plan, sync=True)
            return state
        kind, raw_counters = stored
        head, saved_tail, saved_newest = _plan.decode_mpmc_counters(raw_counters)
        store.discard_staged()
        tail, newest = saved_tail, saved_newest
        if kind != MPMC_KIND_V1:  # v1 counters are exact, and keys beyond them are orphans
            bounds = store.data_key_bounds()
            last = None if bounds is None else bounds[1]
            tail = _plan.recovered_mpmc_tail(saved_tail, last, SAVE_COUNTERS_EVERY)
            if tail != saved_tail:
                # Only a process that died with unsaved counters gets here.
                store.payload_of(saved_tail, tail)  # all there, or corrupted
                newest_added = _plan.stamped_timestamp(store.read_elements(tail - 1, 1)[0])
                newest = max(newest, newest_added)
        _check_data_matches(store, head, tail)
        if (tail, newest) != (saved_tail, saved_newest) or kind != MPMC_KIND:
            counters = _plan.pack_mpmc_counters(head, tail, newest)
            plan = WritePlan(meta_puts=[(KIND_KEY, MPMC_KIND), (STATE_KEY, counters)])
            store.apply(plan, sync=True)
        positions = dict(
            _plan.decode_position(key, value, head, tail)
            for key, value in self._store.family_items(_plan.POSITIONS_CF)
        )
        for key, value in self._store.family_items(_plan.RETURNED_CF):
            self._returned[_plan.decode_label(key)] = deque(_plan.decode_returned(key, value))
        self._redeliver_dead_leases()
        return MpmcState(head, tail, newest, positions)

    def _encoded_counters(self) -> bytes:
        return _plan.encode_mpmc_counters(self._state)

    def _redeliver_dead_leases(self) -> None:
        """Leases found at open were never acknowledged: their items go to their label first."""
        leased = self._store.family_items(_plan.LEASED_CF)
        if not leased:
            return
        by_label: dict[str, list[bytes]] = {}
        plan = WritePlan()
        for key, value in leased:  # in key order: label, then lease number
            by_label.setdefault(_plan.decode_mpmc_lease_key(key), []).extend(
                _plan.decode_returned(key, value)
            )
            _plan.plan_mpmc_unlease(key, plan)
        for label, items in by_label.items():
            waiting = self._returned.setdefault(label, deque())
            waiting.extendleft(reversed(items))
            _plan.plan_mpmc_hand_back(label, list(waiting), plan)
        self._store.apply(plan, sync=True)

    def _timestamp_at(self, index: int, state: MpmcState | None) -> int | None:
        tail = (state or self._state).tail
        if index >= tail:
            return None
        value = self._store.get(DATA_CF, _plan.encode_index(index))
        if value is None:
            raise QueueCorruptedError(f"element {index} is missing from the queue at {self.path!r}")
        return _plan.stamped_timestamp(value)

    @property
    def labels(self) -> list[str]:
        return sorted(self._state.positions)

    def position(self, label: str) -> int | None:
        """The index ``label`` reads next, or None for an unknown label."""
        saved = self._state.positions.get(label)
        return None if saved is None else saved.index

    @staticmethod
    def add_operation(items: object) -> Operation:
        values = _validate.item_list(items)
        return Operation(Kind.ADD, (values,), sum(len(value) for value in values))

    @staticmethod
    def next_operation(
        label: object, start_position: object = StartPosition.Oldest, max_elements: object = 1
    ) -> Operation:
        return Operation(
            Kind.NEXT,
            (
                _validate.label_name(label),
                _validate.start_position(start_position),
                _validate.positive_int(max_elements, "max_elements"),
            ),
        )

    @staticmethod
    def remove_label_operation(label: object) -> Operation:
        return Operation(Kind.REMOVE_LABEL, (_validate.label_name(label),))

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
        self.run(self.add_operation(items))

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
        if self._due_cutoff(now_ms) is not None:
            return False  # the general path plans the expiry in the same batch
        head_timestamp = self._head_timestamp_ms
        head, tail, newest, positions = self._state
        if len(value) + _plan.TIMESTAMP_BYTES > store.batch_bytes or tail >= _plan.MAX_INDEX:
            return False
        timestamp = now_ms if now_ms > newest else newest
        if self._unsaved < SAVE_COUNTERS_EVERY:
            store.put_element(tail, _plan.stamp(timestamp, value))
            self._unsaved += 1
        else:
            counters = _plan.pack_mpmc_counters(head, tail + 1, timestamp)
            store.write_element(tail, _plan.stamp(timestamp, value), counters)
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
        items, expired, _start = self.run(self.next_operation(label, start_position, max_elements))
        return items, expired

    def _next_one_locked(self, label: str) -> tuple[list[bytes], bool] | None:
        """next(label) of one item for a known label as a single put; None if it needs more."""
        store = self._store
        if store.failure is not None or store.closed:
            store.check_usable()
        head, tail, newest, positions = self._state
        saved = positions.get(label)  # a known label was validated when it was first used
        if (
            saved is None
            or saved.expired_unseen
            or self._returned.get(label)
            or self._due_cutoff(self._now_ms()) is not None
        ):
            return None
        index = saved.index
        if index >= tail:
            return [], False
        item = self._cache.get(index)
        if item is None:
            item = _plan.unstamp(store.read_elements(index, 1)[0])
        moved = LabelPosition(index + 1)
        store.put_position(label.encode("utf-8"), _plan.encode_position(moved))
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

    def remove_label(self, label: object) -> bool:
        """Forget ``label`` and its position; False when it did not exist."""
        removed: bool = self.run(self.remove_label_operation(label))
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
        plan = WritePlan()
        now_ms = self._now_ms()
        state = self._expire(self._state, now_ms, plan)
        committed_tail = state.tail
        added: list[bytes] = []  # items (unstamped) this group adds, from committed_tail on
        for operation in group:
            if operation.kind is Kind.ADD:
                values = operation.arguments[0]
                state = _plan.plan_mpmc_add(state, values, now_ms, plan)
                added.extend(values)
            elif operation.kind is Kind.NEXT:
                state, operation.result = self._plan_read(
                    state, operation.arguments, plan, committed_tail, added
                )
            elif operation.kind is Kind.RESERVE:
                label = operation.arguments[0]
                state, (items, _expired, _start) = self._plan_read(
                    state, operation.arguments, plan, committed_tail, added
                )
                lease = MpmcLease(
                    label, _plan.mpmc_lease_key(label, next(self._lease_numbers)), items
                )
                if items:
                    _plan.plan_mpmc_lease(lease.key, items, plan)
                    self._leased_counts[label] = self._leased_counts.get(label, 0) + len(items)
                operation.result = lease
            elif operation.kind in (Kind.ACKNOWLEDGE, Kind.RELEASE):
                self._plan_settle(operation.arguments[0], operation.kind, plan)
            else:
                label = operation.arguments[0]
                state, removed = _plan.plan_mpmc_remove_label(state, label, plan)
                if self._returned.pop(label, None):
                    _plan.plan_mpmc_hand_back(label, [], plan)
                operation.result = removed
        if not plan.is_empty:
            self._store.apply(plan)
            if added:
                self.arrivals += 1
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
    ) -> tuple[MpmcState, tuple[list[bytes], bool, int | None]]:
        """Plan a next(): items handed back to the label first, else from its position."""
        label, start_position, limit = arguments
        returned = self._returned.get(label)
        if returned:
            items = [returned.popleft() for _ in range(min(limit, len(returned)))]
            _plan.plan_mpmc_hand_back(label, list(returned), plan)
            return state, (items, False, None)
        start = _plan.label_start(state, label, start_position)
        count = _plan.readable_count(state, start, limit)
        items = self._read(start.index, count, committed_tail, added)
        state, expired = _plan.plan_mpmc_next(state, label, start, count, plan)
        return state, (items, expired, start.index)

    def _plan_settle(self, lease: MpmcLease, kind: Kind, plan: WritePlan) -> None:
        if lease.settled:
            return
        lease.settled = True
        if not lease.items:
            return
        _plan.plan_mpmc_unlease(lease.key, plan)
        self._leased_counts[lease.label] -= len(lease.items)
        if kind is Kind.RELEASE:
            waiting = self._returned.setdefault(lease.label, deque())
            waiting.extendleft(reversed(lease.items))
            _plan.plan_mpmc_hand_back(lease.label, list(waiting), plan)
            self.arrivals += 1

    # ------------------------------------------------------------ leases

    def pending(self, label: str) -> int:
        """Items ``label`` reserved and has not acknowledged or released yet."""
        return self._leased_counts.get(label, 0)

    @staticmethod
    def reserve_operation(
        label: object, start_position: object = StartPosition.Oldest, max_elements: object = 1
    ) -> Operation:
        operation = MpmcCore.next_operation(label, start_position, max_elements)
        operation.kind = Kind.RESERVE
        return operation

    def lease(
        self, label: object, start_position: object = StartPosition.Oldest, max_elements: object = 1
    ) -> MpmcLease:
        """Hand ``label`` its next items without losing them (see plan_mpmc_lease)."""
        lease: MpmcLease = self.run(self.reserve_operation(label, start_position, max_elements))
        return lease

    def acknowledge(self, lease: MpmcLease) -> None:
        """The leased items were processed: forget them."""
        self.run(Operation(Kind.ACKNOWLEDGE, (lease,)))

    def release(self, lease: MpmcLease) -> None:
        """The leased items were not processed: deliver them to the label again, first."""
        self.run(Operation(Kind.RELEASE, (lease,)))

    def _read(self, start: int, count: int, committed_tail: int, added: list[bytes]) -> list[bytes]:
        """Items (unstamped) at [start, start + count): cached, stored, or added by this group."""
        committed_stop = start + max(0, min(count, committed_tail - start))
        # The cache holds the committed indices [committed_tail - len(cache), committed_tail).
        cached_from = min(max(start, committed_tail - len(self._cache)), committed_stop)
        unstamp = _plan.unstamp
        values = [unstamp(value) for value in self._store.read_elements(start, cached_from - start)]
        values.extend(self._cache[index] for index in range(cached_from, committed_stop))
        if committed_stop < start + count:
            offset = committed_stop - committed_tail
            values.extend(added[offset : offset + count - len(values)])
        return values

    def _give_back_locked(self, operation: Operation) -> None:
        if operation.error is not None:
            return
        if operation.kind is Kind.RESERVE:
            plan = WritePlan()
            self._plan_settle(operation.result, Kind.RELEASE, plan)
            if not plan.is_empty:
                self._store.apply(plan)
            return
        if operation.kind is not Kind.NEXT:
            return
        items, expired, start = operation.result
        operation.result = ([], False, None)
        self._give_back_next_locked(operation.arguments[0], items, start, expired)

    def give_back(
        self, label: str, items: list[bytes], start: int | None, expired: bool = False
    ) -> None:
        """Return undelivered items of a next() to ``label``.

        ``start`` is the index of the first of them, or None when they came
        from the in-memory buffer of items given back before.
        """
        with self._lock:
            self._give_back_next_locked(label, items, start, expired)

    def _give_back_next_locked(
        self, label: str, items: list[bytes], start: int | None, expired: bool
    ) -> None:
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
        waiting = self._returned.setdefault(label, deque())
        plan = WritePlan()
        _plan.plan_mpmc_hand_back(label, [*items, *waiting], plan)
        self._store.apply(plan)
        waiting.extendleft(reversed(items))
