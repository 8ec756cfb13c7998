"""The queue's worker: how operations of the async and nonblocking faces reach the engine.

Every operation is submitted to the engine's dispatcher and executed by a
``drain()``, which group-commits everything pending. One drain runs at a time
per queue, and at most ``max_inflight_ops`` operations are unfinished; further
callers wait (they do not fail). The two faces enter the same worker two ways:

* async callers (``perform``): the first caller that finds no drain running
  leads one, in ``anyio.to_thread.run_sync`` under the worker's
  ``CapacityLimiter(1)``; the others wait for it, and their operations are in
  its group or in the next. Completions are announced on the loop's thread.
* nonblocking callers (``submit``): the worker's own thread (one per queue)
  drains until nothing is pending; a caller pays a thread hand-off only when
  that thread was idle. ``wait`` blocks a thread until a task is done;
  ``wait_async`` lets a coroutine wait for it without taking a thread.

Rules:

1. A caller that stops waiting abandons its operation (``_dispatch`` rule 3);
   a give-back it gets in return runs through this worker like any other
   operation, never on the event loop's thread.
2. Waiters (``pop_wait``, iterators) are woken by ``arrivals``, the engine's
   count of commits that made elements available, never by polling; and at
   the earliest lease deadline (``seconds_to_lease_expiry``), when their next
   read releases the expired lease. A waiter arms that timer when it starts
   to wait; ``deadline_changes`` moving (a first lease) wakes waiters so that
   they arm it again. An engine without ``local_arrivals`` (elements come
   from other processes) waits at its server instead: the read carries
   ``Operation.wait``.
3. An engine that ``runs_on="asyncio"`` (``_engine.AsyncEngine``) is not
   drained by the worker: async callers await its ``perform`` directly on
   asyncio and uvloop, and through the bridge (``_bridge``) on trio; it
   handles its callers' cancellation itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.lowlevel

from . import _bridge
from ._dispatch import Operation, Stage
from ._engine import QueueEngine
from ._errors import QueueClosedError


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False  # trio
    return True


async def wait_until(arrival: anyio.Event, deadline: float | None) -> bool:
    """Wait for ``arrival``; False if the deadline passed first."""
    if deadline is None:
        await arrival.wait()
        return True
    with anyio.move_on_at(deadline):
        await arrival.wait()
        return True
    return False


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


class Call:
    """A read answered on the worker's thread after everything submitted before it."""

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


Task = Operation | Call


def _is_done(task: Task) -> bool:
    return task.stage is Stage.DONE


class Worker:
    """Executes one queue's operations; see the module's docstring."""

    def __init__(self, engine: QueueEngine, max_inflight: int) -> None:
        self.engine = engine
        self.max_inflight = max_inflight
        capabilities = engine.capabilities
        self._native: Any = engine if capabilities.runs_on == "asyncio" else None
        self._local_arrivals = capabilities.local_arrivals
        # The async side. anyio primitives need a running event loop and
        # belong to it: made on first use, remade under another loop.
        self._loop: object = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._slots = _InflightSlots(max_inflight)
        self._draining: anyio.Event | None = None
        self._arrival: anyio.Event | None = None
        self._seen_arrivals = 0
        self._armed_deadlines = 0
        # The thread side.
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._tasks: deque[Task] = deque()
        self._thread_inflight = 0
        self._running = False
        self._executor: ThreadPoolExecutor | None = None
        self._watchers: dict[int, list[Callable[[], None]]] = {}

    @property
    def inflight(self) -> int:
        """Operations submitted and not finished yet (reads parked at a server excluded)."""
        parked = 0 if self._native is None else self._native.parked
        return self._slots.total - self._slots.free + self._thread_inflight - parked

    # ------------------------------------------------------------ async callers

    def follow_event_loop(self) -> None:
        # A queue used under one loop (asyncio.run, trio.run, ...) and then
        # another makes new primitives.
        loop = anyio.lowlevel.current_token().native_token
        if loop is not self._loop:
            self._loop = loop
            self._limiter = None
            self._arrival = None
            self._draining = None

    def limiter(self) -> anyio.CapacityLimiter:
        self.follow_event_loop()
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return self._limiter

    async def perform(self, operation: Operation) -> Any:
        """Execute ``operation`` and return its result; a cancelled caller gives back."""
        if self._native is not None:
            await self._slots.acquire()
            try:
                return await self._perform_native(operation)
            finally:
                self._slots.release()
        slots = self._slots
        engine = self.engine
        await slots.acquire()
        try:
            engine.submit(operation)
            try:
                # _complete() spelled out: a coroutine frame per operation is
                # measurable with 256 tasks awaiting one item each.
                while operation.stage is not Stage.DONE:
                    if self._draining is None:
                        await self._lead_drain()
                    else:
                        await self._draining.wait()
            except BaseException:
                give_back = engine.abandon(operation)
                if give_back is not None:
                    with anyio.CancelScope(shield=True):
                        await self.give_back(give_back)
                raise
            finally:
                self.announce_arrivals()
        finally:
            slots.release()
        return operation.outcome()

    async def _perform_native(self, operation: Operation) -> Any:
        engine = self._native
        if _on_asyncio():
            return await engine.perform(operation)
        return await _bridge.bridge().wait(lambda: engine.perform(operation))

    async def read_waiting(
        self,
        build: Callable[[], Operation],
        deadline: float | None,
        found: Callable[[Any], bool],
    ) -> tuple[Operation, Any]:
        """Read (``build()``) until ``found(result)`` or the deadline; the last read and result.

        The engine is always looked at once, even with a deadline passed.
        """
        if self._local_arrivals:
            while True:
                arrival = self.arrival_event()
                read = build()
                result = await self.perform(read)
                if found(result) or not await self.wait_for_arrival(arrival, deadline):
                    return read, result
        while True:
            read = build()
            read.wait = math.inf if deadline is None else max(0.0, deadline - anyio.current_time())
            result = await self.perform(read)
            if found(result) or (deadline is not None and anyio.current_time() >= deadline):
                return read, result

    async def give_back(self, give_back: Operation) -> None:
        """Run a give-back (shielded by the caller); it needs no in-flight slot."""
        if self._native is not None:
            with contextlib.suppress(QueueClosedError):
                await self._perform_native(give_back)
            return
        with contextlib.suppress(QueueClosedError):
            self.engine.submit(give_back)
            await self._complete(give_back)
            self.announce_arrivals()

    async def _complete(self, operation: Operation) -> None:
        while operation.stage is not Stage.DONE:
            if self._draining is None:
                await self._lead_drain()
            else:
                # A drain is running in the worker: it or the next one (led
                # by one of us) will take this operation too.
                await self._draining.wait()

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
                await anyio.to_thread.run_sync(self.engine.drain, limiter=self.limiter())
        finally:
            self._draining = None
            finished.set()

    def announce_arrivals(self) -> None:
        # Wakes waiters on the event loop thread once the engine has
        # committed new elements (pushes, adds, and items given back), or
        # made a lease that ends before the timers the waiters armed.
        engine = self.engine
        arrivals = engine.arrivals
        if arrivals != self._seen_arrivals:
            self._seen_arrivals = arrivals
            self.wake_waiters()
        elif self._arrival is not None and engine.deadline_changes != self._armed_deadlines:
            self.wake_waiters()

    async def wait_for_arrival(self, arrival: anyio.Event, deadline: float | None) -> bool:
        """Wait for ``arrival`` or the earliest lease deadline; False if ``deadline`` came first.

        True means "look again": something arrived, or a lease expired and
        the next read releases it.
        """
        engine = self.engine
        self._armed_deadlines = engine.deadline_changes  # before reading the deadline
        seconds = engine.seconds_to_lease_expiry()
        wake_at = deadline
        if seconds is not None:
            lease_at = anyio.current_time() + seconds
            if wake_at is None or lease_at < wake_at:
                wake_at = lease_at
        if wake_at is None:
            await arrival.wait()
            return True
        with anyio.move_on_at(wake_at):
            await arrival.wait()
            return True
        return wake_at != deadline

    def arrival_event(self) -> anyio.Event:
        """An event set at the next arrival (or close); take it before looking."""
        self.follow_event_loop()
        if self._arrival is None:
            self._arrival = anyio.Event()
        return self._arrival

    def wake_waiters(self) -> None:
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    def stop_waiting(self) -> None:
        """The queue is closing: reads waiting at a server end (the embedded engines'
        waiters are woken by the close itself)."""
        if self._native is not None:
            self._native.stop_waiting()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            engine = self._native
            if engine is None:
                await anyio.to_thread.run_sync(self.engine.close, limiter=self.limiter())
            elif _on_asyncio():
                await engine.aclose()
            else:
                await _bridge.bridge().wait(engine.aclose)
        self.wake_waiters()

    # ------------------------------------------------------------ nonblocking callers

    def submit(self, task: Task) -> None:
        """Queue ``task`` after everything submitted before it (an operation goes to the engine).

        Blocks the caller, as RocksQ does, while ``max_inflight_ops`` are unfinished.
        """
        with self._lock:
            while self._thread_inflight >= self.max_inflight:
                self._finished.wait()
            if type(task) is Operation:
                self.engine.submit(task)
            self._thread_inflight += 1
            self._tasks.append(task)
            if self._running:
                return
            self._running = True
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="rocksq_aio-worker"
                )
            executor = self._executor
        try:
            executor.submit(self._run)
        except RuntimeError:
            self._withdraw(task)
            raise QueueClosedError(f"queue at {self.engine.path!r} is closed") from None

    def _withdraw(self, task: Task) -> None:
        with self._lock:
            self._running = False
            self._tasks.remove(task)
            self._thread_inflight -= 1
            if type(task) is Operation:
                self.engine.abandon(task)
            self._finished.notify_all()

    def _run(self) -> None:
        engine = self.engine
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
                    if isinstance(task, Call):
                        task.run()
                    else:
                        # An earlier drain may have taken it already, or left
                        # it pending when its group reached the byte limit.
                        while task.stage is not Stage.DONE:
                            engine.drain()
                except BaseException as error:
                    # drain() reports queue errors on the operations; anything
                    # else is a bug, reported here rather than hanging get(),
                    # with the operation withdrawn so that it never runs later.
                    if isinstance(task, Operation):
                        with contextlib.suppress(BaseException):
                            engine.abandon(task)
                    task.error = error
                    task.stage = Stage.DONE
            with lock:
                self._thread_inflight -= len(tasks)
                self._finished.notify_all()
                # Only awaited Responses register a watcher: most runs have none.
                watchers = self._watchers and [
                    self._watchers.pop(id(task), None) for task in tasks
                ]
            for callbacks in watchers or ():
                for callback in callbacks or ():
                    callback()

    def wait(self, task: Task) -> None:
        """Block the calling thread until ``task`` is done."""
        with self._lock:
            while task.stage is not Stage.DONE:
                self._finished.wait()

    async def wait_async(self, task: Task) -> None:
        """Wait for ``task`` on an event loop, woken by the worker's thread (no thread taken)."""
        if _is_done(task):
            return
        done = anyio.Event()
        native: Any = anyio.lowlevel.current_token().native_token
        # asyncio (uvloop too) hands a loop, trio a TrioToken.
        schedule = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
        with self._lock:
            if _is_done(task):  # finished while we looked
                return
            self._watchers.setdefault(id(task), []).append(lambda: schedule(done.set))
        await done.wait()

    def shutdown(self, wait: bool) -> None:
        executor = self._executor
        if executor is None:
            # Never started: later submissions are refused like after a shutdown.
            executor = self._executor = ThreadPoolExecutor(max_workers=1)
        executor.shutdown(wait=wait)
