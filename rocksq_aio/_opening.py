"""An engine opened on first use, by the queue's worker: how the async face opens off the loop.

Opening a RocksDB directory holds the GIL for tens of milliseconds (more after
a crash), so the async constructors only check their arguments and the path
(``_engines.fifo_opener``); the engine opens in the worker's thread, at
``async with``, ``await queue`` or the first operation awaited.

Rules:

1. The engine opens at most once, under ``_open_lock``. A failed open is the
   error of every operation waiting for it; the next operation tries again
   (the directory may have been locked by a process that was shutting down).
2. Operations submitted before the open wait here, in submission order, and
   go to the engine, in that order, as soon as it is open; after that every
   call goes straight to the engine (the worker is handed the engine itself).
3. Reading a property before the open opens the engine in the calling thread:
   that is the only open that may run on an event loop's thread.
4. Closing a queue that never opened opens nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._dispatch import Operation, Stage
from ._engine import Capabilities, QueueEngine
from ._errors import QueueClosedError

EngineT = TypeVar("EngineT", bound=QueueEngine)


class OpenOnUse(Generic[EngineT]):
    """Stands in for an engine until it opens (a ``QueueEngine`` for the worker)."""

    def __init__(
        self,
        path: str,
        open_engine: Callable[[], EngineT],
        on_open: Callable[[EngineT], None],
    ) -> None:
        self.path = path
        self.engine: EngineT | None = None
        """The open engine, once open."""
        self._open_engine = open_engine
        self._on_open = on_open
        self._open_lock = threading.Lock()
        self._lock = threading.Lock()  # guards _pending and the hand-over to the engine
        self._pending: list[Operation] = []
        self._closed = False

    def opened(self) -> EngineT:
        """The engine, opened here (in the calling thread) if it is not open yet."""
        engine = self.engine
        if engine is not None:
            return engine
        with self._open_lock:
            if self.engine is not None:
                return self.engine
            if self._closed:
                raise QueueClosedError(f"queue at {self.path!r} is closed")
            engine = self._open_engine()
            with self._lock:
                for operation in self._pending:
                    engine.submit(operation)
                self._pending.clear()
                self.engine = engine
        self._on_open(engine)
        return engine

    # ------------------------------------------------------------ QueueEngine

    @property
    def capabilities(self) -> Capabilities:
        return self.opened().capabilities

    @property
    def closed(self) -> bool:
        engine = self.engine
        return self._closed if engine is None else engine.closed

    @property
    def arrivals(self) -> int:
        engine = self.engine
        return 0 if engine is None else engine.arrivals

    @property
    def len(self) -> int:
        return self.opened().len

    @property
    def is_empty(self) -> bool:
        return self.opened().is_empty

    @property
    def disk_size(self) -> int:
        return self.opened().disk_size

    def check_usable(self) -> None:
        engine = self.engine
        if engine is not None:
            engine.check_usable()
        elif self._closed:
            raise QueueClosedError(f"queue at {self.path!r} is closed")

    def submit(self, operation: Operation) -> None:
        engine = self.engine
        if engine is None:
            with self._lock:
                engine = self.engine
                if engine is None:
                    if self._closed:
                        raise QueueClosedError(f"queue at {self.path!r} is closed")
                    self._pending.append(operation)
                    return
        engine.submit(operation)

    def drain(self) -> None:
        """Open the engine if needed (this is the worker's thread), then drain it."""
        engine = self.engine
        if engine is None:
            try:
                engine = self.opened()
            except BaseException as error:
                self._fail_pending(error)
                return
        engine.drain()

    def run(self, operation: Operation) -> Any:
        return self.opened().run(operation)

    def abandon(self, operation: Operation) -> Operation | None:
        if self.engine is None:
            with self._lock:
                if self.engine is None:
                    if operation in self._pending:
                        self._pending.remove(operation)
                        operation.stage = Stage.WITHDRAWN
                    return None
        return self.engine.abandon(operation)

    def close(self) -> None:
        with self._open_lock:  # an open in progress finishes first
            self._closed = True
            engine = self.engine
        if engine is not None:
            engine.close()
        else:
            self._fail_pending(QueueClosedError(f"queue at {self.path!r} is closed"))

    def _fail_pending(self, error: BaseException) -> None:
        with self._lock:
            failed = self._pending
            self._pending = []
        for operation in failed:
            operation.error = error
            operation.stage = Stage.DONE
