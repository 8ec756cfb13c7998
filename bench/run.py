"""Throughput benchmark: rocksq_aio against RocksQ 0.3.0 and persist-queue.

Every measurement runs in a fresh child process (``run.py --child SYSTEM
WORKLOAD PARAMS``) on a fresh temporary directory, and prints one JSON line:
the rate in messages/s, the child's peak RSS and, on an event loop, the loop's
lag (a 1 ms ticker's oversleep). The parent runs each workload ``--runs`` times,
alternating the systems within each run (rotating who goes first), reports the
median, min and max, the ratios and the project's targets, and writes
``latest.json`` and ``latest.md`` to ``--output-dir``.

    python bench/run.py --quick                 # about 2 minutes, small N
    python bench/run.py                         # full: N=20000, 1 MiB N=1000
    python bench/run.py --workloads w2,w7 --systems ours,rocksq --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

SMALL = 16
KIB = 1024
MIB = 1024 * 1024
BATCH = 100  # w5: items per push / pop call
POP_BATCH = 64  # w7: max_elements of each consumer's pop
CONSUMERS = 4  # w7: consumer tasks
TTL = 3600  # w6: MPMC element TTL, seconds
EMPTY_POLL_BACKOFF = 50e-6  # w7 threaded consumer: sleep after a pop that found nothing
TICK = 0.001  # event-loop lag probe period, seconds

OURS = "ours"
OURS_SYNC = "ours-sync"
OURS_NONBLOCKING = "ours-nonblocking"
ROCKSQ = "rocksq"
PQ = "persist-queue"
PQ_ASYNC = "persist-queue-async"
SYSTEMS = (OURS, OURS_SYNC, OURS_NONBLOCKING, ROCKSQ, PQ, PQ_ASYNC)

DURABILITY = {
    OURS: "RocksDB WAL, no fsync (default)",
    OURS_SYNC: "fsync per commit (sync=True)",
    OURS_NONBLOCKING: "RocksDB WAL, no fsync (default)",
    ROCKSQ: "RocksQ default: WAL, no fsync (no sync option)",
    PQ: "SQLite WAL, synchronous=FULL (fsync per commit)",
    PQ_ASYNC: "SQLite rollback journal, synchronous=FULL (fsyncs per commit)",
}

# Workload kinds.
WRITE_READ = "write_read"  # push N one per call, then pop N one per call
INTERLEAVED = "interleaved"  # push one, pop one, N times
BATCHED = "batched"  # push BATCH per call, then pop BATCH per call
MPMC = "mpmc"  # add N one per call, then every label reads all N one per call
MPSC_ASYNC = "mpsc_async"  # P producer tasks, CONSUMERS consumer tasks on an event loop
WRITE_READ_ASYNC = "write_read_async"  # WRITE_READ with await
ASYNC_KINDS = (MPSC_ASYNC, WRITE_READ_ASYNC)


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    size: int
    count: str  # "n", "mib_n" or "n/10"
    systems: tuple[str, ...]
    description: str
    labels: int = 0
    producers: int = 0


FIFO_SYSTEMS = (OURS, OURS_SYNC, ROCKSQ)
MPSC_SYSTEMS = (OURS, OURS_SYNC, OURS_NONBLOCKING, ROCKSQ)

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("w1", WRITE_READ, SMALL, "n", FIFO_SYSTEMS, "16 B: write N one per call, read N"),
        Workload("w2", INTERLEAVED, SMALL, "n", FIFO_SYSTEMS, "16 B: push 1 / pop 1, N pairs"),
        Workload("w3a", WRITE_READ, KIB, "n", FIFO_SYSTEMS, "1 KiB: write N, then read N"),
        Workload("w3b", INTERLEAVED, KIB, "n", FIFO_SYSTEMS, "1 KiB: push 1 / pop 1, N pairs"),
        Workload("w4", WRITE_READ, MIB, "mib_n", FIFO_SYSTEMS, "1 MiB: write N, then read N"),
        Workload("w5", BATCHED, SMALL, "n", FIFO_SYSTEMS, "16 B: push 100 / pop 100 per call"),
        Workload("w6a", MPMC, SMALL, "n", FIFO_SYSTEMS, "MPMC: add N, 1 label reads all", labels=1),
        Workload("w6b", MPMC, SMALL, "n", FIFO_SYSTEMS, "MPMC: add N, 8 labels read all", labels=8),
        Workload(
            "w7_1",
            MPSC_ASYNC,
            SMALL,
            "n",
            MPSC_SYSTEMS,
            "async: 1 producer, 4 consumers",
            producers=1,
        ),
        Workload(
            "w7_16",
            MPSC_ASYNC,
            SMALL,
            "n",
            MPSC_SYSTEMS,
            "async: 16 producers, 4 consumers",
            producers=16,
        ),
        Workload(
            "w7_256",
            MPSC_ASYNC,
            SMALL,
            "n",
            MPSC_SYSTEMS,
            "async: 256 producers, 4 consumers",
            producers=256,
        ),
        Workload(
            "w8a",
            WRITE_READ,
            SMALL,
            "n/10",
            (OURS, OURS_SYNC, PQ),
            "w1 with N/10, vs persist-queue SQLiteQueue",
        ),
        Workload(
            "w8b",
            WRITE_READ_ASYNC,
            SMALL,
            "n/10",
            (OURS, OURS_SYNC, PQ_ASYNC),
            "w1 with N/10 and await, vs persist-queue AsyncSQLiteQueue",
        ),
    )
}


def api_of(kind: str, system: str) -> str:
    """The API a system uses for a kind of workload."""
    if system == ROCKSQ:
        return "rocksq.nonblocking" if kind == MPSC_ASYNC else "rocksq.blocking"
    if system == OURS_NONBLOCKING:
        return "rocksq_aio.nonblocking"
    if system == PQ:
        return "persistqueue.SQLiteQueue"
    if system == PQ_ASYNC:
        return "persistqueue.AsyncSQLiteQueue"
    if kind in ASYNC_KINDS:
        return "rocksq_aio (async)"
    return "rocksq_aio.blocking"


class BenchError(Exception):
    """A workload saw wrong data or could not run."""


class Unavailable(BenchError):
    """The system can't run here (a package is missing); no use trying again."""


# ---------------------------------------------------------------------- child


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
    count = len(messages)
    return {
        "seconds": end - start,
        "write_rate": count / (written - start),
        "read_rate": count / (end - written),
    }


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
    count = len(messages)
    return {
        "seconds": end - start,
        "write_rate": count / (written - start),
        "read_rate": count / (end - written),
    }


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
        if system == ROCKSQ:
            del queue
            gc.collect()
        else:
            queue.close()
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


class LagProbe:
    """A task sleeping 1 ms at a time; records how much longer each sleep took."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._running = True
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        clock, sleep, samples = time.perf_counter, asyncio.sleep, self.samples
        while self._running:
            before = clock()
            await sleep(TICK)
            samples.append(max(0.0, clock() - before - TICK))

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._tick())

    async def stop(self) -> dict[str, Any]:
        """Stop ticking (idempotent) and return p99 and max lag in ms."""
        self._running = False
        if self._task is not None:
            task, self._task = self._task, None
            await task
        if not self.samples:
            return {"lag_p99_ms": None, "lag_max_ms": None, "lag_samples": 0}
        ordered = sorted(self.samples)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        return {
            "lag_p99_ms": p99 * 1000,
            "lag_max_ms": ordered[-1] * 1000,
            "lag_samples": len(ordered),
        }


async def mpsc_async(
    system: str, path: str, messages: list[bytes], producers: int
) -> dict[str, Any]:
    """w7 for rocksq_aio's async face: P producer tasks, CONSUMERS consumer tasks."""
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

    probe = LagProbe()
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


async def write_read_async(system: str, path: str, messages: list[bytes]) -> dict[str, Any]:
    """w8b: await one push per message, then one pop per message."""
    count = len(messages)
    probe = LagProbe()
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
    return {
        "seconds": end - start,
        "write_rate": count / (written - start),
        "read_rate": count / (end - written),
        "warmup_ms": warmup_ms,
        **lag,
    }


def run_on_loop(
    make: Callable[[], Coroutine[Any, Any, dict[str, Any]]], use_uvloop: bool
) -> dict[str, Any]:
    """Run a coroutine on a new uvloop loop if asked and importable, else on asyncio's."""
    loop: asyncio.AbstractEventLoop
    name = "asyncio"
    if use_uvloop:
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            name = "asyncio (uvloop not importable)"
            loop = asyncio.new_event_loop()
        else:
            loop = uvloop.new_event_loop()
            name = f"uvloop {getattr(uvloop, '__version__', '?')}"
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(make())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    result["loop"] = name
    return result


def measure(system: str, workload: Workload, params: dict[str, Any], path: str) -> dict[str, Any]:
    messages = make_messages(int(params["n"]), workload.size)
    kind = workload.kind
    if kind == MPMC:
        return mpmc_blocking(system, path, messages, workload.labels)
    if kind == MPSC_ASYNC:
        if system in (OURS, OURS_SYNC):
            producers = workload.producers
            return run_on_loop(
                lambda: mpsc_async(system, path, messages, producers), bool(params["uvloop"])
            )
        return mpsc_threads(system, path, messages)
    if kind == WRITE_READ_ASYNC:
        return run_on_loop(lambda: write_read_async(system, path, messages), bool(params["uvloop"]))
    runner = {WRITE_READ: fifo_write_read, INTERLEAVED: fifo_interleaved, BATCHED: fifo_batched}
    queue = open_fifo(system, path)
    try:
        started = time.perf_counter()
        queue.push([WARM_UP])
        warmup_ms = warm_up_check(queue.pop(1), started)
        return {**runner[kind](queue, messages), "warmup_ms": warmup_ms}
    finally:
        queue.close()


def child_main(system: str, workload_name: str, raw_params: str) -> int:
    """Measure once and print one JSON line; exit status 0 whether or not it worked."""
    params: dict[str, Any] = json.loads(raw_params)
    own_directory = not params.get("tmpdir")
    directory = tempfile.mkdtemp(prefix="rocksq_aio-bench-") if own_directory else params["tmpdir"]
    result: dict[str, Any] = {"system": system, "workload": workload_name, "ok": False}
    try:
        workload = WORKLOADS[workload_name]
        if system not in workload.systems:
            raise BenchError(f"{system} does not run {workload_name}")
        outcome = measure(system, workload, params, os.path.join(directory, "queue"))
        result.update(outcome)
        result["ok"] = True
        result["n"] = int(params["n"])
        result["rate"] = result["n"] / result["seconds"]
    except Unavailable as error:
        result.update(error=str(error), unavailable=True)
    except Exception as error:
        result.update(error=f"{type(error).__name__}: {error}")
    finally:
        if own_directory:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            shutil.rmtree(os.path.join(directory, "queue"), ignore_errors=True)
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------- parent


@dataclass(frozen=True)
class Config:
    n: int
    mib_n: int
    sync_n: int
    runs: int
    workloads: tuple[str, ...]
    systems: tuple[str, ...]
    output_dir: str
    timeout: float
    uvloop: bool
    quick: bool

    def count(self, workload: Workload, system: str = OURS) -> int:
        """Messages for a system on a workload."""
        if workload.count == "mib_n":
            count = self.mib_n
        elif workload.count == "n/10":
            count = max(1, self.n // 10)
        else:
            count = self.n
        if system == OURS_SYNC and workload.kind in (WRITE_READ, INTERLEAVED, MPMC):
            # One fsync per call: the rate hardly depends on N, the run time does.
            count = min(count, self.sync_n)
        return count


def select(raw: str | None, known: Sequence[str], what: str) -> tuple[str, ...]:
    """Names from a comma list; a workload group name ("w3", "w7") selects its members."""
    if raw is None:
        return tuple(known)
    chosen: list[str] = []
    for token in (part.strip() for part in raw.split(",")):
        if not token:
            continue
        matches = [name for name in known if name == token]
        if not matches and what == "workload":
            matches = [name for name in known if name.rstrip("ab").split("_")[0] == token]
        if not matches:
            raise SystemExit(f"unknown {what} {token!r}; choose from {', '.join(known)}")
        chosen.extend(name for name in matches if name not in chosen)
    return tuple(name for name in known if name in chosen)


def run_child(system: str, workload: Workload, config: Config) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="rocksq_aio-bench-")
    params = {"n": config.count(workload, system), "uvloop": config.uvloop, "tmpdir": directory}
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        system,
        workload.name,
        json.dumps(params),
    ]
    failure: dict[str, Any] = {"system": system, "workload": workload.name, "ok": False}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=config.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {**failure, "error": f"timed out after {config.timeout:g} s"}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**failure, "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    if done.returncode != 0 and result.get("ok"):
        result.update(ok=False, error=f"exit {done.returncode}")
    return result


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summarize(runs: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in config.workloads:
        workload = WORKLOADS[name]
        for system in workload.systems:
            if system not in config.systems:
                continue
            mine = [r for r in runs if r["workload"] == name and r["system"] == system]
            good = [r for r in mine if r.get("ok")]
            rates = [float(r["rate"]) for r in good]
            p99s = [float(r["lag_p99_ms"]) for r in good if r.get("lag_p99_ms") is not None]
            maxes = [float(r["lag_max_ms"]) for r in good if r.get("lag_max_ms") is not None]
            warmups = [float(r["warmup_ms"]) for r in good if r.get("warmup_ms") is not None]
            loops = sorted({str(r["loop"]) for r in good if r.get("loop")})
            rows.append(
                {
                    "workload": name,
                    "system": system,
                    "api": api_of(workload.kind, system),
                    "durability": DURABILITY[system],
                    "n": config.count(workload, system),
                    "runs_ok": len(good),
                    "runs_failed": len(mine) - len(good),
                    "errors": sorted({str(r.get("error")) for r in mine if not r.get("ok")}),
                    "median_rate": statistics.median(rates) if rates else None,
                    "min_rate": min(rates) if rates else None,
                    "max_rate": max(rates) if rates else None,
                    "median_rss_mib": (
                        statistics.median(float(r["rss_mib"]) for r in good) if good else None
                    ),
                    "median_lag_p99_ms": statistics.median(p99s) if p99s else None,
                    "max_lag_ms": max(maxes) if maxes else None,
                    "median_warmup_ms": statistics.median(warmups) if warmups else None,
                    "unavailable": any(r.get("unavailable") for r in mine),
                    "loop": ", ".join(loops) or None,
                }
            )
    return rows


RATIOS: tuple[tuple[str, str], ...] = (
    (OURS, ROCKSQ),
    (OURS_SYNC, ROCKSQ),
    (OURS_NONBLOCKING, ROCKSQ),
    (OURS, PQ),
    (OURS_SYNC, PQ),
    (OURS, PQ_ASYNC),
    (OURS_SYNC, PQ_ASYNC),
    (OURS_SYNC, OURS),
)

# (workload, numerator, denominator, minimum, label)
TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    ("w2", OURS, ROCKSQ, 1.0, "w2 interleaved, blocking: ours / rocksq"),
    ("w7_256", OURS, ROCKSQ, 3.0, "w7_256 async: ours (async) / rocksq (nonblocking)"),
    ("w7_256", OURS_SYNC, OURS, 0.5, "w7_256 async: ours-sync / ours"),
    ("w4", OURS, ROCKSQ, 1.0, "w4 1 MiB: ours / rocksq"),
    ("w8a", OURS, PQ, 50.0, "w8a: ours (blocking) / persist-queue SQLiteQueue"),
    ("w8b", OURS, PQ_ASYNC, 50.0, "w8b: ours (async) / persist-queue AsyncSQLiteQueue"),
)


# What limits a target when it is missed: measured while building the library
# (see the README's Benchmarks section for the method).
LIMITS: dict[str, str] = {
    "w2": (
        "a one-item push or pop is one rocksdict call that writes only the element's key "
        "(the counters go with every 1024th call and at close: FIFO format v2), ~3 us, about "
        "what RocksQ's whole Rust push costs; medians of 5 give 1.15-1.31x and same-process "
        "A/B loops 1.33x, so a miss here is this machine's noise"
    ),
    "w7_256": (
        "with no storage at all, 256 asyncio tasks each awaiting one future per item reach "
        "~1.0-1.3M awaits/s on uvloop (~0.8-1 us each); the worker needs ~2-2.5 us per item "
        "(group planned as one append, one WriteBatch) and the loop ~4 us per awaited push "
        "(coroutine, operation, in-flight slot, wake-up); 3x a quiet RocksQ nonblocking "
        "(~110k/s) would need <3 us per item end to end, under one GIL"
    ),
    "w8a": (
        "persist-queue's rate depends on fsync latency: ~770/s on the loaded machine but "
        "~1.7-1.9k/s when it is idle; with w8's N=1000 our whole run lasts ~10-20 ms, so our "
        "rate there swings with per-run fixed costs (medians of 5: 55-64x on an idle machine)"
    ),
    "w8b": (
        "one task awaits one operation at a time, so every operation pays a full thread hop "
        "to the worker (anyio.to_thread.run_sync) and back: a bare run_sync of a no-op costs "
        "~150-350 us on this 2-core VM, more when it is idle (run_in_executor ~90-155 us), "
        "with nothing to group-commit it with"
    ),
}


def medians(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {
        (row["workload"], row["system"]): float(row["median_rate"])
        for row in rows
        if row["median_rate"] is not None
    }


def compute_ratios(rows: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    table = medians(rows)
    ratios: list[dict[str, Any]] = []
    for name in config.workloads:
        for top, bottom in RATIOS:
            if (name, top) in table and (name, bottom) in table:
                ratios.append(
                    {
                        "workload": name,
                        "ratio": f"{top} / {bottom}",
                        "value": table[name, top] / table[name, bottom],
                    }
                )
    return ratios


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = medians(rows)
    checks: list[dict[str, Any]] = []
    for name, top, bottom, minimum, label in TARGETS:
        check: dict[str, Any] = {"target": f"{label} >= {minimum:g}", "minimum": minimum}
        if (name, top) not in table or (name, bottom) not in table:
            check.update(status="NOT MEASURED", value=None)
            check["line"] = f"NOT MEASURED  {check['target']} (run {name} with {top}, {bottom})"
        else:
            value = table[name, top] / table[name, bottom]
            check["value"] = value
            if value >= minimum:
                check["status"] = "MET"
                margin = f"{(value / minimum - 1) * 100:.0f}% above"
                check["line"] = f"MET     {check['target']}: {value:.2f} ({margin})"
            else:
                check["status"] = "MISSED"
                short = (1 - value / minimum) * 100
                check["line"] = (
                    f"MISSED  {check['target']}: {value:.2f} "
                    f"(missed by {minimum - value:.2f}, {short:.0f}% short)"
                )
                if name in LIMITS and top == OURS:
                    check["limit"] = LIMITS[name]
                    check["line"] += f"; limited by: {LIMITS[name]}"
        checks.append(check)
    return checks


def read_first(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as source:
        for line in source:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def describe_machine() -> dict[str, Any]:
    memory = read_first("/proc/meminfo", "MemTotal")
    if memory is not None and memory.endswith(" kB") and memory[:-3].isdigit():
        memory = f"{int(memory[:-3]) / MIB:.1f} GiB"
    versions: dict[str, str] = {}
    packages = (
        "rocksq_aio",
        "rocksdict",
        "rocksq",
        "persist-queue",
        "aiosqlite",
        "anyio",
        "uvloop",
    )
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "platform": platform.platform(),
        "cpu": read_first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "memory": memory or "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "tmpdir": tempfile.gettempdir(),
        "loadavg_start": list(os.getloadavg()),
        "versions": versions,
    }


def markdown(
    rows: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    config: Config,
    machine: dict[str, Any] | None,
) -> str:
    out: list[str] = []
    if machine is not None:
        versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        load = " / ".join(f"{x:.2f}" for x in machine["loadavg_start"])
        out += [
            "## Machine",
            "",
            f"- platform: {machine['platform']}",
            f"- CPU: {machine['cpu']}, nproc {machine['nproc']}",
            f"- memory: {machine['memory']}",
            f"- Python: {machine['python']}",
            f"- packages: {versions}",
            f"- load average at start: {load}",
            "",
        ]
    out += [
        "## Results",
        "",
        f"N = {config.n} small messages, 1 MiB N = {config.mib_n}, w8 N = "
        f"{max(1, config.n // 10)}, ours-sync N at most {config.sync_n} outside w7/w8b; "
        f"median of {config.runs} runs, systems alternating within each run; every run in a "
        "fresh process and directory.",
        "",
        "| workload | system | API | N | median msgs/s | min | max | peak RSS MiB "
        "| p99 lag ms (async) | max lag ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rate = fmt_rate(row["median_rate"])
        if row["unavailable"] and not row["runs_ok"]:
            rate = "unavailable"
        elif row["runs_failed"]:
            rate += f" ({row['runs_failed']} failed)"
        out.append(
            f"| {row['workload']} | {row['system']} | {row['api']} | {row['n']} | {rate} "
            f"| {fmt_rate(row['min_rate'])} | {fmt_rate(row['max_rate'])} "
            f"| {fmt_num(row['median_rss_mib'])} | {fmt_num(row['median_lag_p99_ms'], 2)} "
            f"| {fmt_num(row['max_lag_ms'], 2)} |"
        )
    out += ["", "## Ratios (of medians)", "", "| workload | ratio | value |", "|---|---|---:|"]
    out += [f"| {r['workload']} | {r['ratio']} | {r['value']:.2f} |" for r in ratios]
    out += ["", "## Targets", ""]
    out += [f"- {check['line']}" for check in checks]
    errors = [row for row in rows if row["errors"]]
    if errors:
        out += ["", "## Failures", ""]
        out += [f"- {r['workload']} {r['system']}: {'; '.join(r['errors'])}" for r in errors]
    loops = sorted({str(row["loop"]) for row in rows if row["loop"]})
    out += [
        "",
        "## Notes",
        "",
        "- msgs/s = messages through the queue / wall time of the whole workload (write and "
        "read phases together; w2 and w3b: N push+pop pairs; w6: N / time to add N and have "
        "every label read all N; w7: N / time until all N are consumed).",
        "- Durability: " + "; ".join(f"{k}: {v}" for k, v in DURABILITY.items()) + ". RocksQ "
        "has only its default durability, so ours-sync has no RocksQ counterpart; "
        "persist-queue fsyncs each commit, so ours-sync is the like-for-like comparison in w8.",
        "- w7 rocksq / ours-nonblocking: one producer thread issuing push() without waiting "
        "(blocked only at max_inflight_ops=1000) and getting the responses in order at the "
        "end, one consumer thread issuing pop(max_elements=64) and getting each response "
        f"(sleeping {EMPTY_POLL_BACKOFF * 1e6:.0f} us after an empty pop); P does not apply.",
        f"- Event loop for async rows: {', '.join(loops) or 'none run'}. Lag = oversleep of a "
        "task sleeping 1 ms in a loop during the workload (includes timer granularity; with "
        "fewer than 100 samples, as in short --quick runs, p99 is the maximum).",
        "- Before timing, every FIFO workload pushes and pops one warm-up message (not "
        "counted; its time is warmup_ms in latest.json): it opens persist-queue-async's "
        "connection and starts worker threads. w6 (MPMC) has no warm-up.",
        "- Peak RSS = ru_maxrss of the child, which includes the interpreter, the imported "
        "libraries and the pre-generated messages.",
    ]
    return "\n".join(out) + "\n"


def write_atomically(path: str, text: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as sink:
        sink.write(text)
    os.replace(temporary, path)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark rocksq_aio against rocksq 0.3.0 and persist-queue.",
        epilog=f"workloads: {', '.join(WORKLOADS)} (w3, w6, w7, w8 select groups); "
        f"systems: {', '.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="N=2000, 1 MiB N=50, ours-sync N<=500, 3 runs"
    )
    parser.add_argument("--n", type=int, help="small messages per workload (default 20000)")
    parser.add_argument("--mib-n", type=int, help="1 MiB messages in w4 (default 1000)")
    parser.add_argument(
        "--sync-n",
        type=int,
        help="cap on N for ours-sync in w1-w4, w6, w8a, which fsync every call "
        "(default: no cap; --quick: 500)",
    )
    parser.add_argument("--runs", type=int, help="runs per system and workload (default 3)")
    parser.add_argument("--workloads", help="comma list, e.g. w1,w2,w7 (default: all)")
    parser.add_argument("--systems", help=f"comma list of {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument(
        "--output-dir",
        default=os.path.join("bench", "results"),
        help="where latest.json and latest.md go (default bench/results)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per measurement (default 900)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop for w7/w8b")
    parser.add_argument(
        "--child", nargs=3, metavar=("SYSTEM", "WORKLOAD", "JSON"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.child:
        return child_main(*args.child)
    n = args.n if args.n is not None else (2000 if args.quick else 20000)
    mib_n = args.mib_n if args.mib_n is not None else (50 if args.quick else 1000)
    runs = args.runs if args.runs is not None else 3
    sync_n = args.sync_n if args.sync_n is not None else (500 if args.quick else max(n, mib_n))
    if min(n, mib_n, sync_n, runs) < 1:
        raise SystemExit("--n, --mib-n, --sync-n and --runs must be at least 1")
    if runs < 3:
        print(
            f"warning: a median of {runs} run(s) is not robust; use --runs 3 or more",
            file=sys.stderr,
        )
    config = Config(
        n=n,
        mib_n=mib_n,
        sync_n=sync_n,
        runs=runs,
        workloads=select(args.workloads, list(WORKLOADS), "workload"),
        systems=select(args.systems, SYSTEMS, "system"),
        output_dir=args.output_dir,
        timeout=args.timeout,
        uvloop=not args.no_uvloop,
        quick=args.quick,
    )
    machine = describe_machine()
    began = time.perf_counter()
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    all_runs: list[dict[str, Any]] = []
    for name in config.workloads:
        workload = WORKLOADS[name]
        systems = [s for s in workload.systems if s in config.systems]
        unavailable: set[str] = set()
        for run in range(config.runs):
            shift = run % len(systems) if systems else 0
            for system in systems[shift:] + systems[:shift]:
                if system in unavailable:
                    continue
                result = run_child(system, workload, config)
                result["run"] = run + 1
                all_runs.append(result)
                if result.get("ok"):
                    lag = result.get("lag_p99_ms")
                    extra = "" if lag is None else f", lag p99 {lag:.2f} ms"
                    status = f"{result['rate']:>12,.0f} msgs/s, RSS {result['rss_mib']:.0f} MiB"
                    status += extra
                else:
                    status = f"FAILED: {result.get('error')}"
                    if result.get("unavailable"):
                        unavailable.add(system)
                print(
                    f"[{name} run {run + 1}/{config.runs}] {system:<20} {status}",
                    file=sys.stderr,
                    flush=True,
                )
    rows = summarize(all_runs, config)
    ratios = compute_ratios(rows, config)
    checks = check_targets(rows)
    machine["loadavg_end"] = list(os.getloadavg())
    elapsed = time.perf_counter() - began
    title = f"# rocksq_aio benchmark ({stamp}{', --quick' if config.quick else ''})\n\n"
    report = title + markdown(rows, ratios, checks, config, machine)
    print(report)
    os.makedirs(config.output_dir, exist_ok=True)
    payload = {
        "timestamp": stamp,
        "elapsed_seconds": elapsed,
        "params": {
            "n": config.n,
            "mib_n": config.mib_n,
            "sync_n": config.sync_n,
            "w8_n": max(1, config.n // 10),
            "runs": config.runs,
            "quick": config.quick,
            "workloads": list(config.workloads),
            "systems": list(config.systems),
            "uvloop_requested": config.uvloop,
            "batch": BATCH,
            "pop_batch": POP_BATCH,
            "consumers": CONSUMERS,
            "ttl": TTL,
            "timeout": config.timeout,
            "argv": list(argv),
        },
        "machine": machine,
        "workloads": {
            name: {
                "kind": WORKLOADS[name].kind,
                "message_bytes": WORKLOADS[name].size,
                "n": {s: config.count(WORKLOADS[name], s) for s in WORKLOADS[name].systems},
                "description": WORKLOADS[name].description,
            }
            for name in config.workloads
        },
        "runs": all_runs,
        "summary": rows,
        "ratios": ratios,
        "targets": checks,
    }
    write_atomically(os.path.join(config.output_dir, "latest.json"), json.dumps(payload, indent=2))
    write_atomically(os.path.join(config.output_dir, "latest.md"), report)
    print(
        f"wrote {config.output_dir}/latest.json and latest.md in {elapsed:.0f} s", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
