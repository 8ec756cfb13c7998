"""The async face: ``rocksq_aio.PersistentQueue`` and ``rocksq_aio.MpmcQueue``.

Each call is validated in the caller, submitted to the core, and executed by
the queue's dedicated worker (``anyio.to_thread.run_sync`` under the queue's
own ``CapacityLimiter(1)``), which group-commits everything pending. A caller
cancelled at any point either withdraws its operation (not started) or has the
core give back the items of a pop/next that already committed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from . import _validate
from ._core import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CAPACITY,
    DEFAULT_DIRECTORY_MODE,
    Clock,
    FifoCore,
    Kind,
    Lease,
    MpmcCore,
    MpmcLease,
    Operation,
    Stage,
)
from ._storage import DEFAULT_BATCH_BYTES
from ._types import BytesLike, StartPosition

DEFAULT_MAX_INFLIGHT_OPS = 1000

CoreT = TypeVar("CoreT", FifoCore, MpmcCore)


class _InflightSlots:
    """A counting semaphore that only yields to the loop when it must wait.

    anyio.Semaphore checkpoints on every acquire, an extra trip through the
    event loop per operation that costs more than the operation itself.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        while self.free <= 0:
            woken = anyio.Event()
            self._waiters.append(woken)
            try:
                await woken.wait()
            except BaseException:
                if woken.is_set():
                    self._wake_next()  # pass on the wake-up we will not use
                else:
                    self._waiters.remove(woken)
                raise
        self.free -= 1

    def release(self) -> None:
        self.free += 1
        self._wake_next()

    def _wake_next(self) -> None:
        if self._waiters and self.free > 0:
            self._waiters.popleft().set()


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
    """Items an iterator read ahead and has not yielded yet."""

    __slots__ = ("first_index", "items", "label")

    def __init__(self, label: str | None = None) -> None:
        self.items: deque[bytes] = deque()
        self.label = label
        self.first_index: int | None = None  # MPMC: index of items[0], None if given back before

    def take(self) -> bytes:
        if self.first_index is not None:
            self.first_index += 1
        return self.items.popleft()


class _AsyncQueue(Generic[CoreT]):
    _core: CoreT

    def __init__(self, core: CoreT, max_inflight_ops: object) -> None:
        self._core = core
        self._max_inflight = _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        # anyio primitives need a running event loop: made on first use.
        self._limiter: anyio.CapacityLimiter | None = None
        self._loop: object = None
        self._inflight = _InflightSlots(self._max_inflight)
        self._arrival: anyio.Event | None = None
        self._seen_arrivals = 0
        # Set while one task has the worker drain pending operations; the
        # other callers wait for it instead of queueing drains of their own.
        self._draining: anyio.Event | None = None
        # Items that open iterators (items(), consume()) have read but not yet
        # yielded; closing the queue gives them back before the core closes.
        self._held: set[_Held] = set()

    @property
    def path(self) -> str:
        return self._core.path

    @property
    def closed(self) -> bool:
        return self._core.closed

    @property
    def len(self) -> int:
        return self._core.len

    def __len__(self) -> int:
        return self._core.len

    @property
    def is_empty(self) -> bool:
        return self._core.is_empty

    @property
    def disk_size(self) -> int:
        return self._core.disk_size

    @property
    def inflight_ops(self) -> int:
        """Operations submitted and not finished yet."""
        return self._inflight.total - self._inflight.free

    def _follow_event_loop(self) -> None:
        # anyio primitives belong to the event loop that made them: a queue
        # used under one loop (asyncio.run, trio.run, ...) and then another
        # makes new ones.
        loop = anyio.lowlevel.current_token().native_token
        if loop is not self._loop:
            self._loop = loop
            self._limiter = None
            self._arrival = None
            self._draining = None

    def _worker_limiter(self) -> anyio.CapacityLimiter:
        self._follow_event_loop()
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return self._limiter

    async def _perform(self, operation: Operation) -> Any:
        core = self._core
        inflight = self._inflight
        await inflight.acquire()
        try:
            core.submit(operation)
            try:
                while operation.stage is not Stage.DONE:
                    if self._draining is None:
                        await self._lead_drain()
                    else:
                        # A drain is running in the worker: it or the next one
                        # (led by one of us) will take this operation too.
                        await self._draining.wait()
            except BaseException:
                core.abandon(operation)
                raise
            finally:
                self._announce_arrivals()
        finally:
            inflight.release()
        return operation.outcome()

    async def _lead_drain(self) -> None:
        finished = self._draining = anyio.Event()
        try:
            # Shielded: a leader cancelled before the worker started (at the
            # limiter, say) would hand the lead to the next caller, which may
            # be cancelled there too, and nothing would ever drain. The
            # leader's own cancellation comes after, and its items go back.
            with anyio.CancelScope(shield=True):
                # One trip around the loop first lets every task that is
                # ready submit too, so the worker commits them as one group.
                await anyio.lowlevel.checkpoint()
                await anyio.to_thread.run_sync(self._core.drain, limiter=self._worker_limiter())
        finally:
            self._draining = None
            finished.set()

    def _announce_arrivals(self) -> None:
        # Wakes waiters on the event loop thread once the core has
        # committed new elements (pushes, adds, and items given back).
        arrivals = self._core.arrivals
        if arrivals != self._seen_arrivals:
            self._seen_arrivals = arrivals
            if self._arrival is not None:
                self._arrival.set()
                self._arrival = None

    def _arrival_event(self) -> anyio.Event:
        self._follow_event_loop()
        if self._arrival is None:
            self._arrival = anyio.Event()
        return self._arrival

    def _give_back(self, held: _Held) -> None:
        raise NotImplementedError

    def _release_held(self, held: _Held) -> None:
        """Give back what ``held`` read ahead; runs on the event loop's thread."""
        self._held.discard(held)
        try:
            if held.items and not self._core.closed:
                self._give_back(held)
                self._announce_arrivals()
        finally:
            held.items.clear()

    def _release_all_held(self) -> None:
        for held in list(self._held):
            self._release_held(held)

    def _wake_waiters(self) -> None:
        # After a close: parked waiters retry and get QueueClosedError.
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    async def aclose(self) -> None:
        """Give back read-ahead items, finish the operation in progress, release the queue."""
        with anyio.CancelScope(shield=True):
            self._release_all_held()
            await anyio.to_thread.run_sync(self._core.close, limiter=self._worker_limiter())
            self._wake_waiters()

    def close(self) -> None:
        """Release the queue from synchronous code (from the event loop's thread, if any)."""
        self._release_all_held()
        self._core.close()
        self._wake_waiters()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def _settled(batch: ReservedBatch) -> AsyncGenerator[list[bytes], None]:
    """Acknowledge ``batch`` if the block succeeds, release it otherwise."""
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

    def __init__(self, queue: _AsyncQueue[Any], lease: Lease | MpmcLease) -> None:
        self._queue = queue
        self._lease = lease

    @property
    def items(self) -> list[bytes]:
        return self._lease.items

    @property
    def settled(self) -> bool:
        return self._lease.settled

    async def ack(self) -> None:
        """The items were processed: they are never delivered again."""
        await self._queue._perform(Operation(Kind.ACKNOWLEDGE, (self._lease,)))

    async def nack(self) -> None:
        """The items were not processed: they are delivered again, first."""
        await self._queue._perform(Operation(Kind.RELEASE, (self._lease,)))


class PersistentQueue(_AsyncQueue[FifoCore]):
    """A persistent FIFO queue of bytes for async code (asyncio, uvloop, trio)."""

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
        _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        super().__init__(
            FifoCore(
                path,
                max_elements,
                sync=sync,
                batch_bytes=batch_bytes,
                cache_bytes=cache_bytes,
                directory_mode=directory_mode,
            ),
            max_inflight_ops,
        )

    async def __aenter__(self) -> PersistentQueue:
        return self

    @property
    def payload_size(self) -> int:
        return self._core.payload_size

    @property
    def max_elements(self) -> int:
        return self._core.capacity

    async def push(self, items: Sequence[BytesLike]) -> None:
        """Append ``items`` atomically; QueueFullError (nothing written) if they don't fit."""
        await self._perform(FifoCore.push_operation(items))

    async def pop(self, max_elements: int = 1) -> list[bytes]:
        """Remove and return up to ``max_elements`` items ([] when empty)."""
        items: list[bytes] = await self._perform(FifoCore.pop_operation(max_elements))
        return items

    async def pop_wait(self, max_elements: int = 1, timeout: float | None = None) -> list[bytes]:
        """Like pop(), but wait until at least one item is there ([] after ``timeout`` s).

        The queue is always looked at once, even with ``timeout=0``.
        """
        FifoCore.pop_operation(max_elements)  # validates before waiting
        deadline = _deadline(timeout)
        while True:
            arrival = self._arrival_event()
            items = await self.pop(max_elements)
            if items or not await _wait_until(arrival, deadline):
                return items

    @property
    def pending(self) -> int:
        """Items reserved and not yet acknowledged or released."""
        return self._core.pending

    async def reserve_batch(
        self, max_elements: int = 1, timeout: float | None = None
    ) -> ReservedBatch:
        """Hand out up to ``max_elements`` items, waiting for one like pop_wait().

        The items stay the queue's until ``await batch.ack()``; ``await
        batch.nack()``, a cancellation of this call, or the death of the
        process puts them back at the head. Empty after ``timeout`` seconds.
        """
        FifoCore.reserve_operation(max_elements)  # validates before waiting
        deadline = _deadline(timeout)
        while True:
            arrival = self._arrival_event()
            lease: Lease = await self._perform(FifoCore.reserve_operation(max_elements))
            if lease.items or not await _wait_until(arrival, deadline):
                return ReservedBatch(self, lease)

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
        try:
            while True:
                if not held.items:
                    held.items.extend(await self.pop_wait(batch_size))
                    continue
                yield held.take()
        finally:
            self._release_held(held)

    def _give_back(self, held: _Held) -> None:
        self._core.unpop(list(held.items))


class MpmcQueue(_AsyncQueue[MpmcCore]):
    """A persistent stream read by many labelled consumers, for async code."""

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
        _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        options: dict[str, Any] = {
            "sync": sync,
            "batch_bytes": batch_bytes,
            "directory_mode": directory_mode,
            "cache_bytes": cache_bytes,
        }
        if clock is not None:
            options["clock"] = clock
        super().__init__(MpmcCore(path, ttl, **options), max_inflight_ops)

    async def __aenter__(self) -> MpmcQueue:
        return self

    @property
    def labels(self) -> list[str]:
        return self._core.labels

    @property
    def ttl(self) -> float:
        return self._core.ttl

    async def add(self, items: Sequence[BytesLike]) -> None:
        """Append ``items`` atomically, stamped with the current time."""
        await self._perform(MpmcCore.add_operation(items))

    async def next(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
    ) -> tuple[list[bytes], bool]:
        """Read up to ``max_elements`` for ``label``; the bool reports TTL losses once."""
        items, expired, _start = await self._perform(
            MpmcCore.next_operation(label, start_position, max_elements)
        )
        return items, expired

    async def remove_label(self, label: str) -> bool:
        removed: bool = await self._perform(MpmcCore.remove_label_operation(label))
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
        MpmcCore.next_operation(label, start_position, max_elements)  # validates first
        deadline = _deadline(timeout)
        while True:
            arrival = self._arrival_event()
            items, expired = await self.next(label, start_position, max_elements)
            if items or expired or not await _wait_until(arrival, deadline):
                return items, expired

    def pending(self, label: str) -> int:
        """Items ``label`` reserved and has not acknowledged or released yet."""
        return self._core.pending(label)

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
        MpmcCore.reserve_operation(label, start_position, max_elements)  # validates first
        deadline = _deadline(timeout)
        while True:
            arrival = self._arrival_event()
            lease: MpmcLease = await self._perform(
                MpmcCore.reserve_operation(label, start_position, max_elements)
            )
            if lease.items or not await _wait_until(arrival, deadline):
                return ReservedBatch(self, lease)

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
        iteration stops (or the queue closes) are handed back to the label.
        """
        MpmcCore.next_operation(label, start_position, batch_size)  # validates first
        held = _Held(label)
        self._held.add(held)
        try:
            while True:
                if not held.items:
                    arrival = self._arrival_event()
                    items, _expired, held.first_index = await self._perform(
                        MpmcCore.next_operation(label, start_position, batch_size)
                    )
                    if not items:
                        await arrival.wait()
                    held.items.extend(items)
                    continue
                yield held.take()
        finally:
            self._release_held(held)

    def _give_back(self, held: _Held) -> None:
        assert held.label is not None
        self._core.give_back(held.label, list(held.items), held.first_index)
