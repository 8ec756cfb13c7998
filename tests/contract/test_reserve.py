"""At-least-once consumption of FIFO queues: reserve, then acknowledge or release."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import anyio
import pytest

from rocksq_aio import PersistentQueue
from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.processes import kill_when_ready

pytestmark = pytest.mark.contract

ALL = 1_000_000


def test_a_successful_block_removes_the_items(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a", b"bb", b"ccc"])
        with queue.reserve(2) as items:
            assert items == [b"a", b"bb"]
            assert (queue.len, queue.pending, queue.payload_size) == (1, 2, 3)
        assert (queue.len, queue.pending, queue.payload_size) == (1, 0, 3)
        assert queue.pop(ALL) == [b"ccc"]


def test_an_exception_puts_the_items_back_at_the_head_in_order(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a", b"b", b"c"])
        with pytest.raises(RuntimeError, match="boom"), queue.reserve(2) as items:
            assert items == [b"a", b"b"]
            raise RuntimeError("boom")
        assert (queue.len, queue.pending, queue.payload_size) == (3, 0, 3)
        assert queue.pop(ALL) == [b"a", b"b", b"c"]


def test_reserving_from_an_empty_queue_gives_nothing(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        with queue.reserve(5) as items:
            assert items == []
        batch = queue.reserve_batch(3)
        assert batch.items == []
        batch.ack()
        batch.nack()
        assert queue.len == 0


def test_settling_twice_changes_nothing(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a", b"b"])
        batch = queue.reserve_batch(1)
        batch.ack()
        batch.nack()  # already settled: must not bring b"a" back
        batch.ack()
        assert batch.settled
        assert queue.pop(ALL) == [b"b"]


def test_out_of_order_settlement(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"1", b"2", b"3", b"4"])
        first = queue.reserve_batch(2)
        second = queue.reserve_batch(1)
        assert (first.items, second.items, queue.pending) == ([b"1", b"2"], [b"3"], 3)
        second.ack()
        first.nack()
        assert queue.pending == 0
        assert queue.pop(ALL) == [b"1", b"2", b"4"]


def test_unsettled_items_come_back_after_reopening(queue_path: str) -> None:
    queue = PersistentQueueWithCapacity(queue_path)
    queue.push([b"a", b"b", b"c", b"d"])
    done = queue.reserve_batch(1)
    done.ack()
    queue.reserve_batch(2)  # never settled
    queue.close()
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert (reopened.len, reopened.pending, reopened.payload_size) == (3, 0, 3)
        assert reopened.pop(ALL) == [b"b", b"c", b"d"]


@pytest.mark.rocksdb_only
def test_items_reserved_by_a_killed_process_are_delivered_again(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"%d" % number for number in range(10)])
    child = textwrap.dedent(
        f"""
        import sys, time
        from rocksq_aio.blocking import PersistentQueueWithCapacity
        queue = PersistentQueueWithCapacity({queue_path!r})
        with queue.reserve(3):
            pass                              # acknowledged: gone for good
        batch = queue.reserve_batch(4)        # processing when the process dies
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    kill_when_ready(child)
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert reopened.pop(ALL) == [b"%d" % number for number in range(3, 10)]


@pytest.mark.anyio
async def test_async_reserve_acknowledges_on_success_and_releases_on_error(
    queue_path: str,
) -> None:
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"a", b"b", b"c"])
        async with queue.reserve(1) as items:
            assert items == [b"a"]
            assert queue.pending == 1
        with pytest.raises(KeyError):
            async with queue.reserve(2) as items:
                assert items == [b"b", b"c"]
                raise KeyError("not processed")
        assert (queue.len, queue.pending) == (2, 0)
        assert await queue.pop(ALL) == [b"b", b"c"]


@pytest.mark.anyio
async def test_async_reserve_waits_for_items_and_times_out(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        batch = await queue.reserve_batch(2, timeout=0.01)
        assert batch.items == []
        received: list[bytes] = []

        async def consumer() -> None:
            async with queue.reserve(2) as items:
                received.extend(items)

        async with anyio.create_task_group() as group:
            group.start_soon(consumer)
            await anyio.sleep(0.01)
            await queue.push([b"late"])
        assert received == [b"late"]
        assert queue.len == 0


@pytest.mark.anyio
async def test_cancellation_inside_the_block_releases_the_items(queue_path: str) -> None:
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"a", b"b"])
        with anyio.move_on_after(0.01):
            async with queue.reserve(2) as items:
                assert items == [b"a", b"b"]
                await anyio.sleep(10)
        assert (queue.len, queue.pending) == (2, 0)
        assert await queue.pop(ALL) == [b"a", b"b"]


@pytest.mark.anyio
async def test_cancelled_reservations_never_lose_an_item(
    queue_path: str, anyio_backend_name: str
) -> None:
    """Thousands of reservations cancelled at random points: every item is processed."""
    pushed = [b"%05d" % number for number in range(300)]
    # A trio thread hop takes longer here: with asyncio's timeouts nearly every
    # reservation was cancelled, and the run took 20-70 s instead of ~1.
    unit = 0.002 if anyio_backend_name == "trio" else 0.0005
    processed: list[bytes] = []
    async with PersistentQueue(queue_path) as queue:
        await queue.push(pushed)

        async def worker(seed: int) -> None:
            while queue.len or queue.pending:
                with anyio.move_on_after(unit * (seed % 4)):
                    async with queue.reserve(1 + seed % 3) as items:
                        await anyio.sleep(0)
                        processed.extend(items)  # only reached when not cancelled
                # A worker cancelled at once would otherwise spin on the loop
                # and starve the worker thread of the GIL (a livelock, not a loss).
                await anyio.sleep(0.0002)

        with anyio.fail_after(120):  # a lost item would make the workers loop forever
            async with anyio.create_task_group() as group:
                for seed in range(8):
                    group.start_soon(worker, seed)
        assert sorted(processed) == pushed  # at least once, and here exactly once
        assert (queue.len, queue.pending, queue.payload_size) == (0, 0, 0)


def test_a_push_grouped_with_a_later_ack_wakes_waiters(queue_path: str) -> None:
    """arrivals, which waiters watch, counts a push even when an ack follows it in the group."""
    from rocksq_aio._dispatch import push_operation, settle_operation

    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a"])
        batch = queue.reserve_batch(1)
        engine = queue._engine
        before = engine.arrivals
        engine.submit(push_operation([b"b"]))
        engine.submit(settle_operation(batch._reservation, ack=True))
        engine.drain()
        assert engine.arrivals > before
        assert queue.pop(ALL) == [b"b"]


@pytest.mark.parametrize("cache_bytes", [0, 10, 8 << 20])
def test_random_reservations_match_a_model(queue_path: str, cache_bytes: int) -> None:
    """Reserve, acknowledge and release in random order, also inside one group commit."""
    import random

    from rocksq_aio._dispatch import reserve_operation, settle_operation
    from rocksq_aio.blocking import ReservedBatch

    rng = random.Random(cache_bytes)
    model: list[bytes] = []
    batches: list[ReservedBatch] = []
    pushed = 0
    with PersistentQueueWithCapacity(queue_path, cache_bytes=cache_bytes) as queue:
        for _step in range(400):
            roll = rng.random()
            if roll < 0.3:
                items = [b"%d" % (pushed + offset) for offset in range(rng.randint(1, 3))]
                pushed += len(items)
                queue.push(items)
                model.extend(items)
            elif roll < 0.5:
                batch = queue.reserve_batch(rng.randint(1, 3))
                assert batch.items == model[: len(batch.items)]
                del model[: len(batch.items)]
                batches.append(batch)
            elif roll < 0.65 and batches:
                batches.pop(rng.randrange(len(batches))).ack()
            elif roll < 0.8 and batches:
                batch = batches.pop(rng.randrange(len(batches)))
                batch.nack()
                model[:0] = batch.items
            elif batches:
                # One group: a reservation, then the release of an older lease.
                older = batches.pop(rng.randrange(len(batches)))
                reserve = reserve_operation(rng.randint(1, 2))
                engine = queue._engine
                engine.submit(reserve)
                engine.submit(settle_operation(older._reservation, ack=False))
                engine.drain()
                reservation = reserve.outcome()
                assert reservation.items == model[: len(reservation.items)]
                del model[: len(reservation.items)]
                model[:0] = older.items
                batches.append(ReservedBatch(engine, reservation))
            assert queue.len == len(model)
            assert queue.pending == sum(len(batch.items) for batch in batches)
        assert queue.pop(ALL) == model


# ---------------------------------------------------------------- MPMC


def test_mpmc_reserve_acknowledged_moves_on_released_comes_back(queue_path: str) -> None:
    from rocksq_aio.blocking import MpmcQueue

    with MpmcQueue(queue_path, 0) as queue:
        queue.add([b"a", b"b", b"c", b"d"])
        with queue.reserve("L", max_elements=2) as items:
            assert items == [b"a", b"b"]
            assert queue.pending("L") == 2
        assert queue.pending("L") == 0
        with pytest.raises(ValueError), queue.reserve("L", max_elements=1) as items:
            assert items == [b"c"]
            raise ValueError("not processed")
        assert queue.next("L", max_elements=ALL) == ([b"c"], False)
        assert queue.next("L", max_elements=ALL) == ([b"d"], False)
        # Other labels are not affected by L's reservations.
        assert queue.next("other", max_elements=ALL) == ([b"a", b"b", b"c", b"d"], False)


def test_mpmc_unacknowledged_items_are_redelivered_after_reopening(queue_path: str) -> None:
    from rocksq_aio.blocking import MpmcQueue

    queue = MpmcQueue(queue_path, 0)
    queue.add([b"%d" % number for number in range(6)])
    acknowledged = queue.reserve_batch("L", max_elements=2)
    acknowledged.ack()
    queue.reserve_batch("L", max_elements=2)  # never settled: the process "dies"
    queue.close()
    with MpmcQueue(queue_path, 0) as reopened:
        assert reopened.pending("L") == 0
        assert reopened.next("L", max_elements=ALL) == ([b"2", b"3"], False)
        assert reopened.next("L", max_elements=ALL) == ([b"4", b"5"], False)


@pytest.mark.rocksdb_only
def test_mpmc_items_reserved_by_a_killed_process_are_delivered_again(queue_path: str) -> None:
    from rocksq_aio.blocking import MpmcQueue

    with MpmcQueue(queue_path, 0) as queue:
        queue.add([b"%d" % number for number in range(8)])
    child = textwrap.dedent(
        f"""
        import time
        from rocksq_aio.blocking import MpmcQueue
        queue = MpmcQueue({queue_path!r}, 0)
        with queue.reserve("L", max_elements=3):
            pass
        queue.reserve_batch("L", max_elements=2)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    kill_when_ready(child)
    with MpmcQueue(queue_path, 0) as reopened:
        delivered, _ = reopened.next("L", max_elements=ALL)
        delivered += reopened.next("L", max_elements=ALL)[0]
        assert delivered == [b"3", b"4", b"5", b"6", b"7"]


@pytest.mark.anyio
async def test_mpmc_async_reserve_with_cancellation_delivers_every_item(
    queue_path: str, anyio_backend_name: str
) -> None:
    from rocksq_aio import MpmcQueue

    # trio's thread hops are slower: with asyncio's timeouts nearly every
    # reservation would be cancelled, and the test would take minutes.
    unit = 0.002 if anyio_backend_name == "trio" else 0.0005
    added = [b"%04d" % number for number in range(120)]
    processed: list[bytes] = []
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add(added)

        async def worker(seed: int) -> None:
            while len(processed) < len(added):
                with anyio.move_on_after(unit * (seed % 3)):
                    async with queue.reserve("L", max_elements=1 + seed % 2, timeout=0.05) as items:
                        await anyio.sleep(0)
                        processed.extend(items)
                # A worker cancelled at once would otherwise spin on the loop
                # and starve the worker thread of the GIL (a livelock, not a loss).
                await anyio.sleep(0.0002)

        with anyio.fail_after(120):  # a lost item would make the workers loop forever
            async with anyio.create_task_group() as group:
                for seed in range(6):
                    group.start_soon(worker, seed)
        assert sorted(processed) == added
        assert queue.pending("L") == 0


_CONSUMER = """
import sys
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
kind, path = sys.argv[1], sys.argv[2]
queue = PersistentQueueWithCapacity(path) if kind == "fifo" else MpmcQueue(path, 0)
size = 1
while True:
    if kind == "fifo":
        batch = queue.reserve_batch(size)
    else:
        batch = queue.reserve_batch("L", max_elements=size)
    if not batch.items:
        print("empty", flush=True)
        break
    for item in batch.items:
        print("processed", item.decode(), flush=True)
    batch.ack()
    print("acked", " ".join(item.decode() for item in batch.items), flush=True)
    size = size % 3 + 1
"""


@pytest.mark.rocksdb_only
@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_reserve_survives_repeated_kills(queue_path: str, kind: str) -> None:
    """After any number of kills every item is processed at least once, and an item is
    processed twice only if a reservation holding it was not acknowledged."""
    import random

    from rocksq_aio.blocking import MpmcQueue

    items = [b"%05d" % number for number in range(3000)]
    if kind == "fifo":
        with PersistentQueueWithCapacity(queue_path) as queue:
            queue.push(items)
    else:
        with MpmcQueue(queue_path, 0) as stream:
            stream.add(items)
    rng = random.Random(7)
    processed: list[str] = []
    acked: set[str] = set()
    unacked_processing: set[str] = set()
    finished = False
    for _attempt in range(40):
        process = subprocess.Popen(
            [sys.executable, "-c", _CONSUMER, kind, queue_path],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        lines: list[str] = []
        for _line in range(rng.randint(5, 300)):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        # The consumer ran ahead of our reading: take everything it printed.
        lines.extend(process.stdout.read().splitlines(keepends=True))
        process.stdout.close()
        in_flight: list[str] = []
        # A line cut by the kill is no report at all.
        for words in (line.split() for line in lines if line.endswith("\n")):
            if words[0] == "empty":
                finished = True
            elif words[0] == "processed":
                processed.append(words[1])
                in_flight.append(words[1])
            else:
                acked.update(words[1:])
                in_flight = []
        unacked_processing.update(in_flight)
        if finished:
            break
    assert finished, "the consumer never got to the end of the queue"
    assert _attempt >= 3, "too few kills to test anything"
    counts: dict[str, int] = {}
    for item in processed:
        counts[item] = counts.get(item, 0) + 1
    assert sorted(counts) == [item.decode() for item in items]  # everything at least once
    duplicates = {item for item, count in counts.items() if count > 1}
    assert duplicates <= unacked_processing, "an acknowledged item was delivered again"
