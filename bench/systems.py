"""What each system is and what each workload does with it (runs inside the child process).

Opening every system (ours, ours-sync, ours-nonblocking, rocksq, persist-queue,
persist-queue-async; bare-hop is a thread hop with no queue) and the timed workload bodies.
A ``baseline-*`` system runs the same code as its ``ours*`` twin: only the ``rocksq_aio``
it imports differs (``measure.measure`` passes the base system's name).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workloads import (
    BARE_HOP,
    BATCH,
    CONSUMERS,
    EMPTY_POLL_BACKOFF,
    KIB,
    OURS,
    OURS_NONBLOCKING,
    OURS_SYNC,
    POP_BATCH,
    PQ,
    PQ_ASYNC,
    ROCKSQ,
    TTL,
)

if TYPE_CHECKING:
    from measure import LagProbe


class BenchError(Exception):
    """A workload saw wrong data or could not run."""


class Unavailable(BenchError):
    """The system can't run here (a package is missing); no use trying again."""


def make_messages(count: int, size: int) -> list[bytes]:
    """Distinct, incompressible messages; small ones start with their index (8 bytes)."""
    if size >= 64 * KIB:
        pool = [os.urandom(size) for _ in range(4)]
        return [pool[i % len(pool)] for i in range(count)]
    if size < 8:
        raise BenchError("messages need at least 8 bytes")
    body = size - 8
    noise = os.urandom(count * body)
    return [i.to_bytes(8, "big") + noise[i * body : (i + 1) * body] for i in range(count)]


def wrong(got: list[bytes], expected: bytes) -> bool:
    """True unless ``got`` is exactly one item that matches ``expected`` (length, first 16 B)."""
    return len(got) != 1 or len(got[0]) != len(expected) or got[0][:16] != expected[:16]


WARM_UP = b"\xffwarm-up"  # pushed and popped once before timing (not an indexed message)


def warm_up_check(got: list[bytes], started: float) -> float:
    """Checks a warm-up pop; returns the warm-up's milliseconds."""
    if got != [WARM_UP]:
        raise BenchError("the warm-up pop returned a wrong item")
    return (time.perf_counter() - started) * 1000


def import_optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise Unavailable(f"cannot import {name}: {error}") from error


class Fifo:
    """A blocking FIFO queue: the system's own bound methods, and how to release it."""

    def __init__(
        self,
        queue: Any,
        push: Callable[[list[bytes]], object],
        pop: Callable[[int], list[bytes]],
        close: Callable[[Any], None],
    ) -> None:
        self.queue: Any = queue
        self.push = push
        self.pop = pop
        self._close = close

    def close(self) -> None:
        queue, self.queue = self.queue, None
        del self.push, self.pop
        self._close(queue)
        del queue
        gc.collect()  # RocksQ has no close(): its queue is released when collected


def _drop(_queue: Any) -> None:
    """RocksQ: dropping the last reference closes the database."""


def open_fifo(system: str, path: str) -> Fifo:
    if system in (OURS, OURS_SYNC):
        from rocksq_aio.blocking import PersistentQueueWithCapacity

        ours = PersistentQueueWithCapacity(path, sync=system == OURS_SYNC)
        return Fifo(ours, ours.push, ours.pop, lambda q: q.close())
    if system == ROCKSQ:
        blocking = import_optional("rocksq.blocking")
        theirs = blocking.PersistentQueueWithCapacity(path)
        return Fifo(theirs, theirs.push, theirs.pop, _drop)
    if system == PQ:
        persistqueue = import_optional("persistqueue")
        sqlite = persistqueue.SQLiteQueue(path, auto_commit=True, multithreading=False)
        put = sqlite.put
        get = sqlite.get

        def push(items: list[bytes]) -> None:
            for item in items:
                put(item)

        def pop(max_elements: int) -> list[bytes]:
            return [get(block=False) for _ in range(max_elements)]

        return Fifo(sqlite, push, pop, lambda q: q.close())
    raise BenchError(f"{system} has no blocking FIFO queue")


def write_read_rates(count: int, start: float, written: float, end: float) -> dict[str, Any]:
    """The result of a run that wrote ``count`` items from ``start`` to ``written``,
    then read them all back by ``end`` (perf_counter times)."""
    return {
        "seconds": end - start,
        "write_rate": count / (written - start),
        "read_rate": count / (end - written),
    }


def fifo_write_read(queue: Fifo, messages: list[bytes]) -> dict[str, Any]:
    push, pop = queue.push, queue.pop
    start = time.perf_counter()
    for message in messages:
        push([message])
    written = time.perf_counter()
    for expected in messages:
        if wrong(pop(1), expected):
            raise BenchError("popped a wrong item")
    end = time.perf_counter()
    return write_read_rates(len(messages), start, written, end)


def fifo_interleaved(queue: Fifo, messages: list[bytes]) -> dict[str, Any]:
    push, pop = queue.push, queue.pop
    start = time.perf_counter()
    for message in messages:
        push([message])
        if wrong(pop(1), message):
            raise BenchError("popped a wrong item")
    return {"seconds": time.perf_counter() - start}


def fifo_batched(queue: Fifo, messages: list[bytes]) -> dict[str, Any]:
    push, pop = queue.push, queue.pop
    batches = [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]
    start = time.perf_counter()
    for batch in batches:
        push(batch)
    written = time.perf_counter()
    for batch in batches:
        if pop(len(batch)) != batch:
            raise BenchError("popped a wrong batch")
    end = time.perf_counter()
    return write_read_rates(len(messages), start, written, end)


def mpmc_blocking(system: str, path: str, messages: list[bytes], labels: int) -> dict[str, Any]:
    queue: Any
    if system in (OURS, OURS_SYNC):
        from rocksq_aio import StartPosition
        from rocksq_aio.blocking import MpmcQueue

        queue = MpmcQueue(path, ttl=TTL, sync=system == OURS_SYNC)
        oldest: Any = StartPosition.Oldest
    elif system == ROCKSQ:
        rocksq = import_optional("rocksq")
        queue = import_optional("rocksq.blocking").MpmcQueue(path, ttl=TTL)
        oldest = rocksq.StartPosition.Oldest
    else:
        raise BenchError(f"{system} has no MPMC queue")
    try:
        add, read = queue.add, queue.next
        names = [f"label-{i}" for i in range(labels)]
        start = time.perf_counter()
        for message in messages:
            add([message])
        added = time.perf_counter()
        for name in names:
            for expected in messages:
                items, _expired = read(name, oldest, 1)
                if wrong(items, expected):
                    raise BenchError(f"{name} read a wrong item")
        end = time.perf_counter()
        del add, read
    finally:
        if system != ROCKSQ:
            queue.close()
        del queue
        gc.collect()  # RocksQ has no close(): its queue is released when collected
    count = len(messages)
    return {
        "seconds": end - start,
        "add_rate": count / (added - start),
        "read_rate": count * labels / (end - added),
    }


def mpsc_threads(system: str, path: str, messages: list[bytes]) -> dict[str, Any]:
    """w7 for nonblocking queues: one producer thread, one consumer thread."""
    queue: Any
    if system == OURS_NONBLOCKING:
        from rocksq_aio.nonblocking import PersistentQueueWithCapacity

        queue = PersistentQueueWithCapacity(path)
    elif system == ROCKSQ:
        queue = import_optional("rocksq.nonblocking").PersistentQueueWithCapacity(path)
    else:
        raise BenchError(f"{system} has no nonblocking queue")
    started = time.perf_counter()
    queue.push([WARM_UP]).get()
    warmup_ms = warm_up_check(queue.pop(max_elements=1).get().data, started)
    count = len(messages)
    seen = bytearray(count)
    marks: dict[str, float] = {}
    errors: list[BaseException] = []
    empty_polls = 0

    def produce() -> None:
        try:
            push = queue.push
            responses = [push([message]) for message in messages]
            for response in responses:
                response.get()
            marks["produced"] = time.perf_counter()
        except BaseException as error:
            errors.append(error)

    def consume() -> None:
        nonlocal empty_polls
        try:
            pop = queue.pop
            received = 0
            while received < count and not errors:
                data = pop(max_elements=POP_BATCH).get().data
                if data:
                    for item in data:
                        seen[int.from_bytes(item[:8], "big")] += 1
                    received += len(data)
                else:
                    empty_polls += 1
                    time.sleep(EMPTY_POLL_BACKOFF)
            marks["consumed"] = time.perf_counter()
        except BaseException as error:
            errors.append(error)

    try:
        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise BenchError(f"worker thread failed: {errors[0]!r}") from errors[0]
        end = max(marks["produced"], marks["consumed"])
    finally:
        if system == ROCKSQ:
            del queue
            gc.collect()
        else:
            queue.close()
    if seen.count(1) != count:
        raise BenchError("items lost or duplicated")
    return {"seconds": end - start, "empty_polls": empty_polls, "warmup_ms": warmup_ms}


async def mpsc_async(
    system: str, path: str, messages: list[bytes], producers: int, probe: LagProbe
) -> dict[str, Any]:
    """w7 for rocksq_aio's async face: P producer tasks, CONSUMERS consumer tasks.

    ``probe`` (not started) measures the event loop's lag while the workload runs.
    """
    from rocksq_aio import PersistentQueue

    queue = PersistentQueue(path, sync=system == OURS_SYNC)
    started = time.perf_counter()
    await queue.push([WARM_UP])
    warmup_ms = warm_up_check(await queue.pop(1), started)
    count = len(messages)
    shares = [messages[k::producers] for k in range(producers)]
    seen = bytearray(count)
    consumed = 0
    finished = asyncio.Event()
    failures: list[BaseException] = []
    marks: dict[str, float] = {}

    async def produce(share: list[bytes]) -> None:
        push = queue.push
        for message in share:
            await push([message])

    async def consume() -> None:
        nonlocal consumed
        try:
            while consumed < count:
                items = await queue.pop_wait(max_elements=POP_BATCH)
                for item in items:
                    seen[int.from_bytes(item[:8], "big")] += 1
                consumed += len(items)
            if "consumed" not in marks:
                marks["consumed"] = time.perf_counter()
                finished.set()
        except Exception as error:
            failures.append(error)
            finished.set()

    consumer_tasks: list[asyncio.Task[None]] = []
    try:
        probe.start()
        start = time.perf_counter()
        consumer_tasks = [asyncio.ensure_future(consume()) for _ in range(CONSUMERS)]
        await asyncio.gather(*(produce(share) for share in shares))
        marks["produced"] = time.perf_counter()
        await finished.wait()
        if failures:
            raise BenchError(f"consumer failed: {failures[0]!r}") from failures[0]
        end = max(marks["produced"], marks["consumed"])
        lag = await probe.stop()
    finally:
        for task in consumer_tasks:
            task.cancel()
        await asyncio.gather(*consumer_tasks, return_exceptions=True)
        await probe.stop()
        await queue.aclose()
    if seen.count(1) != count:
        raise BenchError("items lost or duplicated")
    return {"seconds": end - start, "warmup_ms": warmup_ms, **lag}


async def write_read_async(
    system: str, path: str, messages: list[bytes], probe: LagProbe
) -> dict[str, Any]:
    """w8b: await one push per message, then one pop per message; ``probe`` as in mpsc_async."""
    count = len(messages)
    if system in (OURS, OURS_SYNC):
        from rocksq_aio import PersistentQueue

        ours = PersistentQueue(path, sync=system == OURS_SYNC)
        try:
            started = time.perf_counter()
            await ours.push([WARM_UP])
            warmup_ms = warm_up_check(await ours.pop(1), started)
            probe.start()
            start = time.perf_counter()
            for message in messages:
                await ours.push([message])
            written = time.perf_counter()
            for expected in messages:
                if wrong(await ours.pop(1), expected):
                    raise BenchError("popped a wrong item")
            end = time.perf_counter()
        finally:
            lag = await probe.stop()
            await ours.aclose()
    elif system == PQ_ASYNC:
        # Imported from its module: the package's __init__ drops it when aiofiles is missing.
        try:
            module = importlib.import_module("persistqueue.async_sqlqueue")
        except ImportError as error:
            raise Unavailable(
                f"persistqueue.AsyncSQLiteQueue needs aiosqlite ({error}); "
                "pip install aiosqlite or 'persist-queue[async]'"
            ) from error
        os.makedirs(path, exist_ok=True)
        theirs = module.AsyncSQLiteQueue(os.path.join(path, "data.db"), auto_commit=True)
        try:
            started = time.perf_counter()  # the first put also connects
            await theirs.put(WARM_UP)
            warmup_ms = warm_up_check([await theirs.get()], started)
            probe.start()
            start = time.perf_counter()
            for message in messages:
                await theirs.put(message)
            written = time.perf_counter()
            for expected in messages:
                if wrong([await theirs.get()], expected):
                    raise BenchError("got a wrong item")
            end = time.perf_counter()
        finally:
            lag = await probe.stop()
            await theirs.close()
    else:
        raise BenchError(f"{system} has no async FIFO queue")
    return {**write_read_rates(count, start, written, end), "warmup_ms": warmup_ms, **lag}


def submit_then_get(system: str, path: str, messages: list[bytes], mpmc: bool) -> dict[str, Any]:
    """w9: RocksQ's own nonblocking usage, each response's get() right after the call.

    FIFO: ``push([x]).get()`` N times, ``pop().get().data`` N times, ``len.get()`` N times;
    MPMC: ``add([x]).get()``, ``next(label).get().data``, ``len.get()``.
    """
    queue: Any
    if system == OURS_NONBLOCKING:
        import rocksq_aio
        from rocksq_aio import nonblocking

        module: Any = nonblocking
        oldest: Any = rocksq_aio.StartPosition.Oldest
    elif system == ROCKSQ:
        module = import_optional("rocksq.nonblocking")
        oldest = import_optional("rocksq").StartPosition.Oldest
    else:
        raise BenchError(f"{system} has no nonblocking queue")
    # The reads take their bound method as a default: no closure keeps the queue alive.
    if mpmc:
        queue = module.MpmcQueue(path, TTL)
        write = queue.add

        def read(next_: Any = queue.next) -> list[bytes]:
            data: list[bytes] = next_("reader", oldest, 1).get().data[0]
            return data
    else:
        queue = module.PersistentQueueWithCapacity(path)
        write = queue.push

        def read(pop: Any = queue.pop) -> list[bytes]:
            data: list[bytes] = pop().get().data
            return data

    try:
        started = time.perf_counter()
        write([WARM_UP]).get()
        warmup_ms = warm_up_check(read(), started)
        start = time.perf_counter()
        for message in messages:
            write([message]).get()
        written = time.perf_counter()
        for expected in messages:
            if wrong(read(), expected):
                raise BenchError("read a wrong item")
        done = time.perf_counter()
        for _ in messages:
            queue.len.get()
        end = time.perf_counter()
        if queue.len.get().len != (len(messages) + 1 if mpmc else 0):  # MPMC keeps them
            raise BenchError("len.get() is wrong")
    finally:
        if system != ROCKSQ:
            queue.close()
        del queue, write, read
        gc.collect()  # RocksQ has no close(): its queue is released when collected
    count = len(messages)
    return {
        "seconds": end - start,
        "warmup_ms": warmup_ms,
        "phase_us": {
            "add" if mpmc else "push": (written - start) / count * 1e6,
            "next" if mpmc else "pop": (done - written) / count * 1e6,
            "len": (end - done) / count * 1e6,
        },
    }


async def one_task(system: str, path: str, messages: list[bytes]) -> dict[str, Any]:
    """w10: one task awaits each push, then each pop (2N awaited calls for N messages).

    ``bare-hop`` awaits ``anyio.to_thread.run_sync(lambda: None)`` 2N times instead: the
    thread hop alone, what the issue's target compares an awaited operation with.
    """
    import anyio
    import anyio.to_thread

    count = len(messages)
    if system == BARE_HOP:
        run_sync = anyio.to_thread.run_sync

        def nothing() -> None:
            return None

        started = time.perf_counter()
        await run_sync(nothing)
        warmup_ms = (time.perf_counter() - started) * 1000
        start = time.perf_counter()
        for _ in range(2 * count):
            await run_sync(nothing)
        written = end = time.perf_counter()
        phases = {"hop": (end - start) / (2 * count) * 1e6}
    elif system in (OURS, OURS_SYNC):
        from rocksq_aio import PersistentQueue

        async with PersistentQueue(path, sync=system == OURS_SYNC) as queue:
            started = time.perf_counter()
            await queue.push([WARM_UP])
            warmup_ms = warm_up_check(await queue.pop(1), started)
            push, pop = queue.push, queue.pop
            start = time.perf_counter()
            for message in messages:
                await push([message])
            written = time.perf_counter()
            for expected in messages:
                if wrong(await pop(1), expected):
                    raise BenchError("popped a wrong item")
            end = time.perf_counter()
        phases = {"push": (written - start) / count * 1e6, "pop": (end - written) / count * 1e6}
    else:
        raise BenchError(f"{system} does not run the one-task workload")
    return {"seconds": end - start, "warmup_ms": warmup_ms, "phase_us": phases}
