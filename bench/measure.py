"""What runs inside the child process: the lag probe, the event loop, one measurement.

``run.py --child SYSTEM WORKLOAD JSON`` calls ``child_main``, which measures once on a fresh
directory and prints one JSON line. The line names the ``rocksq_aio`` the child imported
(``rocksq_aio_file``), so the parent can check that a ``baseline-*`` run used the baseline.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

from systems import (
    WARM_UP,
    BenchError,
    Unavailable,
    fifo_batched,
    fifo_interleaved,
    fifo_write_read,
    make_messages,
    mpmc_blocking,
    mpsc_async,
    mpsc_threads,
    one_task,
    open_fifo,
    submit_then_get,
    warm_up_check,
    write_read_async,
)
from workloads import (
    BATCHED,
    INTERLEAVED,
    JETSTREAM_KINDS,
    MPMC,
    MPSC_ASYNC,
    ONE_TASK,
    OURS,
    OURS_SYNC,
    SUBMIT_GET,
    TICK,
    WORKLOADS,
    WRITE_READ,
    WRITE_READ_ASYNC,
    Workload,
    base_system,
)


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
    if kind in JETSTREAM_KINDS:
        import jetstream  # only the j* children need nats-py

        return run_on_loop(
            lambda: jetstream.measure(system, workload, params, messages), bool(params["uvloop"])
        )
    if kind == MPMC:
        return mpmc_blocking(system, path, messages, workload.labels)
    if kind == MPSC_ASYNC:
        if system in (OURS, OURS_SYNC):
            producers = workload.producers
            return run_on_loop(
                lambda: mpsc_async(system, path, messages, producers, LagProbe()),
                bool(params["uvloop"]),
            )
        return mpsc_threads(system, path, messages)
    if kind == SUBMIT_GET:
        return submit_then_get(system, path, messages, mpmc=workload.labels > 0)
    if kind == ONE_TASK:
        import anyio

        # Plain asyncio (no uvloop) or trio, as the workload names: the bare hop's loop.
        backend = workload.backend
        result: dict[str, Any] = anyio.run(one_task, system, path, messages, backend=backend)
        result["loop"] = workload.backend
        return result
    if kind == WRITE_READ_ASYNC:
        return run_on_loop(
            lambda: write_read_async(system, path, messages, LagProbe()), bool(params["uvloop"])
        )
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
    """Measure once and print one JSON line; exit status 0 whether or not it worked.

    A ``baseline-*`` system runs its ``ours*`` twin's code; the parent put the baseline
    checkout first on PYTHONPATH, and ``rocksq_aio_file`` says where rocksq_aio came from.
    """
    params: dict[str, Any] = json.loads(raw_params)
    own_directory = not params.get("tmpdir")
    directory = tempfile.mkdtemp(prefix="rocksq_aio-bench-") if own_directory else params["tmpdir"]
    result: dict[str, Any] = {"system": system, "workload": workload_name, "ok": False}
    try:
        workload = WORKLOADS[workload_name]
        if not workload.runs_on(system):
            raise BenchError(f"{system} does not run {workload_name}")
        queue_path = os.path.join(directory, "queue")
        outcome = measure(base_system(system), workload, params, queue_path)
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
    library = sys.modules.get("rocksq_aio")
    if library is not None:
        result["rocksq_aio_file"] = getattr(library, "__file__", None)
    print(json.dumps(result), flush=True)
    return 0
