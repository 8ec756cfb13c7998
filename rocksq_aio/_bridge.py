"""One thread running an asyncio loop, for natively-async engines used off asyncio.

An engine whose I/O is asyncio coroutines (``Capabilities.runs_on ==
"asyncio"``) is awaited directly by asyncio (and uvloop) callers. Everyone
else (trio tasks, blocking and nonblocking callers) hands its coroutine to
this bridge and is told of the result by callback, not by a thread per call.

Rules:

1. One bridge per process, a daemon thread started on first use; only engine
   coroutines run on its loop, which nothing blocks.
2. A burst of submissions from other threads costs one wake-up of the bridge
   loop; a burst of completions for one trio run or asyncio loop costs one
   wake-up of it (``run_sync_soon``/``call_soon_threadsafe``).
3. A caller that stops waiting cancels its coroutine; if the coroutine
   finished anyway (its effect happened), the caller gets its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel

from ._errors import QueueError

Starter = Callable[[], Coroutine[Any, Any, Any]]


class Job:
    """A coroutine submitted to the bridge; ``future`` holds its outcome."""

    __slots__ = ("future", "start", "task")

    def __init__(self, start: Starter) -> None:
        self.start = start
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.task: asyncio.Task[Any] | None = None


class Bridge:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._incoming: list[Job] = []
        self._cancels: list[Job] = []
        self._woken = False
        # Completions waiting to be handed to each caller's loop, by its
        # scheduling function (one call per burst, rule 2).
        self._outgoing: dict[Callable[..., Any], list[Callable[[], None]]] = {}
        self._outgoing_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rocksq_aio-bridge", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def on_bridge(self) -> bool:
        return threading.current_thread() is self._thread

    # ------------------------------------------------------------ submitting

    def submit(self, start: Starter) -> Job:
        job = Job(start)
        with self._lock:
            self._incoming.append(job)
            if self._woken:
                return job
            self._woken = True
        self.loop.call_soon_threadsafe(self._take)
        return job

    def cancel(self, job: Job) -> None:
        with self._lock:
            self._cancels.append(job)
            if self._woken:
                return
            self._woken = True
        self.loop.call_soon_threadsafe(self._take)

    def _take(self) -> None:
        with self._lock:
            jobs, self._incoming = self._incoming, []
            cancels, self._cancels = self._cancels, []
            self._woken = False
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue
            task = job.task = self.loop.create_task(job.start())
            task.add_done_callback(functools.partial(_copy_outcome, future=job.future))
        for job in cancels:
            if job.task is not None:
                job.task.cancel()

    # ------------------------------------------------------------ waiting

    def run(self, start: Starter) -> Any:
        """Run a coroutine on the bridge and block the calling thread for its result."""
        if self.on_bridge:
            raise QueueError("a blocking queue call was made on the bridge's own thread")
        return self.submit(start).future.result()

    async def wait(self, start: Starter) -> Any:
        """Run a coroutine on the bridge, awaited from another event loop (trio, asyncio)."""
        job = self.submit(start)
        future = job.future
        if not future.done():
            done = anyio.Event()
            native: Any = anyio.lowlevel.current_token().native_token
            schedule = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
            future.add_done_callback(lambda _: self._deliver(schedule, done.set))
            try:
                await done.wait()
            except BaseException:
                self.cancel(job)
                with anyio.CancelScope(shield=True):
                    await done.wait()
                if future.cancelled() or future.exception() is not None:
                    raise
                return future.result()  # it happened after all (rule 3)
        return future.result()

    def _deliver(self, schedule: Callable[..., Any], callback: Callable[[], None]) -> None:
        with self._outgoing_lock:
            waiting = self._outgoing.get(schedule)
            if waiting is not None:
                waiting.append(callback)
                return
            self._outgoing[schedule] = [callback]
        if self.on_bridge:
            # Completions made in this turn of the bridge loop go out together.
            self.loop.call_soon(self._hand_over, schedule)
        else:
            self._hand_over(schedule)

    def _hand_over(self, schedule: Callable[..., Any]) -> None:
        with self._outgoing_lock:
            callbacks = self._outgoing.pop(schedule, [])

        def run_all() -> None:
            for callback in callbacks:
                callback()

        with contextlib.suppress(RuntimeError):  # that loop has ended: nobody waits
            schedule(run_all)


def _copy_outcome(task: asyncio.Task[Any], future: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        # The future is running already, so it can no longer be cancel()led.
        future.set_exception(concurrent.futures.CancelledError())
        return
    error = task.exception()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())


_bridge: Bridge | None = None
_bridge_lock = threading.Lock()


def bridge() -> Bridge:
    """The process's bridge, started on first use."""
    global _bridge
    if _bridge is None:
        with _bridge_lock:
            if _bridge is None:
                _bridge = Bridge()
    return _bridge
