"""The queue's worker: how operations of the async and nonblocking faces reach the engine.

Every operation is submitted to the engine's dispatcher and executed by a
``drain()``, which group-commits everything pending. One drain runs at a time
per queue, and at most ``max_inflight_ops`` operations are unfinished; further
callers wait (they do not fail). The two faces enter the same worker two ways:

* async callers (``perform``): the first caller that finds no drain running
  leads one, in ``anyio.to_thread.run_sync`` under the worker's
  ``CapacityLimiter(1)``; the others wait for it, and their operations are in
  its group or in the next. Completions are announced on the loop's thread.
* nonblocking callers (``submit``) queue a task (an operation, or a ``Call``
  answered after everything submitted before it); the worker's own thread
  (one per queue, started on first use, kept a little while when it runs dry)
  runs the tasks in order. ``run_or_wait`` (``Response.get()``) runs them in
  the calling thread instead when that thread has not taken them yet: the
  caller is blocked anyway, and a hand-off to another thread and back costs
  more than the operation. ``wait_async`` lets a coroutine wait for a task
  without taking a thread.

Rules:

1. One thread at a time executes nonblocking tasks ("busy"): the worker's
   thread, or a caller (``run_or_wait``, or ``submit`` blocked at
   ``max_inflight_ops``), which takes every task submitted before its own, in
   order. Operations therefore keep the dispatcher's order (``_dispatch``
   rule 2), and a ``Call`` sees everything submitted before it.
2. A caller that stops waiting abandons its operation (``_dispatch`` rule 3);
   a give-back it gets in return runs through this worker like any other
   operation, never on the event loop's thread.
3. Waiters (``pop_wait``, iterators) are woken by ``arrivals``, the engine's
   count of commits that made elements available, never by polling; and at
   the earliest lease deadline (``seconds_to_lease_expiry``), when their next
   read releases the expired lease. A waiter arms that timer when it starts
   to wait; ``deadline_changes`` moving (a first lease) wakes waiters so that
   they arm it again. An engine without ``local_arrivals`` (elements come
   from other processes) waits at its server instead: the read carries
   ``Operation.wait``.
4. An engine that ``runs_on="asyncio"`` (``_engine.AsyncEngine``) is not
   drained by the worker: async callers await its ``perform`` directly on
   asyncio and uvloop, and through the bridge (``_bridge``) on trio; it
   handles its callers' cancellation itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
from asyncio import _get_running_loop
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

LINGER_SECONDS = 0.05
"""How long the worker's thread waits for more work before it ends."""

_DONE = Stage.DONE
_WITHDRAWN = Stage.WITHDRAWN


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
        if self._waiters:
            self._wake_next()

    def _wake_next(self) -> None:
        if self._waiters and self.free > 0:
            self._waiters.popleft().set()


class Call:
    """A read answered on the worker after everything submitted before it."""

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


def on_event_loop_thread() -> bool:
    """True on a thread that runs an event loop (asyncio, uvloop, trio), where nothing may block."""
    if _get_running_loop() is not None:
        return True
    # Trio (like any library sniffio knows) names itself on its run's thread.
    sniffio = sys.modules.get("sniffio")
    return sniffio is not None and sniffio.thread_local.name is not None


_IDLE, _ACTIVE, _LINGERING = range(3)
"""The worker's thread: not running; running (or about to); waiting for work."""


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
        # The thread side, under _lock.
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._sleepers = 0
        """Threads waiting on ``_finished``: the others need no notification."""
        self._tasks: deque[Task] = deque()
        """Nonblocking callers' tasks, not taken yet."""
        self._thread_inflight = 0
        self._busy = False
        """A thread is executing tasks it took (rule 1)."""
        self._state = _IDLE
        self._closing = False
        self._wake = threading.Lock()
        """Released to wake the lingering thread; held otherwise."""
        self._wake.acquire()
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
        if slots.free > 0:
            slots.free -= 1  # acquire() spelled out: it does not wait
        else:
            await slots.acquire()
        engine = self.engine
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
            await self._complete_async(give_back)
            self.announce_arrivals()

    async def _complete_async(self, operation: Operation) -> None:
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
            # run_sync's own first checkpoint lets every task that is ready
            # submit too, so the worker commits them as one group.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.engine.drain, limiter=self._limiter_now())
        finally:
            self._draining = None
            finished.set()

    def _limiter_now(self) -> anyio.CapacityLimiter:
        # limiter() without anyio's current_token() on every drain: the loop is
        # the running asyncio loop, or (on trio) whatever token it was.
        loop = _get_running_loop()
        if loop is not None and loop is self._loop and self._limiter is not None:
            return self._limiter
        return self.limiter()

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
        """Queue ``task`` after everything submitted before it.

        Blocks the caller, as RocksQ does, while ``max_inflight_ops`` are
        unfinished; off an event loop's thread the blocked caller runs the
        queued tasks itself when no thread is executing any (rule 1).
        """
        lock = self._lock
        lock.acquire()
        try:
            while self._thread_inflight >= self.max_inflight:
                if self._busy or not self._tasks or on_event_loop_thread():
                    self._sleep_locked()
                    continue
                taken = list(self._tasks)
                self._tasks.clear()
                self._busy = True
                lock.release()
                try:
                    self._run_taken(taken)
                finally:
                    lock.acquire()
            if self._closing:
                raise QueueClosedError(f"queue at {self.engine.path!r} is closed")
            if type(task) is Operation:
                self.engine.check_usable()  # reported now, as RocksQ does
            self._thread_inflight += 1
            self._tasks.append(task)
            start = self._state != _ACTIVE and self._kick_locked()
        finally:
            lock.release()
        if start:
            try:
                self._start_thread()
            except QueueClosedError:
                self._withdraw(task)
                raise

    @property
    def idle(self) -> bool:
        """No task submitted is unfinished, and the worker takes more.

        Read without the lock: a task another thread submits meanwhile has no
        order with respect to the caller's.
        """
        return not self._thread_inflight and not self._closing

    def run_or_wait(self, task: Task) -> None:
        """Block the calling thread until ``task`` is done, running it here if it can.

        When no thread is executing and ``task`` is still queued, the caller
        takes it and every task queued before it, and runs them in order.
        """
        lock = self._lock
        lock.acquire()
        try:
            while True:
                if task.stage is _DONE:
                    return
                if not self._busy:
                    queued = self._tasks
                    if queued and queued[0] is task:
                        taken = [queued.popleft()]  # the common case: nothing before it
                        break
                    if task in queued:
                        taken = []
                        while not taken or taken[-1] is not task:
                            taken.append(queued.popleft())
                        break
                self._sleep_locked()
            self._busy = True
        finally:
            lock.release()
        self._run_taken(taken)

    def _run_taken(self, taken: list[Task]) -> None:
        """Execute the tasks this thread took (it is the busy one), then say so."""
        try:
            self._execute_tasks(taken)
        finally:
            self._finish(taken)

    def _withdraw(self, task: Task) -> None:
        with self._lock:
            self._tasks.remove(task)  # an operation reaches the engine only when taken
            self._thread_inflight -= 1
            if self._sleepers:
                self._finished.notify_all()

    def _sleep_locked(self) -> None:
        """Wait, the lock released meanwhile, until some tasks finish."""
        self._sleepers += 1
        try:
            self._finished.wait()
        finally:
            self._sleepers -= 1

    # ------------------------------------------------------------ the worker's thread

    def _kick_locked(self) -> bool:
        """Make sure the worker's thread will look at the queues; True if it must be started."""
        state = self._state
        if state == _ACTIVE:
            return False
        self._state = _ACTIVE
        if state == _LINGERING:
            self._wake.release()
            return False
        return True

    def _start_thread(self) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="rocksq_aio-worker"
                )
            executor = self._executor
        try:
            executor.submit(self._run)
        except RuntimeError:
            with self._lock:
                self._state = _IDLE
            raise QueueClosedError(f"queue at {self.engine.path!r} is closed") from None

    def _run(self) -> None:
        lock = self._lock
        lock.acquire()
        try:
            while True:
                while self._busy:
                    self._sleep_locked()
                if not self._tasks:
                    if not self._linger_locked():
                        return
                    continue
                tasks = list(self._tasks)
                self._tasks.clear()
                self._busy = True
                lock.release()
                try:
                    self._run_taken(tasks)
                finally:
                    lock.acquire()
        finally:
            lock.release()

    def _linger_locked(self) -> bool:
        """Wait (lock released) for a kick; False when the thread should end instead."""
        if self._closing:
            self._state = _IDLE
            return False
        self._state = _LINGERING
        self._lock.release()
        try:
            woken = self._wake.acquire(timeout=LINGER_SECONDS)
        finally:
            self._lock.acquire()
        if self._state == _LINGERING:  # no kick came: the wake lock is still held
            self._state = _IDLE
            return False
        if not woken:
            # Kicked just after the wait timed out: take back the wake lock,
            # which the kick released.
            self._wake.acquire()
        return True

    def _execute_tasks(self, tasks: list[Task]) -> None:
        """Execute nonblocking tasks in order, on this thread.

        Each run of operations between two calls reaches the engine together,
        so that they share groups; a call is answered after the operations
        before it and before those after it, as RocksQ's worker answers it.
        """
        engine = self.engine
        position, count = 0, len(tasks)
        while position < count:
            task = tasks[position]
            if type(task) is Call:
                task.run()
                position += 1
                continue
            end = position
            while end < count:
                operation = tasks[end]
                if type(operation) is not Operation:
                    break
                end += 1
                try:
                    engine.submit(operation)
                except BaseException as error:  # closed meanwhile, say
                    operation.error = error
                    operation.stage = _DONE
            for operation in tasks[position:end]:
                self._complete(operation)
            position = end

    def _complete(self, task: Task) -> None:
        """Execute one task (or wait for its operation's group) on this thread."""
        try:
            if type(task) is Call:
                task.run()
            else:
                # An earlier drain may have taken it already, or left it
                # pending when its group reached the byte limit.
                while task.stage is not _DONE and task.stage is not _WITHDRAWN:
                    self.engine.drain()
        except BaseException as error:
            # drain() reports queue errors on the operations; anything else is
            # a bug, reported here rather than hanging the caller, with the
            # operation withdrawn so that it never runs later.
            if type(task) is Operation:
                with contextlib.suppress(BaseException):
                    self.engine.abandon(task)
            task.error = error
            task.stage = _DONE

    def _finish(self, tasks: list[Task]) -> None:
        """``tasks`` (taken by this thread) are done: tell whoever waits."""
        with self._lock:
            self._busy = False
            self._thread_inflight -= len(tasks)
            if self._sleepers:
                self._finished.notify_all()
            # Only awaited Responses register a watcher: most runs have none.
            watchers = self._watchers and [self._watchers.pop(id(task), None) for task in tasks]
        for callbacks in watchers or ():
            for callback in callbacks or ():
                callback()

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
        """Refuse further tasks; with ``wait``, return once every task taken is done."""
        with self._lock:
            self._closing = True
            if self._state == _LINGERING:
                self._state = _ACTIVE
                self._wake.release()
            executor = self._executor
            if executor is None:
                # Never started: later submissions are refused like after a shutdown.
                executor = self._executor = ThreadPoolExecutor(max_workers=1)
        executor.shutdown(wait=wait)
        if wait:
            with self._lock:
                while self._busy:
                    self._sleep_locked()
