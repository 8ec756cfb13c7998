"""The synchronous core: all queue behaviour lives here.

Each queue owns one :class:`threading.Lock`; every public operation takes it,
plans one batch with ``_plan`` and applies it with ``_storage``. The blocking,
nonblocking and async faces are thin wrappers around these classes.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from . import _plan, _validate
from ._errors import QueueCorruptedError, QueueError
from ._plan import (
    DATA_CF,
    FIFO_COLUMN_FAMILIES,
    FIFO_KIND,
    KIND_KEY,
    META_CF,
    MPMC_COLUMN_FAMILIES,
    MPMC_KIND,
    STATE_KEY,
    MpmcState,
    WritePlan,
)
from ._storage import DEFAULT_BATCH_BYTES, Store, directory_size
from ._types import StartPosition

DEFAULT_CAPACITY = 1_000_000_000
DEFAULT_CACHE_BYTES = 8 * 1024 * 1024
"""Recently pushed items kept in memory so a pop soon after a push needs no read.
Bounded in bytes, so memory never depends on the queue's capacity or length."""

Clock = Callable[[], float]


def _check_kind(store: Store, expected: bytes) -> bytes | None:
    """Return the stored counters, or None for a queue that was never initialised."""
    kind = store.get(META_CF, KIND_KEY)
    state = store.get(META_CF, STATE_KEY)
    if kind is None and state is None:
        if store.data_key_bounds() is not None:
            raise QueueCorruptedError(f"queue at {store.path!r} holds elements but no counters")
        return None
    if kind != expected:
        names = {FIFO_KIND: "a FIFO queue", MPMC_KIND: "an MPMC queue"}
        found = names.get(kind or b"", f"an unknown kind {kind!r}")
        raise QueueError(f"path {store.path!r} holds {found}, not {names[expected]}")
    if state is None:
        raise QueueCorruptedError(f"queue at {store.path!r} has lost its counters")
    return state


def _check_data_matches(store: Store, head: int, tail: int) -> None:
    """Cross-check the counters with the stored keys and drop orphans past the tail."""
    bounds = store.data_key_bounds()
    if bounds is None:
        if head != tail:
            raise QueueCorruptedError(
                f"queue at {store.path!r} counts {tail - head} elements but stores none"
            )
        return
    first, last = bounds
    if head < tail and (first != head or last < tail - 1):
        raise QueueCorruptedError(
            f"queue at {store.path!r} counts elements [{head}, {tail}) but stores "
            f"keys from {first} to {last}"
        )
    if first < head and head == tail:
        raise QueueCorruptedError(
            f"queue at {store.path!r} is empty by its counters but stores element {first}"
        )
    if last >= tail:
        store.discard_beyond(tail)


class _CoreBase:
    _store: Store
    _lock: threading.Lock

    @property
    def path(self) -> str:
        return self._store.path

    @property
    def closed(self) -> bool:
        return self._store.closed

    @property
    def disk_size(self) -> int:
        """Bytes used by the queue's directory."""
        return directory_size(self._store.path)

    def close(self) -> None:
        """Release the queue; its path can be reopened at once."""
        with self._lock:
            self._store.close()

    def __enter__(self) -> _CoreBase:
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
                store.close()


class FifoCore(_CoreBase):
    """A persistent FIFO queue with a capacity."""

    def __init__(
        self,
        path: object,
        max_elements: object = DEFAULT_CAPACITY,
        *,
        sync: object = False,
        batch_bytes: object = DEFAULT_BATCH_BYTES,
        cache_bytes: object = DEFAULT_CACHE_BYTES,
    ) -> None:
        absolute = _validate.queue_path(path)
        self.capacity = _validate.positive_int(
            max_elements, "max_elements", maximum=_validate.MAX_CAPACITY
        )
        self._cache_limit = _validate.non_negative_int(cache_bytes, "cache_bytes")
        batch_limit = _validate.positive_int(batch_bytes, "batch_bytes")
        self._lock = threading.Lock()
        self._store = Store(
            absolute,
            FIFO_COLUMN_FAMILIES,
            sync=_validate.flag(sync, "sync"),
            batch_bytes=batch_limit,
        )
        try:
            raw = _check_kind(self._store, FIFO_KIND)
            if raw is None:
                self._state, plan = _plan.plan_fifo_create()
                self._store.apply(plan, sync=True)
            else:
                self._state = _plan.decode_fifo_state(raw)
                _check_data_matches(self._store, self._state.head, self._state.tail)
        except BaseException:
            self._store.close()
            raise
        # Items at indices [tail - len(cache), tail), newest last.
        self._cache: deque[bytes] = deque()
        self._cache_size = 0

    # The properties read memory only: no I/O, safe from an event loop.
    @property
    def len(self) -> int:
        return self._state.length

    def __len__(self) -> int:
        return self._state.length

    @property
    def is_empty(self) -> bool:
        return self._state.length == 0

    @property
    def payload_size(self) -> int:
        """Sum of the stored items' sizes in bytes."""
        return self._state.payload_size

    def push(self, items: object) -> None:
        """Append ``items`` atomically; raise QueueFullError (writing nothing) if they don't fit."""
        values = _validate.item_list(items)
        with self._lock:
            self._store.check_usable()
            if not values:
                return
            state, plan = _plan.plan_fifo_push(self._state, values, self.capacity)
            self._store.apply(plan)
            self._state = state
            self._remember(values)

    def pop(self, max_elements: object = 1) -> list[bytes]:
        """Remove and return up to ``max_elements`` items from the head ([] when empty)."""
        limit = _validate.positive_int(max_elements, "max_elements")
        with self._lock:
            self._store.check_usable()
            state = self._state
            count = min(limit, state.length)
            if count == 0:
                return []
            cached_from = state.tail - len(self._cache)
            from_disk = max(0, min(count, cached_from - state.head))
            values = self._store.read_elements(state.head, from_disk)
            from_cache = count - from_disk
            if from_cache:
                # Entries of the cache older than the head were popped already.
                skip = state.head + from_disk - cached_from
                values.extend(itertools.islice(self._cache, skip, skip + from_cache))
            new_state, plan = _plan.plan_fifo_pop(state, values)
            self._store.apply(plan)
            self._state = new_state
            self._forget_before(new_state.head)
            return values

    def unpop(self, items: list[bytes]) -> None:
        """Put items popped earlier back at the head, in order (used on cancellation)."""
        if not items:
            return
        with self._lock:
            self._store.check_usable()
            state, plan = _plan.plan_fifo_unpop(self._state, items)
            self._store.apply(plan)
            self._state = state

    def _remember(self, values: list[bytes]) -> None:
        if self._cache_limit == 0:
            return
        cache = self._cache
        for value in values:
            cache.append(value)
            self._cache_size += len(value)
        while self._cache_size > self._cache_limit and cache:
            self._cache_size -= len(cache.popleft())

    def _forget_before(self, head: int) -> None:
        cache = self._cache
        stale = head - (self._state.tail - len(cache))
        for _ in range(max(0, stale)):
            self._cache_size -= len(cache.popleft())


class MpmcCore(_CoreBase):
    """One persistent stream read by many labelled consumers, with element TTL."""

    def __init__(
        self,
        path: object,
        ttl: object,
        *,
        sync: object = False,
        batch_bytes: object = DEFAULT_BATCH_BYTES,
        clock: Clock = time.time,
    ) -> None:
        absolute = _validate.queue_path(path)
        self.ttl = _validate.ttl_seconds(ttl)
        self._ttl_ms = int(self.ttl * 1000)
        batch_limit = _validate.positive_int(batch_bytes, "batch_bytes")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self._clock = clock
        self._lock = threading.Lock()
        self._store = Store(
            absolute,
            MPMC_COLUMN_FAMILIES,
            sync=_validate.flag(sync, "sync"),
            batch_bytes=batch_limit,
        )
        try:
            self._state = self._load()
        except BaseException:
            self._store.close()
            raise
        self._head_timestamp_ms = self._timestamp_at(self._state.head)

    def _load(self) -> MpmcState:
        raw = _check_kind(self._store, MPMC_KIND)
        if raw is None:
            state, plan = _plan.plan_mpmc_create()
            self._store.apply(plan, sync=True)
            return state
        head, tail, newest = _plan.decode_mpmc_counters(raw)
        _check_data_matches(self._store, head, tail)
        positions = dict(
            _plan.decode_position(key, value, head, tail)
            for key, value in self._store.family_items(_plan.POSITIONS_CF)
        )
        return MpmcState(head, tail, newest, positions)

    def _timestamp_at(self, index: int) -> int | None:
        if index >= self._state.tail:
            return None
        value = self._store.get(DATA_CF, _plan.encode_index(index))
        if value is None:
            raise QueueCorruptedError(f"element {index} is missing from the queue at {self.path!r}")
        return _plan.stamped_timestamp(value)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def len(self) -> int:
        """Elements stored (expired ones leave at the next add or next)."""
        return self._state.length

    def __len__(self) -> int:
        return self._state.length

    @property
    def is_empty(self) -> bool:
        return self._state.length == 0

    @property
    def labels(self) -> list[str]:
        return sorted(self._state.positions)

    def _expire(self, now_ms: int, plan: WritePlan) -> MpmcState:
        """Plan the removal of the expired prefix; needs the lock."""
        state = self._state
        cutoff = _plan.expiry_cutoff_ms(now_ms, self._ttl_ms)
        head_timestamp = self._head_timestamp_ms
        if cutoff is None or head_timestamp is None or head_timestamp > cutoff:
            return state
        if state.newest_timestamp_ms <= cutoff:
            new_head = state.tail
        else:
            # Stamps never decrease along the queue: bisect for the first live one.
            low, high = state.head, state.tail - 1
            while low < high:
                middle = (low + high) // 2
                stamp = self._timestamp_at(middle)
                if stamp is not None and stamp > cutoff:
                    high = middle
                else:
                    low = middle + 1
            new_head = low
        return _plan.plan_mpmc_expire(state, new_head, plan)

    def _commit(self, plan: WritePlan, state: MpmcState) -> None:
        if not plan.is_empty:
            self._store.apply(plan)
        head_moved = state.head != self._state.head or self._head_timestamp_ms is None
        self._state = state
        if head_moved:
            self._head_timestamp_ms = self._timestamp_at(state.head)

    def add(self, items: object) -> None:
        """Append ``items`` atomically, stamped with the current time."""
        values = _validate.item_list(items)
        with self._lock:
            self._store.check_usable()
            if not values:
                return
            plan = WritePlan()
            now_ms = self._now_ms()
            state = self._expire(now_ms, plan)
            state = _plan.plan_mpmc_add(state, values, now_ms, plan)
            self._commit(plan, state)

    def next(
        self,
        label: object,
        start_position: object = StartPosition.Oldest,
        max_elements: object = 1,
    ) -> tuple[list[bytes], bool]:
        """Read up to ``max_elements`` for ``label`` and save its new position.

        The bool is True exactly once after elements this label had not read
        were removed by TTL.
        """
        name = _validate.label_name(label)
        start_at = _validate.start_position(start_position)
        limit = _validate.positive_int(max_elements, "max_elements")
        with self._lock:
            self._store.check_usable()
            plan = WritePlan()
            state = self._expire(self._now_ms(), plan)
            start = _plan.label_start(state, name, start_at)
            count = _plan.readable_count(state, start, limit)
            values = [
                _plan.unstamp(value) for value in self._store.read_elements(start.index, count)
            ]
            state, expired = _plan.plan_mpmc_next(state, name, start, count, plan)
            self._commit(plan, state)
            return values, expired

    def rewind(self, label: str, start: int, count: int) -> bool:
        """Undo a next() of ``count`` elements from ``start`` whose result was never delivered.

        Returns False (changing nothing) when the label has moved since.
        """
        with self._lock:
            self._store.check_usable()
            plan = WritePlan()
            state, rewound = _plan.plan_mpmc_rewind(self._state, label, start, count, plan)
            self._commit(plan, state)
            return rewound

    def position(self, label: str) -> int | None:
        saved = self._state.positions.get(label)
        return None if saved is None else saved.index

    def remove_label(self, label: object) -> bool:
        """Forget ``label`` and its position; False when it did not exist."""
        name = _validate.label_name(label)
        with self._lock:
            self._store.check_usable()
            plan = WritePlan()
            state, removed = _plan.plan_mpmc_remove_label(self._state, name, plan)
            self._commit(plan, state)
            return removed
