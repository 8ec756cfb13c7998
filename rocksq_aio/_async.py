"""The async face: ``rocksq_aio.PersistentQueue`` and ``rocksq_aio.MpmcQueue``.

Each call is validated in the caller into an operation and handed to the
queue's worker (``_worker``), which group-commits everything pending through
``anyio.to_thread.run_sync``. A caller cancelled at any point either withdraws
its operation (not started) or has its items given back, through the worker,
if its batch had already committed. The face knows the engine only through the
protocol in ``_engine``.

The constructors check their arguments and touch nothing on disk: the engine
opens in the worker's thread (``_opening``) at ``async with``, ``await
queue.open()`` or the first operation awaited, and its errors (a locked,
corrupted or foreign directory) are raised there. Closing runs in the worker
too, so neither keeps the event loop from running.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import anyio

from . import _dispatch, _engines, _validate
from ._dispatch import Operation, Reservation, give_back_operation, settle_operation
from ._engine import FifoEngine, MpmcEngine
from ._face import EngineProperties, EngineT
from ._opening import OpenOnUse
from ._options import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_CACHE_BYTES,
    DEFAULT_CAPACITY,
    DEFAULT_DIRECTORY_MODE,
    DEFAULT_MAX_INFLIGHT_OPS,
    Clock,
    FifoOptions,
    MpmcOptions,
)
from ._types import BytesLike, StartPosition
from ._worker import Worker


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    return anyio.current_time() + max(0.0, timeout)


async def _wait_until(arrival: anyio.Event, deadline: float | None) -> bool:
    """Wait for ``arrival``; False if the deadline passed first."""
    if deadline is None:
        await arrival.wait()
        return True
    with anyio.move_on_at(deadline):
        await arrival.wait()
        return True
    return False


class _Held:
    """Items an iterator read ahead and has not yielded yet: the rest of one read."""

    __slots__ = ("delivered", "items", "read")

    def __init__(self) -> None:
        self.read: Operation | None = None
        self.items: deque[bytes] = deque()
        self.delivered = 0

    def hold(self, read: Operation, items: list[bytes]) -> None:
        self.read = read
        self.items.extend(items)
        self.delivered = 0

    def take(self) -> bytes:
        self.delivered += 1
        return self.items.popleft()


QueueT = TypeVar("QueueT", bound="_AsyncQueue[Any]")


class _AsyncQueue(EngineProperties[EngineT]):
    def __init__(self, opener: tuple[str, Callable[[], EngineT]], max_inflight: int) -> None:
        path, open_engine = opener
        worker_ref: weakref.ref[Worker] | None = None

        def hand_over(engine: EngineT) -> None:
            # The worker calls the engine itself from now on; a weak
            # reference, so that a dropped queue is freed (and its engine
            # closed) at once, not by the cycle collector.
            worker = worker_ref() if worker_ref is not None else None
            if worker is not None:
                worker.engine = engine

        self._opening: OpenOnUse[EngineT] = OpenOnUse(path, open_engine, hand_over)
        self._worker = Worker(self._opening, max_inflight)
        worker_ref = weakref.ref(self._worker)
        # Items that open iterators (items(), consume()) have read but not yet
        # yielded; closing the queue gives them back before the engine closes.
        self._held: set[_Held] = set()

    @property
    def _engine(self) -> EngineT:
        # A property read before the queue opened opens it here (rule 3 of _opening).
        return self._opening.opened()

    @_engine.setter
    def _engine(self, engine: EngineT) -> None:
        raise AttributeError("the async face's engine is set when it opens")

    @property
    def path(self) -> str:
        return self._opening.path

    @property
    def closed(self) -> bool:
        return self._opening.closed

    async def open(self: QueueT) -> QueueT:
        """Open the queue now, in its worker (off the event loop), and return it.

        Optional: ``async with`` and the first operation awaited open it too.
        Raises what opening raises (QueueLockedError, QueueCorruptedError, ...).
        """
        if self._opening.engine is None:
            await anyio.to_thread.run_sync(self._opening.opened, limiter=self._worker.limiter())
        return self

    async def _enter(self: QueueT) -> QueueT:
        try:
            return await self.open()
        except BaseException:
            # Cancelled once the engine had opened: the block never ran, and
            # nobody would close the queue.
            await self.aclose()
            raise

    @property
    def inflight_ops(self) -> int:
        """Operations submitted and not finished yet."""
        return self._worker.inflight

    async def _perform(self, operation: Operation) -> Any:
        return await self._worker.perform(operation)

    def _take_held(self, held: _Held) -> Operation | None:
        """Forget what ``held`` read ahead; the give-back that returns it, if any."""
        self._held.discard(held)
        read = held.read
        remaining = bool(held.items)
        held.items.clear()
        held.read = None
        if read is None or not remaining or self.closed:
            return None
        return give_back_operation(read, held.delivered)

    async def _release_held(self, held: _Held) -> None:
        """Give back what ``held`` read ahead, through the worker."""
        give_back = self._take_held(held)
        if give_back is not None:
            with anyio.CancelScope(shield=True):
                await self._worker.give_back(give_back)

    async def aclose(self) -> None:
        """Give back read-ahead items, finish the operation in progress, release the queue."""
        with anyio.CancelScope(shield=True):
            for held in list(self._held):
                await self._release_held(held)
            await self._worker.aclose()

    def close(self) -> None:
        """Release the queue from synchronous code (from the event loop's thread, if any)."""
        for held in list(self._held):
            give_back = self._take_held(held)
            if give_back is not None:
                self._engine.run(give_back)
        self._opening.close()
        self._worker.wake_waiters()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def _settled(batch: ReservedBatch) -> AsyncGenerator[list[bytes], None]:
    """Ack ``batch`` if the block succeeds, nack it otherwise."""
    try:
        yield batch.items
    except BaseException:
        with anyio.CancelScope(shield=True):
            await batch.nack()
        raise
    with anyio.CancelScope(shield=True):
        await batch.ack()


class ReservedBatch:
    """Reserved items; settle them with ``await ack()`` or ``await nack()`` (once)."""

    def __init__(self, queue: _AsyncQueue[Any], reservation: Reservation) -> None:
        self._queue = queue
        self._reservation = reservation

    @property
    def items(self) -> list[bytes]:
        return self._reservation.items

    @property
    def settled(self) -> bool:
        return self._reservation.settled

    async def ack(self) -> None:
        """The items were processed: they are never delivered again."""
        await self._queue._perform(settle_operation(self._reservation, ack=True))

    async def nack(self) -> None:
        """The items were not processed: they are delivered again, first."""
        await self._queue._perform(settle_operation(self._reservation, ack=False))


class PersistentQueue(_AsyncQueue[FifoEngine]):
    """A persistent FIFO queue of bytes for async code (asyncio, uvloop, trio).

    ``path`` names the engine: a directory (RocksDB) or ``memory://NAME``.

    The constructor checks its arguments (TypeError, ValueError) and opens
    nothing. The queue opens in its worker thread, off the event loop, at
    ``async with``, ``await queue.open()`` or the first operation awaited,
    which raise what opening raises (QueueLockedError, QueueCorruptedError,
    ...); a failed open is tried again by the next operation. Reading a
    property (``len``, ``payload_size``, ...) before then opens the queue in
    the calling thread. ``aclose()`` (or the end of ``async with``) closes it
    in the worker too.
    """

    def __init__(
        self,
        path: str,
        max_elements: int = DEFAULT_CAPACITY,
        *,
        max_inflight_ops: int = DEFAULT_MAX_INFLIGHT_OPS,
        sync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        directory_mode: int = DEFAULT_DIRECTORY_MODE,
    ) -> None:
        options = FifoOptions.from_arguments(locals())
        inflight = options.inflight_limit()
        super().__init__(_engines.fifo_opener(path, options), inflight)

    async def __aenter__(self) -> PersistentQueue:
        return await self._enter()

    @property
    def payload_size(self) -> int:
        return self._engine.payload_size

    @property
    def max_elements(self) -> int:
        return self._engine.max_elements

    async def push(self, items: Sequence[BytesLike]) -> None:
        """Append ``items`` atomically; QueueFullError (nothing written) if they don't fit."""
        await self._worker.perform(_dispatch.push_operation(items))

    async def pop(self, max_elements: int = 1) -> list[bytes]:
        """Remove and return up to ``max_elements`` items ([] when empty)."""
        items: list[bytes] = await self._worker.perform(_dispatch.pop_operation(max_elements))
        return items

    async def pop_wait(self, max_elements: int = 1, timeout: float | None = None) -> list[bytes]:
        """Like pop(), but wait until at least one item is there ([] after ``timeout`` s).

        The queue is always looked at once, even with ``timeout=0``.
        """
        _validate.positive_int(max_elements, "max_elements")  # before waiting
        deadline = _deadline(timeout)
        worker = self._worker
        while True:
            arrival = worker.arrival_event()
            items = await self.pop(max_elements)
            if items or not await _wait_until(arrival, deadline):
                return items

    @property
    def pending(self) -> int:
        """Items reserved and not yet acked or nacked."""
        return self._engine.pending

    async def reserve_batch(
        self, max_elements: int = 1, timeout: float | None = None
    ) -> ReservedBatch:
        """Hand out up to ``max_elements`` items, waiting for one like pop_wait().

        The items stay the queue's until ``await batch.ack()``; ``await
        batch.nack()``, a cancellation of this call, or the death of the
        process puts them back at the head. Empty after ``timeout`` seconds.
        """
        _validate.positive_int(max_elements, "max_elements")  # before waiting
        deadline = _deadline(timeout)
        worker = self._worker
        while True:
            arrival = worker.arrival_event()
            reservation: Reservation = await worker.perform(
                _dispatch.reserve_operation(max_elements)
            )
            if reservation.items or not await _wait_until(arrival, deadline):
                return ReservedBatch(self, reservation)

    @asynccontextmanager
    async def reserve(
        self, max_elements: int = 1, timeout: float | None = None
    ) -> AsyncGenerator[list[bytes], None]:
        """``async with q.reserve(n) as items:``: removed only if the block succeeds.

        On an exception or a cancellation inside the block the items go back to
        the head of the queue; if the process dies they are there at the next
        open. Processing is therefore at least once.
        """
        async with _settled(await self.reserve_batch(max_elements, timeout)) as items:
            yield items

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self.items()

    async def items(self, batch_size: int = 1) -> AsyncGenerator[bytes, None]:
        """Yield items forever, waiting for new ones without polling.

        With ``batch_size`` > 1, items popped but not yet yielded when the
        iteration stops (or the queue closes) are put back at the head.
        """
        _validate.positive_int(batch_size, "batch_size")
        held = _Held()
        self._held.add(held)
        worker = self._worker
        try:
            while True:
                if not held.items:
                    arrival = worker.arrival_event()
                    read = _dispatch.pop_operation(batch_size)
                    items: list[bytes] = await worker.perform(read)
                    if not items:
                        await arrival.wait()
                    held.hold(read, items)
                    continue
                yield held.take()
        finally:
            await self._release_held(held)


class MpmcQueue(_AsyncQueue[MpmcEngine]):
    """A persistent stream read by many labelled consumers, for async code.

    ``path`` names the engine: a directory (RocksDB) or ``memory://NAME``.
    It opens and closes as ``PersistentQueue`` does: at ``async with``,
    ``await queue.open()`` or the first operation awaited, in its worker.
    """

    def __init__(
        self,
        path: str,
        ttl: float,
        *,
        max_inflight_ops: int = DEFAULT_MAX_INFLIGHT_OPS,
        sync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        clock: Clock | None = None,
        directory_mode: int = DEFAULT_DIRECTORY_MODE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        options = MpmcOptions.from_arguments(locals())
        inflight = options.inflight_limit()
        super().__init__(_engines.mpmc_opener(path, options), inflight)

    async def __aenter__(self) -> MpmcQueue:
        return await self._enter()

    @property
    def labels(self) -> list[str]:
        return self._engine.labels

    @property
    def ttl(self) -> float:
        return self._engine.ttl

    async def add(self, items: Sequence[BytesLike]) -> None:
        """Append ``items`` atomically, stamped with the current time."""
        await self._worker.perform(_dispatch.add_operation(items))

    async def next(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
    ) -> tuple[list[bytes], bool]:
        """Read up to ``max_elements`` for ``label``; the bool reports TTL losses once."""
        read: tuple[list[bytes], bool] = await self._worker.perform(
            _dispatch.next_operation(label, start_position, max_elements)
        )
        return read

    async def remove_label(self, label: str) -> bool:
        """Forget ``label`` and its position; False when it did not exist."""
        removed: bool = await self._worker.perform(_dispatch.remove_label_operation(label))
        return removed

    async def next_wait(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
        timeout: float | None = None,
    ) -> tuple[list[bytes], bool]:
        """Like next(), but wait for at least one item (([], False) after ``timeout`` s).

        Also returns at once, possibly without items, to report that unread
        elements expired. The queue is always looked at once, even with
        ``timeout=0``.
        """
        _dispatch.next_operation(label, start_position, max_elements)  # validates first
        deadline = _deadline(timeout)
        worker = self._worker
        while True:
            arrival = worker.arrival_event()
            items, expired = await self.next(label, start_position, max_elements)
            if items or expired or not await _wait_until(arrival, deadline):
                return items, expired

    def pending(self, label: str) -> int:
        """Items ``label`` reserved and has not acked or nacked yet."""
        return self._engine.pending(label)

    async def reserve_batch(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
        timeout: float | None = None,
    ) -> ReservedBatch:
        """Hand ``label`` its next items, waiting for one like next_wait().

        Until ``await batch.ack()`` they are the label's to receive again:
        ``await batch.nack()``, a cancellation of this call, or the death of
        the process delivers them to the label again, first. Empty after
        ``timeout`` seconds.
        """
        _dispatch.next_operation(label, start_position, max_elements)  # validates first
        deadline = _deadline(timeout)
        worker = self._worker
        while True:
            arrival = worker.arrival_event()
            reservation: Reservation = await worker.perform(
                _dispatch.reserve_label_operation(label, start_position, max_elements)
            )
            if reservation.items or not await _wait_until(arrival, deadline):
                return ReservedBatch(self, reservation)

    @asynccontextmanager
    async def reserve(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
        timeout: float | None = None,
    ) -> AsyncGenerator[list[bytes], None]:
        """``async with q.reserve(label, ...) as items:``: consumed only if the block succeeds."""
        batch = await self.reserve_batch(label, start_position, max_elements, timeout)
        async with _settled(batch) as items:
            yield items

    async def consume(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        batch_size: int = 1,
    ) -> AsyncGenerator[bytes, None]:
        """Yield ``label``'s items forever, waiting for new ones without polling.

        With ``batch_size`` > 1, items read but not yet yielded when the
        iteration stops (or the queue closes) are given back to the label.
        """
        _dispatch.next_operation(label, start_position, batch_size)  # validates first
        held = _Held()
        self._held.add(held)
        worker = self._worker
        try:
            while True:
                if not held.items:
                    arrival = worker.arrival_event()
                    read = _dispatch.next_operation(label, start_position, batch_size)
                    items, _expired = await worker.perform(read)
                    if not items:
                        await arrival.wait()
                    held.hold(read, items)
                    continue
                yield held.take()
        finally:
            await self._release_held(held)
