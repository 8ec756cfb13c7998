"""Deliveries: how many times each reserved item has been handed out, kept across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rocksq_aio._dispatch import Stage, give_back_operation, pop_operation
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.clock import FakeClock
from support.differences import CONSUMER_SEMANTICS_NOT_YET

pytestmark = [pytest.mark.contract, CONSUMER_SEMANTICS_NOT_YET]

ALL = 1_000_000
A, B, C = b"a", b"b", b"c"


def crash(queue: Any) -> None:
    """What kill -9 leaves of a queue: its writes, but no close (memory: the name freed)."""
    engine = queue._engine
    if hasattr(engine, "_store") and hasattr(engine._store, "apply"):
        engine._store.close()
    else:
        engine.close()


def test_each_release_counts_one_more_delivery(queue_path: str, clock: FakeClock) -> None:
    with PersistentQueueWithCapacity(queue_path, clock=clock, lease_timeout=5) as queue:
        queue.push([A, B])
        first = queue.reserve_batch(1)
        assert (first.items, first.deliveries) == ([A], [1])
        first.nack()
        second = queue.reserve_batch(2)
        assert (second.items, second.deliveries) == ([A, B], [2, 1])
        clock.advance(5)  # expires: released as by a nack
        third = queue.reserve_batch(2)
        assert (third.items, third.deliveries) == ([A, B], [3, 2])
        third.ack()
        queue.push([A])  # a new item, however equal to an old one
        assert queue.reserve_batch(1).deliveries == [1]


@pytest.mark.parametrize("ending", ["close", "crash"])
def test_deliveries_survive_a_restart(queue_path: str, ending: str) -> None:
    queue = PersistentQueueWithCapacity(queue_path)
    queue.push([A, B, C])
    queue.reserve_batch(1).nack()  # a: 1, back in the queue
    queue.reserve_batch(2)  # a: 2, b: 1, leased when the process ends
    crash(queue) if ending == "crash" else queue.close()
    queue = PersistentQueueWithCapacity(queue_path)
    batch = queue.reserve_batch(1)
    assert (batch.items, batch.deliveries) == ([A], [3])
    batch.nack()
    crash(queue) if ending == "crash" else queue.close()
    with PersistentQueueWithCapacity(queue_path) as reopened:
        batch = reopened.reserve_batch(5)
        assert (batch.items, batch.deliveries) == ([A, B, C], [4, 2, 1])


def test_a_pop_takes_an_item_whatever_its_deliveries_and_a_give_back_restores_them(
    queue_path: str,
) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([A, B, C])
        queue.reserve_batch(2).nack()
        # A cancelled pop: done, then given back as the worker does.
        read = pop_operation(2)
        queue._engine.run(read)
        assert read.stage is Stage.DONE and read.result == [A, B]
        queue._engine.run(give_back_operation(read, 1))  # a delivered, b given back
        batch = queue.reserve_batch(5)
        assert (batch.items, batch.deliveries) == ([B, C], [2, 1])
        batch.nack()
        assert queue.pop(ALL) == [B, C]
        assert queue.reserve_batch(1).items == []
        queue.push([B])
        assert queue.reserve_batch(1).deliveries == [1]  # the count left with the popped b


def test_mpmc_deliveries_are_per_label_and_survive_a_restart(queue_path: str) -> None:
    queue = MpmcQueue(queue_path, 0)
    queue.add([A, B])
    queue.reserve_batch("L", max_elements=2).nack()
    batch = queue.reserve_batch("L", max_elements=1)
    assert (batch.items, batch.deliveries) == ([A], [2])
    other = queue.reserve_batch("M", max_elements=2)
    assert (other.items, other.deliveries) == ([A, B], [1, 1])
    other.ack()
    crash(queue)
    queue = MpmcQueue(queue_path, 0)
    batch = queue.reserve_batch("L", max_elements=5)
    assert (batch.items, batch.deliveries) == ([A, B], [3, 2])
    batch.nack()
    queue.close()
    with MpmcQueue(queue_path, 0) as reopened:
        # next() hands them out for good: their count goes with them.
        assert reopened.next("L", max_elements=1) == ([A], False)
        batch = reopened.reserve_batch("L", max_elements=5)
        assert (batch.items, batch.deliveries) == ([B], [3])


@pytest.mark.rocksdb_only
def test_a_version_2_directory_counts_its_leases_as_delivered_once(queue_path: str) -> None:
    """v2 lease values are the item alone; the open upgrades them with the rest of the queue."""
    from rocksq_aio.rocksdb.format import (
        FIFO_FORMAT_V2,
        FORMAT_KEY,
        META_CF,
        RESERVED_CF,
        decode_fifo_lease,
    )

    from support.rocksdb import raw_database

    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([A, B, C])
        queue.reserve_batch(2)
    with raw_database(Path(queue_path)) as families:
        for key, value in list(families[RESERVED_CF].items()):
            families[RESERVED_CF][key] = decode_fifo_lease(value)[2]
        families[META_CF][FORMAT_KEY] = FIFO_FORMAT_V2
    with PersistentQueueWithCapacity(queue_path) as reopened:
        batch = reopened.reserve_batch(5)
        assert (batch.items, batch.deliveries) == ([A, B, C], [2, 2, 1])
        assert reopened._engine._store.get(META_CF, FORMAT_KEY) == b"rocksq_aio.fifo.v3"


@pytest.mark.rocksdb_only
def test_a_version_2_mpmc_directory_is_upgraded_with_its_items_given_back(
    queue_path: str,
) -> None:
    from rocksq_aio.rocksdb.format import (
        FORMAT_KEY,
        GIVEN_BACK_CF,
        META_CF,
        MPMC_FORMAT_V2,
        RESERVED_CF,
        decode_given_back,
        decode_mpmc_lease,
        encode_items,
    )

    from support.rocksdb import raw_database

    with MpmcQueue(queue_path, 0) as queue:
        queue.add([A, B, C])
        queue.reserve_batch("L", max_elements=1).nack()  # a: given back to L
        queue.reserve_batch("M", max_elements=2)  # leased at close
    with raw_database(Path(queue_path)) as families:
        for key, value in list(families[GIVEN_BACK_CF].items()):
            items = [item for item, _n in decode_given_back(key, value)]
            families[GIVEN_BACK_CF][key] = encode_items(items)
        for key, value in list(families[RESERVED_CF].items()):
            items = [item for item, _n in decode_mpmc_lease(key, value)[1]]
            families[RESERVED_CF][key] = encode_items(items)
        families[META_CF][FORMAT_KEY] = MPMC_FORMAT_V2
    with MpmcQueue(queue_path, 0) as reopened:
        assert reopened._engine._store.get(META_CF, FORMAT_KEY) == b"rocksq_aio.mpmc.v3"
        # v2 kept no count for items given back: a starts again at 1.
        assert reopened.reserve_batch("L", max_elements=5).deliveries == [1]
        assert reopened.reserve_batch("M", max_elements=5).deliveries == [2, 2]
