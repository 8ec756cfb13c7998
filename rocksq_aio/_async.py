"""The async face: ``rocksq_aio.PersistentQueue`` and ``rocksq_aio.MpmcQueue``.

Each call is validated in the caller, submitted to the core, and executed by
the queue's dedicated worker (``anyio.to_thread.run_sync`` under the queue's
own ``CapacityLimiter(1)``), which group-commits everything pending. A caller
cancelled at any point either withdraws its operation (not started) or has the
core give back the items of a pop/next that already committed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

from . import _validate
from ._core import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CAPACITY,
    Clock,
    FifoCore,
    MpmcCore,
    Operation,
    Stage,
)
from ._storage import DEFAULT_BATCH_BYTES
from ._types import StartPosition

DEFAULT_MAX_INFLIGHT_OPS = 1000

CoreT = TypeVar("CoreT", FifoCore, MpmcCore)


class _AsyncQueue(Generic[CoreT]):
    _core: CoreT

    def __init__(self, core: CoreT, max_inflight_ops: object) -> None:
        self._core = core
        self._max_inflight = _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        # anyio primitives need a running event loop: made on first use.
        self._limiter: anyio.CapacityLimiter | None = None
        self._inflight: anyio.Semaphore | None = None
        self._arrival: anyio.Event | None = None
        self._seen_arrivals = 0

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
        if self._inflight is None:
            return 0
        return self._max_inflight - self._inflight.value

    def _primitives(self) -> tuple[anyio.CapacityLimiter, anyio.Semaphore]:
        if self._limiter is None or self._inflight is None:
            self._limiter = anyio.CapacityLimiter(1)
            self._inflight = anyio.Semaphore(self._max_inflight)
        return self._limiter, self._inflight

    async def _perform(self, operation: Operation) -> Any:
        limiter, inflight = self._primitives()
        core = self._core
        async with inflight:
            core.submit(operation)
            try:
                while operation.stage is not Stage.DONE:
                    await anyio.to_thread.run_sync(core.drain, limiter=limiter)
            except BaseException:
                core.abandon(operation)
                raise
            finally:
                self._announce_arrivals()
        return operation.outcome()

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
        if self._arrival is None:
            self._arrival = anyio.Event()
        return self._arrival

    async def aclose(self) -> None:
        """Finish the operation in progress and release the queue."""
        limiter, _ = self._primitives()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._core.close, limiter=limiter)

    def close(self) -> None:
        """Release the queue from synchronous code."""
        self._core.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


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
    ) -> None:
        _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        super().__init__(
            FifoCore(
                path, max_elements, sync=sync, batch_bytes=batch_bytes, cache_bytes=cache_bytes
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

    async def push(self, items: list[bytes]) -> None:
        """Append ``items`` atomically; QueueFullError (nothing written) if they don't fit."""
        await self._perform(FifoCore.push_operation(items))

    async def pop(self, max_elements: int = 1) -> list[bytes]:
        """Remove and return up to ``max_elements`` items ([] when empty)."""
        items: list[bytes] = await self._perform(FifoCore.pop_operation(max_elements))
        return items

    async def pop_wait(self, max_elements: int = 1, timeout: float | None = None) -> list[bytes]:
        """Like pop(), but wait until at least one item is there ([] after ``timeout`` s)."""
        operation_check = FifoCore.pop_operation(max_elements)  # validates before waiting
        del operation_check
        with anyio.move_on_after(timeout):
            while True:
                arrival = self._arrival_event()
                items = await self.pop(max_elements)
                if items:
                    return items
                await arrival.wait()
        return []

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.items()

    async def items(self, batch_size: int = 1) -> AsyncIterator[bytes]:
        """Yield items forever, waiting for new ones without polling.

        With ``batch_size`` > 1, items popped but not yet yielded when the
        iteration stops are put back at the head of the queue.
        """
        _validate.positive_int(batch_size, "batch_size")
        buffered: deque[bytes] = deque()
        try:
            while True:
                if not buffered:
                    buffered.extend(await self.pop_wait(batch_size))
                yield buffered.popleft()
        finally:
            if buffered and not self._core.closed:
                self._core.unpop(list(buffered))


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
    ) -> None:
        _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        options: dict[str, Any] = {"sync": sync, "batch_bytes": batch_bytes}
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

    async def add(self, items: list[bytes]) -> None:
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
        elements expired.
        """
        MpmcCore.next_operation(label, start_position, max_elements)  # validates first
        with anyio.move_on_after(timeout):
            while True:
                arrival = self._arrival_event()
                items, expired = await self.next(label, start_position, max_elements)
                if items or expired:
                    return items, expired
                await arrival.wait()
        return [], False

    async def consume(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        batch_size: int = 1,
    ) -> AsyncIterator[bytes]:
        """Yield ``label``'s items forever, waiting for new ones without polling.

        With ``batch_size`` > 1, items read but not yet yielded when the
        iteration stops are handed back to the label.
        """
        MpmcCore.next_operation(label, start_position, batch_size)  # validates first
        buffered: deque[bytes] = deque()
        first_index: int | None = None  # of buffered[0]; None for items given back before
        try:
            while True:
                if not buffered:
                    arrival = self._arrival_event()
                    items, _expired, first_index = await self._perform(
                        MpmcCore.next_operation(label, start_position, batch_size)
                    )
                    if not items:
                        await arrival.wait()
                    buffered.extend(items)
                    continue
                item = buffered.popleft()
                if first_index is not None:
                    first_index += 1
                yield item
        finally:
            if buffered and not self._core.closed:
                self._core.give_back(label, list(buffered), first_index)
