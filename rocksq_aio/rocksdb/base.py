"""What the RocksDB FIFO and MPMC engines share: the store, the counters, closing."""

from __future__ import annotations

import atexit
import contextlib
import weakref
from typing import Any, Generic, TypeVar

from .._dispatch import Dispatcher
from .._engine import Capabilities
from .._errors import QueueError
from .._options import LocalOptions
from .._types import ClosesOnExit
from .directory import directory_size
from .format import STATE_KEY, FifoState, MpmcState
from .plan import WritePlan
from .store import Store

StateT = TypeVar("StateT", FifoState, MpmcState)

CAPABILITIES = Capabilities(name="rocksdb")


# Queues still open when the interpreter exits (a queue kept alive by a
# reference cycle, say) are closed while the modules are intact: from
# __del__ during shutdown, closing would fail on imports and print noise.
_open_queues: weakref.WeakSet[RocksDBQueue[Any]] = weakref.WeakSet()


@atexit.register
def _close_open_queues() -> None:
    for queue in list(_open_queues):
        with contextlib.suppress(Exception):
            queue.close()


class RocksDBQueue(ClosesOnExit, Dispatcher, Generic[StateT]):
    """A queue kept in one RocksDB directory, opened by this process alone."""

    save_counters_every = 1024
    """One-item writes (format v2) save the counters only every this many,
    which bounds what the next open has to look through."""

    capabilities = CAPABILITIES
    _state: StateT
    _unsaved: int
    """One-item writes since the counters were last saved."""

    def __init__(self, path: str, column_families: tuple[str, ...], local: LocalOptions) -> None:
        super().__init__(local.batch_bytes)
        self._unsaved = 0
        self._store = Store(
            path,
            column_families,
            sync=local.sync,
            batch_bytes=local.batch_bytes,
            directory_mode=local.directory_mode,
        )
        _open_queues.add(self)

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
    def disk_size(self) -> int:
        """Bytes used by the queue's directory."""
        return directory_size(self._store.path)

    def check_usable(self) -> None:
        self._store.check_usable()

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the queue; its path can be reopened at once."""
        with self._lock:
            try:
                self._save_counters_locked()
                if self._store.failure is None and not self._store.closed:
                    self._store.cover_removed(self._state.head)
            finally:
                self._store.close()

    def _save_counters_locked(self) -> None:
        # Saved counters spare the next open its search for the head and tail.
        if self._unsaved and self._store.failure is None and not self._store.closed:
            self._store.apply(WritePlan(meta_puts=[(STATE_KEY, self._encoded_counters())]))
            self._unsaved = 0

    def _encoded_counters(self) -> bytes:
        raise NotImplementedError

    def __enter__(self) -> RocksDBQueue[StateT]:
        return self

    def __del__(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None and not store.closed:
            with contextlib.suppress(QueueError):
                try:
                    self._save_counters_locked()
                finally:
                    store.close()
