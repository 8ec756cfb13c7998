"""Concurrency: many threads or tasks on one queue, every item delivered exactly once.

Each worker pushes items of its own (``producer:sequence:padding``) and pops,
for a while; then the test drains the queue and compares multisets: nothing
lost, nothing duplicated, nothing invented, and ``len``/``payload_size`` agree
with the ledger before and after the drain. Where the README's ordering
promises allow it, order is checked too: a consumer sees each producer's items
in the order they were pushed. MPMC: every label receives every added element
exactly once, in one and the same order for all labels.

The normal run works ``SHORT`` seconds per test; the ``stress`` variants
(``make stress``) ``LONG`` seconds. Durations only bound the workload: nothing
asserts on time. ``HANG_GUARD`` only turns a deadlock into a failure.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import rocksq_aio
from rocksq_aio import StartPosition, blocking, nonblocking

from support.items import ALL

pytestmark = pytest.mark.contract

SHORT = 2.0
LONG = 10.0
HANG_GUARD = 180.0
THREADS = 64
TASKS = 1000


def make_item(producer: int, sequence: int, rng: random.Random) -> bytes:
    # Sizes vary so that payload_size is checked for real.
    return b"%04d:%09d:" % (producer, sequence) + b"." * rng.randint(0, 48)


def origin(item: bytes) -> tuple[int, int]:
    producer, sequence, _padding = item.split(b":", 2)
    return int(producer), int(sequence)


@dataclass
class Ledger:
    """One worker's record: batches it appended and items it received."""

    confirmed: list[list[bytes]] = field(default_factory=list)
    """Appends that returned normally."""
    uncertain: list[list[bytes]] = field(default_factory=list)
    """Appends cancelled in flight: stored entirely or not at all."""
    received: list[bytes] = field(default_factory=list)
    next_sequence: int = 0

    def batch(self, producer: int, rng: random.Random, count: int) -> list[bytes]:
        first = self.next_sequence
        self.next_sequence += count
        return [make_item(producer, sequence, rng) for sequence in range(first, first + count)]


def check_exactly_once(
    ledgers: Sequence[Ledger], received: Sequence[bytes], context: str = ""
) -> None:
    """``received`` has each confirmed item once, uncertain batches whole or not, nothing else."""
    counts = Counter(received)
    duplicates = sorted(item for item, count in counts.items() if count > 1)
    assert not duplicates, f"{context}: {len(duplicates)} items delivered twice: {duplicates[:5]}"
    confirmed = [item for ledger in ledgers for batch in ledger.confirmed for item in batch]
    maybe = [item for ledger in ledgers for batch in ledger.uncertain for item in batch]
    phantoms = sorted(set(counts) - set(confirmed) - set(maybe))
    assert not phantoms, f"{context}: delivered but never pushed: {phantoms[:5]}"
    lost = [item for item in confirmed if item not in counts]
    assert not lost, f"{context}: {len(lost)} of {len(confirmed)} items lost: {lost[:5]}"
    for ledger in ledgers:
        for batch in ledger.uncertain:
            present = [item in counts for item in batch]
            assert all(present) or not any(present), f"{context}: half of {batch} was applied"


def check_producer_order(sequence: Sequence[bytes], context: str) -> None:
    """In what one consumer received, each producer's items come in push order."""
    last: dict[int, int] = {}
    for item in sequence:
        producer, number = origin(item)
        previous = last.get(producer, -1)
        assert number > previous, (
            f"{context}: producer {producer}'s item {number} came after its item {previous}"
        )
        last[producer] = number


def check_counters(
    counters: tuple[int | None, int | None], ledgers: Sequence[Ledger], context: str
) -> None:
    """(len, payload_size) before the drain match the ledger (when no append is uncertain)."""
    pushed = [item for ledger in ledgers for batch in ledger.confirmed for item in batch]
    popped = [item for ledger in ledgers for item in ledger.received]
    expected = len(pushed) - len(popped), sum(map(len, pushed)) - sum(map(len, popped))
    assert counters == expected, f"{context}: (len, payload_size) {counters}, expected {expected}"


def join_all(threads: Sequence[threading.Thread]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"threads never finished (deadlock?): {stuck[:5]}"


def run_threads(count: int, target: Any, duration: float) -> None:
    """Run ``target(index, stop)`` in ``count`` threads for ``duration`` s; re-raise errors."""
    stop = threading.Event()
    start = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            start.wait()
            target(index, stop)
        except BaseException as error:
            errors.append(error)
            stop.set()

    threads = [
        threading.Thread(target=body, args=(i,), name=f"w{i}", daemon=True) for i in range(count)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    stop.wait(duration)
    stop.set()
    join_all(threads)
    if errors:
        raise errors[0]


def _seed() -> int:
    return random.randrange(2**32)


# ---------------------------------------------------------------- blocking FIFO


def run_blocking_fifo(path: str, duration: float) -> None:
    seed = _seed()
    context = f"seed {seed}"
    ledgers = [Ledger() for _ in range(THREADS)]
    # Closed only on success: after a deadlock, close() would wait for the stuck lock.
    queue = blocking.PersistentQueueWithCapacity(path)

    def worker(index: int, stop: threading.Event) -> None:
        rng = random.Random(seed * THREADS + index)
        ledger = ledgers[index]
        while not stop.is_set():
            if rng.random() < 0.55:
                batch = ledger.batch(index, rng, rng.randint(1, 5))
                queue.push(batch)
                ledger.confirmed.append(batch)
            else:
                ledger.received.extend(queue.pop(rng.randint(1, 5)))

    run_threads(THREADS, worker, duration)
    counters = queue.len, queue.payload_size
    left = queue.pop(ALL)
    check_exactly_once(
        ledgers, [*left, *(i for ledger in ledgers for i in ledger.received)], context
    )
    check_counters(counters, ledgers, context)
    assert queue.pop(ALL) == [], context
    assert (queue.len, queue.payload_size, queue.is_empty) == (0, 0, True), context
    queue.close()
    for index, ledger in enumerate(ledgers):
        check_producer_order(ledger.received, f"{context}, consumer {index}")
    check_producer_order(left, f"{context}, drain")
    with blocking.PersistentQueueWithCapacity(path) as queue:  # the drained state is on disk
        assert (queue.len, queue.payload_size, queue.pop(ALL)) == (0, 0, []), context


def test_threads_push_and_pop_each_item_exactly_once(queue_path: str) -> None:
    run_blocking_fifo(queue_path, SHORT)


@pytest.mark.stress
def test_stress_threads_push_and_pop_each_item_exactly_once(queue_path: str) -> None:
    run_blocking_fifo(queue_path, LONG)


# ---------------------------------------------------------------- async FIFO


async def async_fifo(path: str, duration: float, seed: int, cancel: bool) -> None:
    """TASKS tasks push and pop (pop_wait too); with ``cancel``, some calls are cancelled."""
    context = f"seed {seed}, cancel={cancel}"
    ledgers = [Ledger() for _ in range(TASKS)]
    queue = rocksq_aio.PersistentQueue(path)  # closed only on success, see run_blocking_fifo
    deadline = anyio.current_time() + duration

    async def worker(index: int) -> None:
        rng = random.Random(seed * TASKS + index)
        ledger = ledgers[index]
        while anyio.current_time() < deadline:
            choice = rng.random()
            cancelled_soon = cancel and rng.random() < 0.2
            with anyio.CancelScope() as scope:
                if cancelled_soon:
                    scope.deadline = anyio.current_time() + rng.uniform(0, 0.003)
                if choice < 0.55:
                    batch = ledger.batch(index, rng, rng.randint(1, 5))
                    try:
                        await queue.push(batch)
                    finally:
                        done = not scope.cancel_called
                        (ledger.confirmed if done else ledger.uncertain).append(batch)
                elif choice < 0.9:
                    ledger.received.extend(await queue.pop(rng.randint(1, 5)))
                else:
                    ledger.received.extend(await queue.pop_wait(rng.randint(1, 5), timeout=0.005))
            if scope.cancel_called and not scope.cancelled_caught and choice < 0.55:
                # The push returned although its deadline had passed: it happened.
                ledger.confirmed.append(ledger.uncertain.pop())

    with anyio.fail_after(duration + HANG_GUARD):
        async with anyio.create_task_group() as tasks:
            for index in range(TASKS):
                tasks.start_soon(worker, index)
    assert queue.inflight_ops == 0, context
    counters = queue.len, queue.payload_size
    left = await queue.pop(ALL)
    received = [*left, *(item for ledger in ledgers for item in ledger.received)]
    check_exactly_once(ledgers, received, context)
    if not cancel:
        check_counters(counters, ledgers, context)
    assert (counters[0], counters[1]) == (len(left), sum(map(len, left))), context
    assert await queue.pop(ALL) == [], context
    assert (queue.len, queue.payload_size, queue.is_empty) == (0, 0, True), context
    await queue.aclose()
    if not cancel:  # a cancelled pop puts its items back at the head, out of order
        for index, ledger in enumerate(ledgers):
            check_producer_order(ledger.received, f"{context}, task {index}")
        check_producer_order(left, f"{context}, drain")


BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


def _run_async(backend: tuple[str, dict[str, Any]], function: Any, *args: Any) -> None:
    name, options = backend
    anyio.run(function, *args, backend=name, backend_options=options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tasks_push_and_pop_each_item_exactly_once(
    queue_path: str, backend: tuple[str, dict[str, Any]]
) -> None:
    _run_async(backend, async_fifo, queue_path, SHORT, _seed(), False)


@pytest.mark.parametrize("backend", BACKENDS[::2])
def test_tasks_cancelled_at_random_lose_and_duplicate_nothing(
    queue_path: str, backend: tuple[str, dict[str, Any]]
) -> None:
    _run_async(backend, async_fifo, queue_path, SHORT, _seed(), True)


@pytest.mark.stress
@pytest.mark.parametrize("cancel", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_stress_tasks_push_and_pop(
    queue_path: str, backend: tuple[str, dict[str, Any]], cancel: bool
) -> None:
    _run_async(backend, async_fifo, queue_path, LONG, _seed(), cancel)


# ---------------------------------------------------------------- nonblocking FIFO


def run_nonblocking_fifo(path: str, duration: float, threads: int = 8) -> None:
    """Threads keep a window of unanswered push/pop Responses; some push Responses are dropped."""
    seed = _seed()
    context = f"seed {seed}"
    ledgers = [Ledger() for _ in range(threads)]
    # Closed only on success, see run_blocking_fifo.
    queue = nonblocking.PersistentQueueWithCapacity(path, max_inflight_ops=32)

    def worker(index: int, stop: threading.Event) -> None:
        rng = random.Random(seed * threads + index)
        ledger = ledgers[index]
        window: list[nonblocking.Response] = []
        while not stop.is_set():
            if rng.random() < 0.55:
                batch = ledger.batch(index, rng, rng.randint(1, 5))
                response = queue.push(batch)
                ledger.confirmed.append(batch)  # a Response dropped still completes
                if rng.random() < 0.8:
                    window.append(response)
            else:
                window.append(queue.pop(rng.randint(1, 5)))
            if len(window) > rng.randint(0, 24):
                ledger.received.extend(window.pop(0).get().data or [])
        for response in window:  # in issue order: the order they were executed
            ledger.received.extend(response.get().data or [])

    run_threads(threads, worker, duration)
    counters = queue.len.get().len, queue.payload_size.get().size
    left = queue.pop(ALL).get().data or []
    popped = [item for ledger in ledgers for item in ledger.received]
    check_exactly_once(ledgers, [*left, *popped], context)
    check_counters(counters, ledgers, context)
    assert queue.pop(ALL).get().data == [], context
    assert (queue.len.get().len, queue.payload_size.get().size) == (0, 0), context
    assert queue.is_empty, context
    queue.close()
    for index, ledger in enumerate(ledgers):
        check_producer_order(ledger.received, f"{context}, thread {index}")
    check_producer_order(left, f"{context}, drain")


def test_nonblocking_responses_from_threads_deliver_each_item_once(queue_path: str) -> None:
    run_nonblocking_fifo(queue_path, SHORT)


@pytest.mark.stress
def test_stress_nonblocking_responses_from_threads(queue_path: str) -> None:
    run_nonblocking_fifo(queue_path, LONG, threads=16)


# ---------------------------------------------------------------- MPMC


SOLO_LABELS = ("red", "green", "blue", "amber")
SHARED_LABEL = "shared"  # read by SHARED_READERS at once
SHARED_READERS = 3


def check_mpmc(
    ledgers: Sequence[Ledger], readers: dict[str, list[list[bytes]]], context: str
) -> None:
    """Every label got every element once; solo labels all in the same order."""
    added = [item for ledger in ledgers for batch in ledger.confirmed for item in batch]
    streams: list[list[bytes]] = []
    for label, received in readers.items():
        everything = [item for reader in received for item in reader]
        check_exactly_once(ledgers, everything, f"{context}, label {label!r}")
        for number, reader in enumerate(received):
            check_producer_order(reader, f"{context}, label {label!r}, reader {number}")
        if len(received) == 1:
            streams.append(everything)
    assert len(streams[0]) == len(added), context
    for stream in streams[1:]:
        assert stream == streams[0], f"{context}: two labels saw the elements in different orders"


def run_mpmc_threads(producers: int, readers: int, target: Any, duration: float) -> None:
    """``target(index, stop, added_all)``: producers (index < producers) run until ``stop``
    (set after ``duration`` s); ``added_all`` is set once they all returned, and readers
    run until they have caught up after that."""
    stop = threading.Event()
    added_all = threading.Event()
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            target(index, stop, added_all)
        except BaseException as error:
            errors.append(error)
            stop.set()

    threads = [
        threading.Thread(target=body, args=(i,), name=f"w{i}", daemon=True)
        for i in range(producers + readers)
    ]
    for thread in threads:
        thread.start()
    try:
        stop.wait(duration)
        stop.set()
        join_all(threads[:producers])
    finally:
        added_all.set()
    join_all(threads[producers:])
    if errors:
        raise errors[0]


def run_blocking_mpmc(path: str, duration: float, producers: int = 4) -> None:
    seed = _seed()
    context = f"seed {seed}"
    ledgers = [Ledger() for _ in range(producers)]
    readers: dict[str, list[list[bytes]]] = {label: [[]] for label in SOLO_LABELS}
    readers[SHARED_LABEL] = [[] for _ in range(SHARED_READERS)]
    jobs = [(label, number) for label, lists in readers.items() for number in range(len(lists))]
    queue = blocking.MpmcQueue(path, 0)  # closed only on success, see run_blocking_fifo

    def worker(index: int, stop: threading.Event, added_all: threading.Event) -> None:
        rng = random.Random(seed * 100 + index)
        if index < producers:
            ledger = ledgers[index]
            while not stop.is_set():
                batch = ledger.batch(index, rng, rng.randint(1, 5))
                queue.add(batch)
                ledger.confirmed.append(batch)
            return
        label, number = jobs[index - producers]
        received = readers[label][number]
        while True:
            finished = added_all.is_set()  # set before this next(): it sees everything
            items, expired = queue.next(label, StartPosition.Oldest, rng.randint(1, 32))
            assert not expired, context
            received.extend(items)
            if not items:
                if finished:
                    return
                time.sleep(0.0005)

    run_mpmc_threads(producers, len(jobs), worker, duration)
    total = sum(len(batch) for ledger in ledgers for batch in ledger.confirmed)
    assert queue.len == total, context
    assert queue.labels == sorted(readers), context
    for label in readers:
        assert queue.next(label, StartPosition.Oldest, ALL) == ([], False), context
    queue.close()
    check_mpmc(ledgers, readers, context)


def test_mpmc_threads_every_label_gets_every_element_once_in_order(queue_path: str) -> None:
    run_blocking_mpmc(queue_path, SHORT)


@pytest.mark.stress
def test_stress_mpmc_threads(queue_path: str) -> None:
    run_blocking_mpmc(queue_path, LONG)


SENTINEL = b"end"
"""Added once every producer task returned: a reader that sees it has seen everything."""


async def async_mpmc(path: str, duration: float, seed: int, producers: int = 10) -> None:
    """Producer tasks add while labels read with next_wait, consume, next and a shared next."""
    context = f"seed {seed}"
    ledgers = [Ledger() for _ in range(producers)]
    readers: dict[str, list[list[bytes]]] = {label: [[]] for label in SOLO_LABELS}
    readers[SHARED_LABEL] = [[] for _ in range(SHARED_READERS)]
    added_all = anyio.Event()
    queue = rocksq_aio.MpmcQueue(path, 0)  # closed only on success, see run_blocking_fifo
    deadline = anyio.current_time() + duration

    async def producer(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        ledger = ledgers[index]
        while anyio.current_time() < deadline:
            batch = ledger.batch(index, rng, rng.randint(1, 5))
            await queue.add(batch)
            ledger.confirmed.append(batch)
            await anyio.sleep(rng.uniform(0, 0.004))  # so that readers keep up

    async def solo(label: str, rng: random.Random) -> None:
        received = readers[label][0]
        if label == "green":
            async with aclosing(queue.consume(label, batch_size=3)) as consumer:
                async for item in consumer:
                    if item == SENTINEL:
                        return
                    received.append(item)
        while True:
            limit = rng.randint(1, 32)
            if label == "red":
                items, expired = await queue.next_wait(label, max_elements=limit)
            else:
                items, expired = await queue.next(label, max_elements=limit)
                if not items:
                    await anyio.sleep(0.0005)
            assert not expired, context
            if items and items[-1] == SENTINEL:
                received.extend(items[:-1])
                return
            received.extend(items)

    async def shared(number: int, rng: random.Random) -> None:
        received = readers[SHARED_LABEL][number]
        while True:
            finished = added_all.is_set()  # set before this next(): it sees everything
            items, expired = await queue.next(SHARED_LABEL, max_elements=rng.randint(1, 32))
            assert not expired, context
            received.extend(item for item in items if item != SENTINEL)
            if not items:
                if finished:
                    return
                await anyio.sleep(0.0005)

    rng = random.Random(seed)
    with anyio.fail_after(duration + HANG_GUARD):
        async with anyio.create_task_group() as reading:
            for label in SOLO_LABELS:
                reading.start_soon(solo, label, random.Random(rng.random()))
            for number in range(SHARED_READERS):
                reading.start_soon(shared, number, random.Random(rng.random()))
            async with anyio.create_task_group() as adding:
                for index in range(producers):
                    adding.start_soon(producer, index)
            await queue.add([SENTINEL])
            added_all.set()
    total = sum(len(batch) for ledger in ledgers for batch in ledger.confirmed)
    assert queue.len == total + 1, context
    assert queue.labels == sorted(readers), context
    for label in readers:
        assert await queue.next(label, StartPosition.Oldest, ALL) == ([], False), context
    await queue.aclose()
    check_mpmc(ledgers, readers, context)


@pytest.mark.parametrize("backend", BACKENDS[::2])
def test_mpmc_tasks_every_label_gets_every_element_once_in_order(
    queue_path: str, backend: tuple[str, dict[str, Any]]
) -> None:
    _run_async(backend, async_mpmc, queue_path, SHORT, _seed())


@pytest.mark.stress
@pytest.mark.parametrize("backend", BACKENDS[::2])
def test_stress_mpmc_tasks(queue_path: str, backend: tuple[str, dict[str, Any]]) -> None:
    _run_async(backend, async_mpmc, queue_path, LONG, _seed())
