"""Read-only views of a queue directory, for a queue that another process holds open.

A view reads the directory through a RocksDB secondary instance caught up once
(``store.SnapshotStore``), so everything it answers is one point in time,
``taken_at``, and it takes no lock and writes nothing. It works out the state
the way an open does (``recovery``'s reading functions), without the open's
repairs: counters the owner has not saved yet are found from the keys, the
keys of a large write still being staged are left out, and the reservations
stored are the owner's own, pending (``snapshot().pending``), not a dead
process's to give back.

The accessors are the engines' (``snapshot``, ``read_stored``, ``len``,
``payload_size``, ``disk_size``, ``labels``, ``position``), so that a tool
reads an engine or a view the same way; what a view adds is ``taken_at`` and
the reserved items (``reserved_items``), which the engines hand back at open.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

from .._errors import QueueClosedError
from . import format as _format
from . import recovery
from .base import RocksDBQueue
from .directory import directory_size
from .fifo import FifoSnapshot
from .format import (
    FIFO_COLUMN_FAMILIES,
    FIFO_FORMAT_V1,
    FIFO_FORMATS,
    META_CF,
    MPMC_COLUMN_FAMILIES,
    MPMC_FORMAT_V1,
    MPMC_FORMATS,
    STAGING_KEY,
    FifoState,
    MpmcState,
)
from .mpmc import LabelPositions, MpmcSnapshot
from .store import SnapshotStore, StoredReads


def _staged(store: StoredReads) -> tuple[int, int] | None:
    """The indices [start, stop) a large write is staging, which it has not committed."""
    raw = store.get(META_CF, STAGING_KEY)
    return None if raw is None else _format.decode_staged_range(raw)


def _outside(index: int | None, staged: tuple[int, int] | None) -> bool:
    return index is None or staged is None or not staged[0] <= index < staged[1]


def _last_committed_key(store: StoredReads, staged: tuple[int, int] | None) -> int | None:
    bounds = store.data_key_bounds()
    last = None if bounds is None else bounds[1]
    if not _outside(last, staged):
        assert staged is not None
        last = store.last_data_index_below(staged[0])
    return last


def fifo_as_stored(store: StoredReads, max_unsaved: int) -> tuple[FifoState, list[bytes]]:
    """The FIFO queue's state and its reserved items, as stored; nothing is written."""
    stored = recovery.check_format(store, FIFO_FORMATS)
    if stored is None:
        return FifoState(), []  # its owner is creating it
    stored_format, raw_counters = stored
    saved = _format.decode_fifo_state(raw_counters)
    if stored_format == FIFO_FORMAT_V1:
        recovery.check_keys(store, saved.head, saved.tail)
        state = saved
    else:
        staged = _staged(store)
        first = store.first_data_index_from(saved.head)
        if not _outside(first, staged):
            assert staged is not None
            first = store.first_data_index_from(staged[1])
        last = None if first is None else _last_committed_key(store, staged)
        state = recovery.true_fifo_state(saved, first, last, max_unsaved)
        if first is None:
            # An empty queue does not store where its head got to; the open
            # moves it to the furthest it can be, a view shows the saved tail.
            state = FifoState(saved.tail, saved.tail, 0)
    leases = recovery.stored_fifo_reservations(store, state.head)
    return state, [item for _key, item in leases]


class _View:
    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    @property
    def path(self) -> str:
        return self._store.path

    @property
    def taken_at(self) -> float:
        """When the snapshot was taken (seconds since the epoch)."""
        return self._store.taken_at

    @property
    def disk_size(self) -> int:
        """Bytes used by the queue's directory now (not as of ``taken_at``)."""
        return directory_size(self._store.path)

    @property
    def closed(self) -> bool:
        return self._store.closed

    def _check_open(self) -> None:
        if self._store.closed:
            raise QueueClosedError(f"the snapshot of the queue at {self.path!r} is closed")

    def close(self) -> None:
        self._store.close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class FifoView(_View):
    """A FIFO queue's directory as of one moment (``taken_at``), read only."""

    def __init__(self, path: str) -> None:
        super().__init__(SnapshotStore(path, FIFO_COLUMN_FAMILIES))
        try:
            self._state, self._reserved = fifo_as_stored(
                self._store, RocksDBQueue.save_counters_every
            )
        except BaseException:
            self._store.close()
            raise

    def __enter__(self) -> FifoView:
        return self

    @property
    def len(self) -> int:
        return self._state.length

    @property
    def payload_size(self) -> int:
        """Sum of the stored items' sizes in bytes (counted by reading them if not saved)."""
        head, tail, payload = self._state
        if payload >= _format.PAYLOAD_UNKNOWN_FLOOR:
            self._check_open()
            payload = self._store.payload_of(head, tail)
            self._state = FifoState(head, tail, payload)
        return payload

    def snapshot(self) -> FifoSnapshot:
        """The counters; ``pending`` counts the items the owner has reserved."""
        head, tail, _payload = self._state
        return FifoSnapshot(head, tail, len(self._reserved))

    def read_stored(self, start: int, count: int) -> list[bytes]:
        """The items at indices [start, start + count), as of ``taken_at``."""
        self._check_open()
        return self._store.read_elements(start, count)

    def reserved_items(self) -> list[bytes]:
        """Items the owner has reserved and not settled, in queue order: an open
        after the owner stopped now would put them back before the head."""
        return list(self._reserved)


class MpmcView(LabelPositions, _View):
    """An MPMC queue's directory as of one moment (``taken_at``), read only."""

    def __init__(self, path: str) -> None:
        super().__init__(SnapshotStore(path, MPMC_COLUMN_FAMILIES))
        try:
            self._read_state()
        except BaseException:
            self._store.close()
            raise

    def _read_state(self) -> None:
        store = self._store
        self._reserved: list[tuple[bytes, str, list[bytes]]] = []
        self._given_back: dict[str, list[bytes]] = {}
        stored = recovery.check_format(store, MPMC_FORMATS)
        if stored is None:
            self._state = MpmcState()  # its owner is creating it
            return
        stored_format, raw_counters = stored
        head, tail, newest = _format.decode_mpmc_counters(raw_counters)
        if stored_format != MPMC_FORMAT_V1:
            last = _last_committed_key(store, _staged(store))
            tail, newest = recovery.true_mpmc_tail(
                store, tail, newest, last, RocksDBQueue.save_counters_every
            )
        recovery.check_keys(store, head, tail)
        positions = recovery.stored_positions(store, head, tail)
        self._state = MpmcState(head, tail, newest, positions)
        self._given_back = {
            label: list(items) for label, items in recovery.stored_given_back(store).items()
        }
        self._reserved = recovery.stored_mpmc_reservations(store)

    def __enter__(self) -> MpmcView:
        return self

    @property
    def len(self) -> int:
        return self._state.length

    def snapshot(self) -> MpmcSnapshot:
        """The counters, positions and given-back items; ``pending`` counts what
        each label has reserved."""
        head, tail, newest, positions = self._state
        pending = {label: len(items) for label, items in self.reserved_items().items()}
        given_back = {label: list(items) for label, items in self._given_back.items() if items}
        return MpmcSnapshot(head, tail, newest, dict(positions), given_back, pending)

    def read_stored(self, start: int, count: int) -> list[tuple[int, bytes]]:
        """(timestamp in ms, item) at indices [start, start + count), as of ``taken_at``."""
        self._check_open()
        values = self._store.read_elements(start, count)
        return [(_format.stamped_timestamp(value), _format.unstamp(value)) for value in values]

    def reserved_items(self) -> dict[str, list[bytes]]:
        """Items each label has reserved and not settled, oldest reservation first."""
        reserved: dict[str, list[bytes]] = {}
        for _key, label, items in self._reserved:
            reserved.setdefault(label, []).extend(items)
        return reserved

    def given_back_after_restart(self) -> dict[str, list[bytes]]:
        """The items each label would be served first if the owner stopped now:
        its reserved items, then those given back to it (as an open arranges)."""
        given_back = {label: deque(items) for label, items in self._given_back.items()}
        recovery.redelivered(given_back, self._reserved)
        return {label: list(items) for label, items in given_back.items() if items}
