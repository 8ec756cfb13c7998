"""Blocking face: a drop-in replacement for ``rocksq.blocking``.

Change ``from rocksq.blocking import ...`` to ``from rocksq_aio.blocking import
...`` and the program runs unchanged. ``no_gil`` is accepted for compatibility
and has no effect: the GIL handling is decided by the core (see the README).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ._core import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CAPACITY,
    DEFAULT_DIRECTORY_MODE,
    FifoCore,
    Lease,
    MpmcCore,
    MpmcLease,
)
from ._errors import (
    QueueClosedError,
    QueueCorruptedError,
    QueueError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
)
from ._storage import DEFAULT_BATCH_BYTES
from ._types import StartPosition

__all__ = [
    "MpmcQueue",
    "PersistentQueueWithCapacity",
    "QueueClosedError",
    "QueueCorruptedError",
    "QueueError",
    "QueueFullError",
    "QueueIOError",
    "QueueLockedError",
    "ReservedBatch",
    "StartPosition",
]


class ReservedBatch:
    """Reserved items; settle them with ack() or nack() (once)."""

    def __init__(self, queue: FifoCore | MpmcCore, lease: Lease | MpmcLease) -> None:
        self._queue = queue
        self._lease = lease

    @property
    def items(self) -> list[bytes]:
        return self._lease.items

    @property
    def settled(self) -> bool:
        return self._lease.settled

    def ack(self) -> None:
        """The items were processed: they are never delivered again."""
        self._queue.acknowledge(self._lease)  # type: ignore[arg-type]

    def nack(self) -> None:
        """The items were not processed: they are delivered again, first."""
        self._queue.release(self._lease)  # type: ignore[arg-type]


class PersistentQueueWithCapacity(FifoCore):
    """A persistent FIFO queue of bytes with a capacity of ``max_elements``."""

    def __init__(
        self,
        path: str,
        max_elements: int = DEFAULT_CAPACITY,
        *,
        sync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        directory_mode: int = DEFAULT_DIRECTORY_MODE,
    ) -> None:
        super().__init__(
            path,
            max_elements,
            sync=sync,
            batch_bytes=batch_bytes,
            cache_bytes=cache_bytes,
            directory_mode=directory_mode,
        )

    def __enter__(self) -> PersistentQueueWithCapacity:
        return self

    # push(items, no_gil=True) and pop(max_elements=1, no_gil=True) are the
    # core's own methods: no wrapper on the hot path.

    def reserve_batch(self, max_elements: int = 1) -> ReservedBatch:
        """Hand out up to ``max_elements`` items ([] when empty) until ack() or nack().

        Until acknowledged they are redelivered: after nack(), to the next
        reader; after the death of the process, at the next open.
        """
        return ReservedBatch(self, self.lease(max_elements))

    @contextmanager
    def reserve(self, max_elements: int = 1) -> Iterator[list[bytes]]:
        """``with q.reserve(n) as items:`` removes the items only if the block succeeds."""
        batch = self.reserve_batch(max_elements)
        try:
            yield batch.items
        except BaseException:
            batch.nack()
            raise
        batch.ack()


class MpmcQueue(MpmcCore):
    """A persistent stream read by many labelled consumers.

    Elements live ``ttl`` seconds (0 = forever); labels and positions never expire.
    """

    def __enter__(self) -> MpmcQueue:
        return self

    def reserve_batch(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
    ) -> ReservedBatch:
        """Hand ``label`` its next items ([] when none) until ack() or nack().

        Unacknowledged items are delivered to the label again, before any
        other: after nack(), and after the death of the process.
        """
        return ReservedBatch(self, self.lease(label, start_position, max_elements))

    @contextmanager
    def reserve(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
    ) -> Iterator[list[bytes]]:
        """``with q.reserve(label, ...) as items:``: consumed only if the block succeeds."""
        batch = self.reserve_batch(label, start_position, max_elements)
        try:
            yield batch.items
        except BaseException:
            batch.nack()
            raise
        batch.ack()
