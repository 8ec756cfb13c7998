"""Leases of FIFO reservations: which items a reopen gives back, and that none is lost.

A nack puts items back below the head, under indices a later reservation may
still hold leases on; each lease is kept under its reservation's number as
well, so that neither reservation's items are lost or given back twice.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rocksq_aio
from rocksq_aio.blocking import LeaseExpiredError, PersistentQueueWithCapacity, ReservedBatch

pytestmark = pytest.mark.contract

ALL = 1_000_000
A, B, C, D, E = b"a", b"b", b"c", b"d", b"e"


def test_a_nack_under_a_later_lease_loses_nothing_at_reopen(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([A, B, C, D, E])
        first = queue.reserve_batch(2)
        second = queue.reserve_batch(2)
        first.nack()  # a, b go back under the indices c and d had
        assert (queue.len, queue.pending) == (3, 2)
    # The open gives back the reservation it finds in front of the head.
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert (reopened.len, reopened.pending, reopened.payload_size) == (5, 0, 5)
    with PersistentQueueWithCapacity(queue_path) as again:
        assert again.pop(ALL) == [C, D, A, B, E]
    assert second.items == [C, D]


def test_an_ack_of_one_reservation_keeps_the_lease_of_another_on_the_same_index(
    queue_path: str,
) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([A, B, C, D, E])
        first = queue.reserve_batch(2)
        second = queue.reserve_batch(2)
        first.nack()
        third = queue.reserve_batch(2)  # a and b again, under the indices second leases
        assert third.items == [A, B]
        second.ack()  # c and d are done; a and b are still third's
        assert queue.pending == 2
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert reopened.pop(ALL) == [A, B, E]


def test_reservations_left_at_close_come_back_oldest_first(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([A, B, C, D, E])
        queue.reserve_batch(1)
        queue.reserve_batch(2)
        queue.pop(1)
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert reopened.pop(ALL) == [A, B, C, E]


# ---------------------------------------------------------------- against a model

PUSH = st.tuples(st.just("push"), st.integers(1, 6))
RESERVE = st.tuples(st.just("reserve"), st.integers(1, 3))
# Mostly the oldest reservations: nacking one under a later lease is what lost items.
NACK = st.tuples(st.just("nack"), st.integers(0, 7) | st.just(0))
# Reservations and nacks come up most: a lost item takes several in a row.
STEPS = st.lists(
    st.one_of(
        PUSH,
        PUSH,
        RESERVE,
        RESERVE,
        RESERVE,
        NACK,
        NACK,
        st.tuples(st.just("pop"), st.integers(1, 2)),
        st.tuples(st.just("ack"), st.integers(0, 7)),
        st.tuples(st.just("reopen")),
    ),
    min_size=6,
    max_size=30,
)
_examples = itertools.count()


@contextlib.contextmanager
def fresh_queue(base: str) -> Iterator[str]:
    """A new queue's path for each hypothesis example (the fixture's path is per test)."""
    path = f"{base}-{next(_examples)}"
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            rocksq_aio.remove_queue(path)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
def test_reservations_nacks_and_reopens_deliver_every_item_exactly_once(
    queue_path: str, steps: list[tuple[Any, ...]]
) -> None:
    """Each item pushed is popped or acked exactly once, or still in the queue at the end.

    The model: a nack puts its items in front of the head; a reopen puts
    every unsettled reservation there, oldest first, each in its order.
    """
    with fresh_queue(queue_path) as path:
        queue = PersistentQueueWithCapacity(path)
        model: deque[bytes] = deque()
        batches: list[ReservedBatch] = []
        consumed: list[bytes] = []
        numbers = itertools.count()
        try:
            for kind, *arguments in [("push", 6), *steps]:
                if kind == "push":
                    items = [b"%d" % next(numbers) for _ in range(arguments[0])]
                    queue.push(items)
                    model.extend(items)
                elif kind == "reserve":
                    batch = queue.reserve_batch(arguments[0])
                    expected = [model.popleft() for _ in range(min(arguments[0], len(model)))]
                    assert batch.items == expected
                    if batch.items:
                        batches.append(batch)
                elif kind == "pop":
                    popped = queue.pop(arguments[0])
                    assert popped == [model.popleft() for _ in range(len(popped))]
                    consumed.extend(popped)
                elif kind in ("ack", "nack") and batches:
                    batch = batches.pop(arguments[0] % len(batches))
                    if kind == "ack":
                        batch.ack()
                        consumed.extend(batch.items)
                    else:
                        batch.nack()
                        model.extendleft(reversed(batch.items))
                elif kind == "reopen":
                    queue.close()
                    queue = PersistentQueueWithCapacity(path)
                    for batch in reversed(batches):
                        model.extendleft(reversed(batch.items))
                    batches = []
                assert (queue.len, queue.pending) == (
                    len(model),
                    sum(len(batch.items) for batch in batches),
                )
            queue.close()
            queue = PersistentQueueWithCapacity(path)
            for batch in reversed(batches):
                model.extendleft(reversed(batch.items))
            rest = queue.pop(ALL)
            assert rest == list(model)
            pushed = sorted(consumed + rest, key=int)
            assert pushed == [b"%d" % number for number in range(len(pushed))]
        finally:
            queue.close()


@pytest.mark.rocksdb_only
def test_leases_of_an_older_directory_with_index_keys_are_given_back(queue_path: str) -> None:
    """Older directories keyed a lease by its index alone (8 bytes); they open, losing nothing.

    This one is what the older layout left after a nack under a later lease,
    which it then refused to open (a lease at or past the head).
    """
    from pathlib import Path

    from rocksq_aio.rocksdb.format import RESERVED_CF, decode_fifo_lease_key, encode_index

    from support.rocksdb import raw_database

    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([A, B, C, D, E])
        first = queue.reserve_batch(2)
        queue.reserve_batch(2)
        first.nack()
    with raw_database(Path(queue_path)) as families:
        for key, value in list(families[RESERVED_CF].items()):
            del families[RESERVED_CF][key]
            families[RESERVED_CF][encode_index(decode_fifo_lease_key(key)[1])] = value
        assert sorted(families[RESERVED_CF].keys()) == [encode_index(2), encode_index(3)]
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert reopened.pop(ALL) == [C, D, A, B, E]


# ---------------------------------------------------------------- reservations of an earlier open
#
# A face binds a batch to its queue object, which refuses everything once
# closed; an engine handed a reservation of an earlier open refuses it too.


def settle_on(queue: Any, batch: Any, *, ack: bool) -> None:
    """Settle ``batch`` (made by an earlier open) through ``queue``'s engine."""
    from rocksq_aio._dispatch import settle_operation

    queue._engine.run(settle_operation(batch._reservation, ack=ack))


def test_settling_a_reservation_from_before_a_reopen_is_refused_and_changes_nothing(
    queue_path: str,
) -> None:
    queue = PersistentQueueWithCapacity(queue_path)
    queue.push([A, B, C, D])
    stale = queue.reserve_batch(2)
    queue.close()
    with pytest.raises(rocksq_aio.QueueClosedError):
        stale.ack()
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert (reopened.len, reopened.pending) == (4, 0)  # the open gave a, b back
        fresh = reopened.reserve_batch(2)  # a, b again: the numbers of this open start over
        assert fresh.items == [A, B]
        for ack in (False, True, False):
            with pytest.raises(LeaseExpiredError, match="before the queue"):
                settle_on(reopened, stale, ack=ack)
        assert not stale.settled
        assert (reopened.len, reopened.pending) == (2, 2)
    # The refused ack did not forget the lease of ``fresh``.
    with PersistentQueueWithCapacity(queue_path) as again:
        assert again.pop(ALL) == [A, B, C, D]


def test_a_stale_nack_on_a_queue_reopened_empty_delivers_nothing_twice(queue_path: str) -> None:
    queue = PersistentQueueWithCapacity(queue_path)
    queue.push([A, B])
    stale = queue.reserve_batch(2)
    queue.close()
    with PersistentQueueWithCapacity(queue_path) as reopened:
        assert reopened.pop(ALL) == [A, B]
        with pytest.raises(LeaseExpiredError):
            settle_on(reopened, stale, ack=False)
        assert (reopened.len, reopened.pending, reopened.pop(ALL)) == (0, 0, [])


def test_a_stale_nack_below_the_first_index_is_refused(queue_path: str) -> None:
    queue = PersistentQueueWithCapacity(queue_path)
    queue.push([A, B, C])
    stale = queue.reserve_batch(2)  # indices 0 and 1: a nack would go below index 0
    queue.close()
    with PersistentQueueWithCapacity(queue_path) as reopened:
        with pytest.raises(LeaseExpiredError):
            settle_on(reopened, stale, ack=False)
        assert reopened.pop(ALL) == [A, B, C]


def test_a_refused_settle_fails_alone_in_its_group(queue_path: str) -> None:
    from rocksq_aio._dispatch import pop_operation, push_operation, settle_operation

    queue = PersistentQueueWithCapacity(queue_path)
    queue.push([A])
    stale = queue.reserve_batch(1)
    queue.close()
    with PersistentQueueWithCapacity(queue_path) as reopened:
        engine = reopened._engine
        operations = [
            push_operation([B]),
            settle_operation(stale._reservation, ack=True),
            pop_operation(5),
        ]
        for operation in operations:
            engine.submit(operation)
        engine.drain()
        assert operations[0].outcome() is None
        with pytest.raises(LeaseExpiredError):
            operations[1].outcome()
        assert operations[2].outcome() == [A, B]


def test_mpmc_settling_a_reservation_from_before_a_reopen_is_refused(queue_path: str) -> None:
    from rocksq_aio.blocking import MpmcQueue

    queue = MpmcQueue(queue_path, 0)
    queue.add([A, B, C])
    stale = queue.reserve_batch("L", max_elements=1)
    other = queue.reserve_batch("M", max_elements=1)
    queue.close()
    with MpmcQueue(queue_path, 0) as reopened:
        fresh = reopened.reserve_batch("L", max_elements=1)  # a again, reservation 0 again
        assert fresh.items == [A]
        for batch, ack in ((stale, True), (stale, False), (other, True)):
            with pytest.raises(LeaseExpiredError):
                settle_on(reopened, batch, ack=ack)
        assert (reopened.pending("L"), reopened.pending("M")) == (1, 0)
        assert reopened.next("M", max_elements=ALL) == ([A], False)
    with MpmcQueue(queue_path, 0) as again:
        assert again.next("L", max_elements=ALL) == ([A], False)  # fresh's lease was kept
        assert again.next("L", max_elements=ALL) == ([B, C], False)
