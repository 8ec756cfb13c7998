"""Nonblocking face: a drop-in replacement for ``rocksq.nonblocking``.

Methods return a :class:`Response` at once; a dedicated worker thread per
queue executes the operations, group-committing whatever is pending. Unlike
RocksQ's, a Response reports the operation's error (``QueueFullError``
included), can be read more than once, and is awaitable:
``variant = await q.pop(5)`` works in async code without blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

from . import _validate
from ._core import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CAPACITY,
    DEFAULT_DIRECTORY_MODE,
    Clock,
    FifoCore,
    MpmcCore,
    Operation,
    Stage,
)
from ._errors import QueueClosedError, QueueError
from ._storage import DEFAULT_BATCH_BYTES
from ._types import BytesLike, StartPosition

__all__ = [
    "MpmcQueue",
    "MpmcResponse",
    "MpmcResponseVariant",
    "PersistentQueueWithCapacity",
    "Response",
    "ResponseVariant",
    "StartPosition",
]

DEFAULT_MAX_INFLIGHT_OPS = 1000


class ResponseVariant:
    """The result of a FIFO operation; the field of the operation's kind is set."""

    __slots__ = ("_data", "_len", "_size")

    def __init__(
        self, data: list[bytes] | None = None, len: int | None = None, size: int | None = None
    ) -> None:
        self._data = data
        self._len = len
        self._size = size

    @property
    def data(self) -> list[bytes] | None:
        """Items of a pop()."""
        return self._data

    @property
    def len(self) -> int | None:
        return self._len

    @property
    def size(self) -> int | None:
        """Bytes, for disk_size and payload_size."""
        return self._size

    def __repr__(self) -> str:
        return f"ResponseVariant(data={self._data!r}, len={self._len!r}, size={self._size!r})"


class MpmcResponseVariant:
    """The result of an MPMC operation; the field of the operation's kind is set."""

    __slots__ = ("_data", "_labels", "_len", "_removed_label", "_size")

    def __init__(
        self,
        data: tuple[list[bytes], bool] | None = None,
        labels: list[str] | None = None,
        removed_label: bool | None = None,
        len: int | None = None,
        size: int | None = None,
    ) -> None:
        self._data = data
        self._labels = labels
        self._removed_label = removed_label
        self._len = len
        self._size = size

    @property
    def data(self) -> tuple[list[bytes], bool] | None:
        """(items, expired) of a next()."""
        return self._data

    @property
    def labels(self) -> list[str] | None:
        return self._labels

    @property
    def removed_label(self) -> bool | None:
        return self._removed_label

    @property
    def len(self) -> int | None:
        return self._len

    @property
    def size(self) -> int | None:
        return self._size

    def __repr__(self) -> str:
        return (
            f"MpmcResponseVariant(data={self._data!r}, labels={self._labels!r}, "
            f"removed_label={self._removed_label!r}, len={self._len!r}, size={self._size!r})"
        )


VariantT = TypeVar("VariantT", ResponseVariant, MpmcResponseVariant)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
            return True
        except RuntimeError:
            pass
    return False


class _Call:
    """A read answered by the worker in submission order (``len``, ``labels``...)."""

    __slots__ = ("error", "function", "result", "stage")

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.stage = Stage.PENDING
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.function()
        except BaseException as error:
            self.error = error
        self.stage = Stage.DONE

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


_Task = Operation | _Call


class _Worker:
    """Runs a queue's tasks in submission order on one thread, group-committing operations.

    The thread is the only one of a single-thread executor, which finishes
    every submitted task before the interpreter exits. It is handed a loop
    that runs until no task is left, so a caller pays for a thread hand-off
    only when the worker was idle, not once per call.
    """

    def __init__(self, core: FifoCore | MpmcCore, max_inflight: int) -> None:
        self._core = core
        self._max_inflight = max_inflight
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._tasks: deque[_Task] = deque()
        self.inflight = 0
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rocksq_aio-worker")

    def submit(self, task: _Task) -> None:
        """Queue ``task`` after everything submitted before it (an operation goes to the core).

        Blocks the caller, as RocksQ does, while ``max_inflight_ops`` are unfinished.
        """
        with self._lock:
            while self.inflight >= self._max_inflight:
                self._finished.wait()
            if type(task) is Operation:
                self._core.submit(task)
            self.inflight += 1
            self._tasks.append(task)
            if self._running:
                return
            self._running = True
        try:
            self._executor.submit(self._run)
        except RuntimeError:
            self._withdraw(task)
            raise QueueClosedError(f"queue at {self._core.path!r} is closed") from None

    def _withdraw(self, task: _Task) -> None:
        with self._lock:
            self._running = False
            self._tasks.remove(task)
            self.inflight -= 1
            if type(task) is Operation:
                self._core.abandon(task)
            self._finished.notify_all()

    def _run(self) -> None:
        core = self._core
        lock = self._lock
        while True:
            with lock:
                if not self._tasks:
                    self._running = False
                    return
                tasks = list(self._tasks)
                self._tasks.clear()
            for task in tasks:
                try:
                    if isinstance(task, _Call):
                        task.run()
                    else:
                        # An earlier drain may have taken it already, or left
                        # it pending when its group reached the byte limit.
                        while task.stage is not Stage.DONE:
                            core.drain()
                except BaseException as error:
                    # drain() reports queue errors on the operations; anything
                    # else is a bug, reported here rather than hanging get(),
                    # with the operation withdrawn so that it never runs later.
                    if isinstance(task, Operation):
                        with contextlib.suppress(BaseException):
                            core.abandon(task)
                    task.error = error
                    task.stage = Stage.DONE
            with lock:
                self.inflight -= len(tasks)
                self._finished.notify_all()

    def wait(self, task: _Task) -> None:
        """Block until ``task`` is done."""
        with self._lock:
            while task.stage is not Stage.DONE:
                self._finished.wait()

    def shutdown(self, wait: bool) -> None:
        self._executor.shutdown(wait=wait)


class _Response(Generic[VariantT]):
    __slots__ = ("_make_variant", "_task", "_variant", "_worker")

    def __init__(
        self, worker: _Worker, task: _Task, make_variant: Callable[[Any], VariantT]
    ) -> None:
        self._worker = worker
        self._task = task
        self._make_variant: Callable[[Any], VariantT] = make_variant
        self._variant: VariantT | None = None

    @property
    def is_ready(self) -> bool:
        """True once the operation finished (successfully or not)."""
        return self._task.stage is Stage.DONE

    def _result(self) -> VariantT:
        if self._variant is None:
            self._variant = self._make_variant(self._task.outcome())
        return self._variant

    def try_get(self) -> VariantT | None:
        """The result if ready, else None; raises the operation's error."""
        if self._task.stage is not Stage.DONE:
            return None
        return self._result()

    def get(self) -> VariantT:
        """Wait for the result; raises the operation's error.

        Refused on an event loop's thread, where waiting would freeze the loop:
        ``await`` the response there.
        """
        if _in_event_loop():
            raise QueueError(
                "Response.get() would block the event loop; use `await response` in async code"
            )
        if self._task.stage is not Stage.DONE:
            self._worker.wait(self._task)
        return self._result()

    def __await__(self) -> Generator[Any, None, VariantT]:
        return self._wait().__await__()

    async def _wait(self) -> VariantT:
        if self._task.stage is not Stage.DONE:
            await anyio.to_thread.run_sync(self._worker.wait, self._task, abandon_on_cancel=True)
        return self._result()


class Response(_Response[ResponseVariant]):
    """The future-like result of a FIFO operation."""

    __slots__ = ()


class MpmcResponse(_Response[MpmcResponseVariant]):
    """The future-like result of an MPMC operation."""

    __slots__ = ()


CoreT = TypeVar("CoreT", FifoCore, MpmcCore)


class _NonblockingQueue(Generic[CoreT]):
    def __init__(self, core: CoreT, max_inflight_ops: int) -> None:
        self._core: CoreT = core
        self._worker = _Worker(core, max_inflight_ops)

    def _perform(self, operation: Operation) -> Operation:
        self._worker.submit(operation)
        return operation

    def _submit(self, function: Callable[[], Any]) -> _Call:
        """Answer ``function()`` on the worker after everything submitted before it."""
        call = _Call(function)
        self._worker.submit(call)
        return call

    @property
    def inflight_ops(self) -> int:
        """Operations submitted and not finished yet."""
        return self._worker.inflight

    def close(self) -> None:
        """Finish every submitted operation, then release the queue."""
        self._worker.shutdown(wait=True)
        self._core.close()

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=False)


def _pushed(_result: None) -> ResponseVariant:
    return ResponseVariant()


class PersistentQueueWithCapacity(_NonblockingQueue[FifoCore]):
    """RocksQ's nonblocking FIFO queue."""

    def __init__(
        self,
        path: str,
        max_elements: int = DEFAULT_CAPACITY,
        max_inflight_ops: int = DEFAULT_MAX_INFLIGHT_OPS,
        *,
        sync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        directory_mode: int = DEFAULT_DIRECTORY_MODE,
    ) -> None:
        inflight = _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        super().__init__(
            FifoCore(
                path,
                max_elements,
                sync=sync,
                batch_bytes=batch_bytes,
                cache_bytes=cache_bytes,
                directory_mode=directory_mode,
            ),
            inflight,
        )

    def __enter__(self) -> PersistentQueueWithCapacity:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def push(self, items: Sequence[BytesLike], no_gil: bool = True) -> Response:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        return Response(self._worker, self._perform(FifoCore.push_operation(items)), _pushed)

    def pop(self, max_elements: int = 1, no_gil: bool = True) -> Response:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        return Response(
            self._worker, self._perform(FifoCore.pop_operation(max_elements)), ResponseVariant
        )

    # As in RocksQ, these are answered by the worker, after every operation
    # submitted before them.
    @property
    def len(self) -> Response:
        return Response(
            self._worker, self._submit(lambda: self._core.len), lambda n: ResponseVariant(len=n)
        )

    @property
    def payload_size(self) -> Response:
        core = self._core
        return Response(
            self._worker, self._submit(lambda: core.payload_size), lambda n: ResponseVariant(size=n)
        )

    @property
    def disk_size(self) -> Response:
        core = self._core
        return Response(
            self._worker, self._submit(lambda: core.disk_size), lambda n: ResponseVariant(size=n)
        )

    @property
    def is_empty(self) -> bool:
        return self._core.is_empty


def _added(_result: None) -> MpmcResponseVariant:
    return MpmcResponseVariant()


def _read(result: tuple[list[bytes], bool]) -> MpmcResponseVariant:
    return MpmcResponseVariant(data=(result[0], result[1]))


class MpmcQueue(_NonblockingQueue[MpmcCore]):
    """RocksQ's nonblocking MPMC queue."""

    def __init__(
        self,
        path: str,
        ttl: float,
        max_inflight_ops: int = DEFAULT_MAX_INFLIGHT_OPS,
        *,
        sync: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        clock: Clock | None = None,
        directory_mode: int = DEFAULT_DIRECTORY_MODE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        inflight = _validate.positive_int(max_inflight_ops, "max_inflight_ops")
        options: dict[str, Any] = {
            "sync": sync,
            "batch_bytes": batch_bytes,
            "directory_mode": directory_mode,
            "cache_bytes": cache_bytes,
        }
        if clock is not None:
            options["clock"] = clock
        super().__init__(MpmcCore(path, ttl, **options), inflight)

    def __enter__(self) -> MpmcQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, items: Sequence[BytesLike], no_gil: bool = True) -> MpmcResponse:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        return MpmcResponse(self._worker, self._perform(MpmcCore.add_operation(items)), _added)

    def next(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
        no_gil: bool = True,
    ) -> MpmcResponse:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        operation = MpmcCore.next_operation(label, start_position, max_elements)
        return MpmcResponse(self._worker, self._perform(operation), _read)

    def remove_label(self, label: str) -> MpmcResponse:
        return MpmcResponse(
            self._worker,
            self._perform(MpmcCore.remove_label_operation(label)),
            lambda removed: MpmcResponseVariant(removed_label=removed),
        )

    @property
    def labels(self) -> MpmcResponse:
        core = self._core
        return MpmcResponse(
            self._worker,
            self._submit(lambda: core.labels),
            lambda names: MpmcResponseVariant(labels=names),
        )

    @property
    def len(self) -> MpmcResponse:
        core = self._core
        return MpmcResponse(
            self._worker, self._submit(lambda: core.len), lambda n: MpmcResponseVariant(len=n)
        )

    @property
    def disk_size(self) -> MpmcResponse:
        core = self._core
        return MpmcResponse(
            self._worker,
            self._submit(lambda: core.disk_size),
            lambda n: MpmcResponseVariant(size=n),
        )

    @property
    def is_empty(self) -> bool:
        return self._core.is_empty
