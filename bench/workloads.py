"""The benchmark's constants, systems and workloads: what runs, on which systems, with what API.

``--baseline DIR`` adds a ``baseline-<name>`` system for every system whose name starts
with ``ours``: the same workload code, run by a child that imports ``rocksq_aio`` from DIR.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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
JS_OURS = "ours-jetstream"  # rocksq_aio on a nats:// path (bench/jetstream.py)
JS_RAW = "nats-py"  # the same workloads through nats-py directly
BARE_HOP = "bare-hop"  # no queue: one anyio.to_thread.run_sync(lambda: None) per operation
SYSTEMS = (OURS, OURS_SYNC, OURS_NONBLOCKING, ROCKSQ, PQ, PQ_ASYNC, JS_OURS, JS_RAW, BARE_HOP)

DURABILITY = {
    OURS: "RocksDB WAL, no fsync (default)",
    OURS_SYNC: "fsync per commit (sync=True)",
    OURS_NONBLOCKING: "RocksDB WAL, no fsync (default)",
    ROCKSQ: "RocksQ default: WAL, no fsync (no sync option)",
    PQ: "SQLite WAL, synchronous=FULL (fsync per commit)",
    PQ_ASYNC: "SQLite rollback journal, synchronous=FULL (fsyncs per commit)",
    JS_OURS: "JetStream file store: R1 no fsync, R3 acked by a quorum of 3 (no fsync)",
    JS_RAW: "JetStream file store: R1 no fsync, R3 acked by a quorum of 3 (no fsync)",
    BARE_HOP: "none: no storage, only the thread hop every awaited operation pays",
}

# --baseline DIR: every "ours*" system also runs as "baseline-<name>", importing rocksq_aio
# from DIR (the parent sets PYTHONPATH and checks the child's rocksq_aio.__file__).
BASELINE_PREFIX = "baseline-"
BASELINED = tuple(system for system in SYSTEMS if system.startswith("ours"))
BASELINE_SYSTEMS = tuple(BASELINE_PREFIX + system for system in BASELINED)


def is_baseline(system: str) -> bool:
    return system.startswith(BASELINE_PREFIX)


def base_system(system: str) -> str:
    """The system whose workload code a system runs: ``baseline-ours`` runs ``ours``."""
    return system.removeprefix(BASELINE_PREFIX)


def with_baselines(systems: Iterable[str]) -> Iterator[str]:
    """Each system, followed by its baseline twin if it has one."""
    for system in systems:
        yield system
        if system in BASELINED:
            yield BASELINE_PREFIX + system


# Workload kinds.
WRITE_READ = "write_read"  # push N one per call, then pop N one per call
INTERLEAVED = "interleaved"  # push one, pop one, N times
BATCHED = "batched"  # push BATCH per call, then pop BATCH per call
MPMC = "mpmc"  # add N one per call, then every label reads all N one per call
MPSC_ASYNC = "mpsc_async"  # P producer tasks, CONSUMERS consumer tasks on an event loop
WRITE_READ_ASYNC = "write_read_async"  # WRITE_READ with await
SUBMIT_GET = "submit_get"  # nonblocking: each call's response get() at once (RocksQ's own usage)
ONE_TASK = "one_task"  # one task awaiting each push, then each pop, on the workload's backend
ASYNC_KINDS = (MPSC_ASYNC, WRITE_READ_ASYNC, ONE_TASK)
# JetStream kinds (bench/jetstream.py), each on R1 and R3 streams.
JS_PUSH = "js_push"  # P tasks, each awaiting one push([x]) / js.publish at a time
JS_BATCH = "js_batch"  # BATCH items per call: push(items) / one atomic batch publish
JS_POP = "js_pop"  # N stored, then pop(BATCH) / fetch(BATCH) + ack()
JS_RESERVE = "js_reserve"  # N stored, then reserve_batch(BATCH) + ack / fetch + ack_sync
JETSTREAM_KINDS = (JS_PUSH, JS_BATCH, JS_POP, JS_RESERVE)


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
    replicas: int = 0  # JetStream kinds: the stream's replicas (the server or the cluster)
    backend: str = ""  # ONE_TASK: the anyio backend, "asyncio" (plain, no uvloop) or "trio"

    def runs_on(self, system: str) -> bool:
        """True if the system (or the system a baseline twin stands for) runs this workload."""
        return base_system(system) in self.systems


FIFO_SYSTEMS = (OURS, OURS_SYNC, ROCKSQ)
MPSC_SYSTEMS = (OURS, OURS_SYNC, OURS_NONBLOCKING, ROCKSQ)
JS_SYSTEMS = (JS_OURS, JS_RAW)


def jetstream_workloads() -> Iterator[Workload]:
    """j1-j5, each on an R1 stream (one server) and an R3 stream (3-node cluster)."""
    shapes = (
        ("j1", JS_PUSH, "n/10", 1, "1 task awaiting each push([x]) / js.publish"),
        ("j2", JS_PUSH, "n", 256, "256 tasks, each awaiting push([x]) / js.publish"),
        ("j3", JS_BATCH, "n", 0, "100 items per call: push / atomic batch publish"),
        ("j4", JS_POP, "n", 0, "pop(100) / fetch(100) + ack()"),
        ("j5", JS_RESERVE, "n", 0, "reserve_batch(100) + ack / fetch(100) + ack_sync"),
    )
    for name, kind, count, producers, description in shapes:
        for replicas in (1, 3):
            yield Workload(
                f"{name}_r{replicas}",
                kind,
                SMALL,
                count,
                JS_SYSTEMS,
                f"JetStream R{replicas}: {description}",
                producers=producers,
                replicas=replicas,
            )

SUBMIT_GET_SYSTEMS = (OURS_NONBLOCKING, ROCKSQ)
ONE_TASK_SYSTEMS = (OURS, BARE_HOP)

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
        *jetstream_workloads(),
        Workload(
            "w9a",
            SUBMIT_GET,
            SMALL,
            "n",
            SUBMIT_GET_SYSTEMS,
            "nonblocking FIFO: push([x]).get() N, pop().get() N, len.get() N",
        ),
        Workload(
            "w9b",
            SUBMIT_GET,
            SMALL,
            "n",
            SUBMIT_GET_SYSTEMS,
            "nonblocking MPMC: add([x]).get() N, next(label).get() N, len.get() N",
            labels=1,
        ),
        Workload(
            "w10a",
            ONE_TASK,
            SMALL,
            "n/10",
            ONE_TASK_SYSTEMS,
            "one task awaiting push N, pop N (asyncio) vs a bare to_thread hop per operation",
            backend="asyncio",
        ),
        Workload(
            "w10b",
            ONE_TASK,
            SMALL,
            "n/10",
            ONE_TASK_SYSTEMS,
            "one task awaiting push N, pop N (trio) vs a bare to_thread hop per operation",
            backend="trio",
        ),
    )
}


def api_of(kind: str, system: str) -> str:
    """The API a system uses for a kind of workload."""
    system = base_system(system)
    if system == JS_OURS:
        return "rocksq_aio (async, nats://)"
    if system == JS_RAW:
        return "nats-py (JetStream)"
    if system == BARE_HOP:
        return "anyio.to_thread.run_sync"
    if system == ROCKSQ:
        return "rocksq.nonblocking" if kind in (MPSC_ASYNC, SUBMIT_GET) else "rocksq.blocking"
    if system == OURS_NONBLOCKING:
        return "rocksq_aio.nonblocking"
    if system == PQ:
        return "persistqueue.SQLiteQueue"
    if system == PQ_ASYNC:
        return "persistqueue.AsyncSQLiteQueue"
    if kind in ASYNC_KINDS:
        return "rocksq_aio (async)"
    return "rocksq_aio.blocking"
