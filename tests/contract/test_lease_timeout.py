"""Lease timeouts: a reservation not settled in time goes back to the queue by itself.

The blocking tests drive the lease clock by hand (``clock=FakeClock``); the
async ones use the real clock, to show that waiters wake at the deadline on
asyncio, uvloop and trio without anyone polling the queue.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

import rocksq_aio
from rocksq_aio.blocking import (
    LeaseExpiredError,
    MpmcQueue,
    PersistentQueueWithCapacity,
)

from support.clock import FakeClock
from support.differences import CONSUMER_SEMANTICS_NOT_YET

pytestmark = [pytest.mark.contract, CONSUMER_SEMANTICS_NOT_YET]

ALL = 1_000_000
A, B, C, D = b"a", b"b", b"c", b"d"


def fifo(path: str, clock: FakeClock, timeout: float | None = 10, **options: Any) -> Any:
    return PersistentQueueWithCapacity(path, clock=clock, lease_timeout=timeout, **options)


def test_an_unsettled_reservation_is_delivered_again_first_at_its_deadline(
    queue_path: str, clock: FakeClock
) -> None:
    with fifo(queue_path, clock) as queue:
        queue.push([A, B, C, D])
        hung = queue.reserve_batch(2)
        clock.advance(9.999)
        assert queue.reserve_batch(1).items == [C]  # still leased: not back yet
        assert queue.pending == 3
        clock.advance(0.001)
        assert queue.pop(ALL) == [A, B, D]  # a, b released first, then the rest
        assert queue.pending == 1  # the reservation of c is 10 ms younger
        for settle in (hung.ack, hung.nack, hung.extend):
            with pytest.raises(LeaseExpiredError, match="expired"):
                settle()
        assert not hung.settled
        assert (queue.len, queue.pending) == (0, 1)


def test_extend_renews_the_lease_from_now(queue_path: str, clock: FakeClock) -> None:
    with fifo(queue_path, clock) as queue:
        queue.push([A, B])
        batch = queue.reserve_batch(1)
        for _ in range(5):
            clock.advance(8)
            batch.extend()  # a heartbeat: 40 s in all, never 10 without one
            assert queue.pop(ALL) == [B] or queue.len == 0
        assert queue.pending == 1
        clock.advance(9)
        batch.ack()
        clock.advance(100)
        assert (queue.pop(ALL), queue.pending) == ([], 0)
        batch.extend()  # settled already: changes nothing, as a second ack does


def test_leases_that_expire_together_come_back_oldest_first(
    queue_path: str, clock: FakeClock
) -> None:
    with fifo(queue_path, clock) as queue:
        queue.push([A, B, C, D])
        first = queue.reserve_batch(1)
        second = queue.reserve_batch(2)
        first.extend()  # no later than the other: both expire at the same reading
        clock.advance(10)
        assert queue.pop(ALL) == [A, B, C, D]
        del second


@pytest.mark.parametrize("via", ["push", "pop", "pop-many", "reserve", "peek-len"])
def test_every_operation_releases_expired_leases_first(
    queue_path: str, clock: FakeClock, via: str
) -> None:
    with fifo(queue_path, clock) as queue:
        queue.push([A])
        queue.reserve_batch(1)
        clock.advance(10)
        assert queue.pending == 1  # nothing ran since: properties do no work
        if via == "push":
            queue.push([B])
            assert queue.pop(ALL) == [A, B]
        elif via == "pop":
            assert queue.pop() == [A]
        elif via == "pop-many":
            assert queue.pop(5) == [A]
        elif via == "reserve":
            assert queue.reserve_batch(5).items == [A]
        else:
            queue.push([])
            assert queue.len == 1
        assert queue.pending == (1 if via == "reserve" else 0)


def test_without_a_lease_timeout_a_reservation_waits_for_its_settle(
    queue_path: str, clock: FakeClock
) -> None:
    with fifo(queue_path, clock, timeout=None) as queue:
        queue.push([A])
        batch = queue.reserve_batch(1)
        batch.extend()  # nothing to renew
        clock.advance(10**9)
        assert (queue.pop(ALL), queue.pending, queue.lease_timeout) == ([], 1, None)
        batch.nack()
        assert queue.pop(ALL) == [A]


def test_an_expired_settle_fails_alone_in_its_group(queue_path: str, clock: FakeClock) -> None:
    from rocksq_aio._dispatch import pop_operation, push_operation, settle_operation

    with fifo(queue_path, clock) as queue:
        queue.push([A])
        hung = queue.reserve_batch(1)
        clock.advance(10)
        engine = queue._engine
        operations = [
            settle_operation(hung._reservation, ack=True),
            push_operation([B]),
            pop_operation(5),
        ]
        for operation in operations:
            engine.submit(operation)
        engine.drain()
        with pytest.raises(LeaseExpiredError):
            operations[0].outcome()
        assert operations[2].outcome() == [A, B]


def test_a_reopen_gives_back_leases_whatever_their_deadline(
    queue_path: str, clock: FakeClock
) -> None:
    queue = fifo(queue_path, clock)
    queue.push([A, B])
    queue.reserve_batch(1)
    queue.close()
    with fifo(queue_path, clock) as reopened:
        batch = reopened.reserve_batch(5)
        assert batch.items == [A, B]
        clock.advance(5)
        batch.extend()
        clock.advance(9)
        batch.ack()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"lease_timeout": 0}, ValueError, "lease_timeout"),
        ({"lease_timeout": -1.5}, ValueError, "lease_timeout"),
        ({"lease_timeout": math.nan}, ValueError, "lease_timeout"),
        ({"lease_timeout": math.inf}, ValueError, "lease_timeout"),
        ({"lease_timeout": "10"}, TypeError, "lease_timeout"),
        ({"lease_timeout": True}, TypeError, "lease_timeout"),
        ({"max_deliveries": 0}, ValueError, "max_deliveries"),
        ({"max_deliveries": 2.0}, TypeError, "max_deliveries"),
        ({"clock": "now"}, TypeError, "clock"),
    ],
)
def test_bad_lease_options_are_refused_before_anything_is_written(
    queue_path: str, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    import os

    with pytest.raises(error, match=match):
        PersistentQueueWithCapacity(queue_path, **options)
    with pytest.raises(error, match=match):
        MpmcQueue(queue_path, 0, **options)
    assert not os.path.exists(queue_path)
    with PersistentQueueWithCapacity(queue_path) as queue:  # the path was never claimed
        assert queue.lease_timeout is None


# ---------------------------------------------------------------- MPMC


def test_mpmc_an_expired_lease_goes_back_to_its_label_first(
    queue_path: str, clock: FakeClock
) -> None:
    with MpmcQueue(queue_path, 0, clock=clock, lease_timeout=10) as queue:
        queue.add([A, B, C])
        hung = queue.reserve_batch("L", max_elements=2)
        kept = queue.reserve_batch("M", max_elements=1)
        clock.advance(5)
        kept.extend()
        clock.advance(5)
        assert queue.next("L", max_elements=ALL) == ([A, B], False)
        assert queue.next("L", max_elements=ALL) == ([C], False)
        assert (queue.pending("L"), queue.pending("M")) == (0, 1)
        with pytest.raises(LeaseExpiredError):
            hung.nack()
        clock.advance(4)  # 14 s: extended at 5, so it lasts until 15
        kept.ack()
        assert queue.next("M", max_elements=ALL) == ([B, C], False)


@pytest.mark.parametrize("via", ["add", "next"])
def test_mpmc_the_one_item_paths_release_expired_leases_first(
    queue_path: str, clock: FakeClock, via: str
) -> None:
    with MpmcQueue(queue_path, 0, clock=clock, lease_timeout=10) as queue:
        queue.add([A])
        assert queue.next("L") == ([A], False)  # L is known: next() may take its fast path
        queue.add([B])
        queue.reserve_batch("L")
        clock.advance(10)
        if via == "add":
            queue.add([C])
        else:
            assert queue.next("other") == ([A], False)
        assert queue.pending("L") == 0
        assert queue.next("L") == ([B], False)


# ---------------------------------------------------------------- waking waiters

TIMEOUT = 0.05


@pytest.mark.anyio
@pytest.mark.parametrize("waiter", ["pop_wait", "reserve_batch", "iterator"])
async def test_a_waiter_gets_the_items_of_a_hung_consumer_at_its_deadline(
    queue_path: str, waiter: str
) -> None:
    async with rocksq_aio.PersistentQueue(queue_path, lease_timeout=TIMEOUT) as queue:
        await queue.push([A, B])
        hung = await queue.reserve_batch(2)  # its consumer never settles
        with anyio.fail_after(10):  # without a wake-up at the deadline, forever
            if waiter == "pop_wait":
                got = await queue.pop_wait(5)
            elif waiter == "reserve_batch":
                got = (await queue.reserve_batch(5)).items
            else:
                got = []
                async for item in queue:
                    got.append(item)
                    if len(got) == 2:
                        break
        assert got == [A, B]
        with pytest.raises(LeaseExpiredError):
            await hung.ack()


@pytest.mark.anyio
async def test_a_waiter_that_started_before_the_lease_wakes_at_its_deadline(
    queue_path: str,
) -> None:
    """A lease made while a waiter sleeps makes it arm its timer again: nobody else acts here."""
    async with rocksq_aio.MpmcQueue(queue_path, 0, lease_timeout=TIMEOUT) as queue:
        await queue.add([A])
        assert await queue.next("idle") == ([A], False)
        async with anyio.create_task_group() as tasks:
            # Waits for a label with nothing to read; no lease exists yet.
            tasks.start_soon(queue.next_wait, "idle")
            await anyio.sleep(0.01)
            await queue.reserve_batch("hung")  # never settled
            with anyio.fail_after(10):
                while queue.pending("hung"):  # released only by the waiter's wake-up
                    await anyio.sleep(0.005)
            tasks.cancel_scope.cancel()
        assert await queue.next("hung") == ([A], False)
