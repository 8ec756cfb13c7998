"""Nonblocking face: a drop-in replacement for ``rocksq.nonblocking``.

Methods return a :class:`Response` at once; a dedicated worker thread per
queue executes the operations, group-committing whatever is pending. Unlike
RocksQ's, a Response reports the operation's error (``QueueFullError``
included), can be read more than once, and is awaitable:
``variant = await q.pop(5)`` works in async code without blocking the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeVar

from . import _dispatch, _engines, _validate
from ._dispatch import Operation, Stage
from ._engine import Capabilities, FifoEngine, MpmcEngine
from ._errors import QueueError
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
from ._types import BytesLike, ClosesOnExit, StartPosition
from ._worker import Call, Task, Worker, on_event_loop_thread

__all__ = [
    "MpmcQueue",
    "MpmcResponse",
    "MpmcResponseVariant",
    "PersistentQueueWithCapacity",
    "Response",
    "ResponseVariant",
    "StartPosition",
]


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


class _Response(Generic[VariantT]):
    __slots__ = ("_make_variant", "_task", "_variant", "_worker")

    def __init__(
        self,
        worker: Worker,
        task: Task,
        make_variant: Callable[[Any], VariantT],
        variant: VariantT | None = None,
    ) -> None:
        self._worker = worker
        self._task = task
        self._make_variant: Callable[[Any], VariantT] = make_variant
        self._variant: VariantT | None = variant

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
        if on_event_loop_thread():
            raise QueueError(
                "Response.get() would block the event loop; use `await response` in async code"
            )
        if self._task.stage is not Stage.DONE:
            # Runs the operation here if the worker's thread has not taken it.
            self._worker.run_or_wait(self._task)
        return self._result()

    def __await__(self) -> Generator[Any, None, VariantT]:
        return self._wait().__await__()

    async def _wait(self) -> VariantT:
        await self._worker.wait_async(self._task)
        return self._result()


class Response(_Response[ResponseVariant]):
    """The future-like result of a FIFO operation."""

    __slots__ = ()


class MpmcResponse(_Response[MpmcResponseVariant]):
    """The future-like result of an MPMC operation."""

    __slots__ = ()


EngineT = TypeVar("EngineT", FifoEngine, MpmcEngine)
ResponseT = TypeVar("ResponseT", Response, MpmcResponse)

_ANSWERED = Call(lambda: None)
"""The task of a Response answered when it was made."""
_ANSWERED.run()


class _NonblockingQueue(ClosesOnExit, Generic[EngineT]):
    def __init__(self, engine: EngineT, max_inflight_ops: int) -> None:
        self._engine: EngineT = engine
        self._worker = Worker(engine, max_inflight_ops)

    def _perform(self, operation: Operation) -> Operation:
        self._worker.submit(operation)
        return operation

    def _submit(self, function: Callable[[], Any]) -> Call:
        """Answer ``function()`` on the worker after everything submitted before it."""
        call = Call(function)
        self._worker.submit(call)
        return call

    def _answer(
        self,
        response_type: type[ResponseT],
        function: Callable[[], Any],
        make_variant: Callable[[Any], Any],
    ) -> ResponseT:
        """The Response of an answer read from memory: ready at once when nothing is in flight.

        ``function`` then runs in the caller's thread, which may be an event loop's.
        """
        worker = self._worker
        if worker.idle:
            return response_type(worker, _ANSWERED, make_variant, make_variant(function()))
        return response_type(worker, self._submit(function), make_variant)

    @property
    def capabilities(self) -> Capabilities:
        """What the queue's engine can do (durable, exact properties, limits)."""
        return self._engine.capabilities

    @property
    def inflight_ops(self) -> int:
        """Operations submitted and not finished yet."""
        return self._worker.inflight

    @property
    def is_empty(self) -> bool:
        return self._engine.is_empty

    def _read_len(self) -> int:
        return self._engine.len

    def _read_disk_size(self) -> int:
        return self._engine.disk_size

    def close(self) -> None:
        """Finish every submitted operation, then release the queue."""
        self._worker.shutdown(wait=True)
        self._engine.close()

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=False)


def _pushed(_result: None) -> ResponseVariant:
    return ResponseVariant()


def _length(length: int) -> ResponseVariant:
    return ResponseVariant(len=length)


def _size(size: int) -> ResponseVariant:
    return ResponseVariant(size=size)


def _mpmc_length(length: int) -> MpmcResponseVariant:
    return MpmcResponseVariant(len=length)


def _mpmc_size(size: int) -> MpmcResponseVariant:
    return MpmcResponseVariant(size=size)


def _labels(names: list[str]) -> MpmcResponseVariant:
    return MpmcResponseVariant(labels=names)


class PersistentQueueWithCapacity(_NonblockingQueue[FifoEngine]):
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
        clock: Clock | None = None,
        lease_timeout: float | None = None,
        max_deliveries: int | None = None,
    ) -> None:
        options = FifoOptions.from_arguments(locals())
        inflight = options.inflight_limit()
        super().__init__(_engines.open_fifo(path, options), inflight)

    def __enter__(self) -> PersistentQueueWithCapacity:
        return self

    def push(self, items: Sequence[BytesLike], no_gil: bool = True) -> Response:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        return Response(self._worker, self._perform(_dispatch.push_operation(items)), _pushed)

    def pop(self, max_elements: int = 1, no_gil: bool = True) -> Response:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        return Response(
            self._worker, self._perform(_dispatch.pop_operation(max_elements)), ResponseVariant
        )

    # As in RocksQ, these are answered after every operation submitted before
    # them; those read from memory are ready at once when none is in flight.
    @property
    def len(self) -> Response:
        return self._answer(Response, self._read_len, _length)

    @property
    def payload_size(self) -> Response:
        engine = self._engine
        if engine.payload_size_is_known:
            return self._answer(Response, lambda: engine.payload_size, _size)
        return Response(self._worker, self._submit(lambda: engine.payload_size), _size)

    @property
    def disk_size(self) -> Response:
        return Response(self._worker, self._submit(self._read_disk_size), _size)


def _added(_result: None) -> MpmcResponseVariant:
    return MpmcResponseVariant()


def _read(result: tuple[list[bytes], bool]) -> MpmcResponseVariant:
    return MpmcResponseVariant(data=result)


def _removed(removed: bool) -> MpmcResponseVariant:
    return MpmcResponseVariant(removed_label=removed)


class MpmcQueue(_NonblockingQueue[MpmcEngine]):
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
        lease_timeout: float | None = None,
        max_deliveries: int | None = None,
    ) -> None:
        options = MpmcOptions.from_arguments(locals())
        inflight = options.inflight_limit()
        super().__init__(_engines.open_mpmc(path, options), inflight)

    def __enter__(self) -> MpmcQueue:
        return self

    def add(self, items: Sequence[BytesLike], no_gil: bool = True) -> MpmcResponse:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        return MpmcResponse(self._worker, self._perform(_dispatch.add_operation(items)), _added)

    def next(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
        no_gil: bool = True,
    ) -> MpmcResponse:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        operation = _dispatch.next_operation(label, start_position, max_elements)
        return MpmcResponse(self._worker, self._perform(operation), _read)

    def remove_label(self, label: str, no_gil: bool = True) -> MpmcResponse:
        if no_gil is not True:
            _validate.flag(no_gil, "no_gil")
        operation = _dispatch.remove_label_operation(label)
        return MpmcResponse(self._worker, self._perform(operation), _removed)

    @property
    def labels(self) -> MpmcResponse:
        engine = self._engine
        return self._answer(MpmcResponse, lambda: engine.labels, _labels)

    @property
    def len(self) -> MpmcResponse:
        return self._answer(MpmcResponse, self._read_len, _mpmc_length)

    @property
    def disk_size(self) -> MpmcResponse:
        return MpmcResponse(self._worker, self._submit(self._read_disk_size), _mpmc_size)
