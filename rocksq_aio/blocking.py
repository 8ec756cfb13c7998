"""Blocking face: a drop-in replacement for ``rocksq.blocking``.

Change ``from rocksq.blocking import ...`` to ``from rocksq_aio.blocking import
...`` and the program runs unchanged. ``no_gil`` is accepted for compatibility
and has no effect: the engine decides where the GIL is released (see the
README). The path names the engine: a directory (RocksDB) or
``memory://NAME`` (in memory, for unit tests).

The classes are thread-safe; concurrent threads are group-committed. The hot
methods (``push``, ``pop``, ``add``, ``next``, ``remove_label``) are the
engine's own, bound at construction, so the face adds no call to them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from . import _dispatch, _engines
from ._dispatch import Reservation, settle_operation
from ._engine import FifoEngine, MpmcEngine, QueueEngine
from ._errors import (
    LeaseExpiredError,
    QueueClosedError,
    QueueCorruptedError,
    QueueError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
)
from ._face import EngineProperties, EngineT
from ._options import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_CACHE_BYTES,
    DEFAULT_CAPACITY,
    DEFAULT_DIRECTORY_MODE,
    Clock,
    FifoOptions,
    MpmcOptions,
)
from ._types import BytesLike, ClosesOnExit, StartPosition

__all__ = [
    "LeaseExpiredError",
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

    def __init__(self, engine: QueueEngine, reservation: Reservation) -> None:
        self._engine = engine
        self._reservation = reservation

    @property
    def items(self) -> list[bytes]:
        return self._reservation.items

    @property
    def settled(self) -> bool:
        return self._reservation.settled

    def ack(self) -> None:
        """The items were processed: they are never delivered again."""
        self._engine.run(settle_operation(self._reservation, ack=True))

    def nack(self) -> None:
        """The items were not processed: they are delivered again, first."""
        self._engine.run(settle_operation(self._reservation, ack=False))


@contextmanager
def _settled(batch: ReservedBatch) -> Iterator[list[bytes]]:
    """Ack ``batch`` if the block succeeds, nack it otherwise."""
    try:
        yield batch.items
    except BaseException:
        batch.nack()
        raise
    batch.ack()


class _BlockingQueue(ClosesOnExit, EngineProperties[EngineT]):
    def close(self) -> None:
        """Release the queue; its path can be reopened at once."""
        self._engine.close()


class PersistentQueueWithCapacity(_BlockingQueue[FifoEngine]):
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
        options = FifoOptions.from_arguments(locals())
        engine = self._engine = _engines.open_fifo(path, options)
        self.push = engine.push  # type: ignore[method-assign]
        self.pop = engine.pop  # type: ignore[method-assign]

    def __enter__(self) -> PersistentQueueWithCapacity:
        return self

    # Replaced per instance by the engine's own methods (see __init__).
    def push(self, items: Sequence[BytesLike], no_gil: bool = True) -> None:
        """Append ``items`` atomically; QueueFullError (nothing written) if they don't fit."""
        self._engine.push(items, no_gil)

    def pop(self, max_elements: int = 1, no_gil: bool = True) -> list[bytes]:
        """Remove and return up to ``max_elements`` items from the head ([] when empty)."""
        return self._engine.pop(max_elements, no_gil)

    @property
    def payload_size(self) -> int:
        """Sum of the stored items' sizes in bytes."""
        return self._engine.payload_size

    @property
    def max_elements(self) -> int:
        return self._engine.max_elements

    @property
    def pending(self) -> int:
        """Items reserved and not yet acked or nacked."""
        return self._engine.pending

    def reserve_batch(self, max_elements: int = 1) -> ReservedBatch:
        """Hand out up to ``max_elements`` items ([] when empty) until ack() or nack().

        Until acked they are redelivered: after nack(), to the next
        reader; after the death of the process, at the next open.
        """
        engine = self._engine
        return ReservedBatch(engine, engine.run(_dispatch.reserve_operation(max_elements)))

    @contextmanager
    def reserve(self, max_elements: int = 1) -> Iterator[list[bytes]]:
        """``with q.reserve(n) as items:`` removes the items only if the block succeeds."""
        with _settled(self.reserve_batch(max_elements)) as items:
            yield items


class MpmcQueue(_BlockingQueue[MpmcEngine]):
    """A persistent stream read by many labelled consumers.

    Elements live ``ttl`` seconds (0 = forever); labels and positions never expire.
    """

    def __init__(
        self,
        path: str,
        ttl: float,
        *,
        sync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        clock: Clock | None = None,
        directory_mode: int = DEFAULT_DIRECTORY_MODE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        options = MpmcOptions.from_arguments(locals())
        engine = self._engine = _engines.open_mpmc(path, options)
        self.add = engine.add  # type: ignore[method-assign]
        self.next = engine.next  # type: ignore[method-assign]
        self.remove_label = engine.remove_label  # type: ignore[method-assign]

    def __enter__(self) -> MpmcQueue:
        return self

    # Replaced per instance by the engine's own methods (see __init__).
    def add(self, items: Sequence[BytesLike], no_gil: bool = True) -> None:
        """Append ``items`` atomically, stamped with the current time."""
        self._engine.add(items, no_gil)

    def next(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
        no_gil: bool = True,
    ) -> tuple[list[bytes], bool]:
        """Read up to ``max_elements`` for ``label`` and save its new position.

        The bool is True exactly once after elements this label had not read
        were removed by TTL.
        """
        return self._engine.next(label, start_position, max_elements, no_gil)

    def remove_label(self, label: str, no_gil: bool = True) -> bool:
        """Forget ``label`` and its position; False when it did not exist."""
        return self._engine.remove_label(label, no_gil)

    @property
    def labels(self) -> list[str]:
        return self._engine.labels

    @property
    def ttl(self) -> float:
        return self._engine.ttl

    def pending(self, label: str) -> int:
        """Items ``label`` reserved and has not acked or nacked yet."""
        return self._engine.pending(label)

    def reserve_batch(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
    ) -> ReservedBatch:
        """Hand ``label`` its next items ([] when none) until ack() or nack().

        Unacked items are delivered to the label again, before any
        other: after nack(), and after the death of the process.
        """
        engine = self._engine
        operation = _dispatch.reserve_label_operation(label, start_position, max_elements)
        return ReservedBatch(engine, engine.run(operation))

    @contextmanager
    def reserve(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
    ) -> Iterator[list[bytes]]:
        """``with q.reserve(label, ...) as items:``: consumed only if the block succeeds."""
        with _settled(self.reserve_batch(label, start_position, max_elements)) as items:
            yield items
