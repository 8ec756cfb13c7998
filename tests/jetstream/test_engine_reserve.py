"""Reservations on JetStream: what differs from the embedded engines, checked against a model.

Released (nacked) items are delivered again before new ones, in the order
they were released, and a read may return them together with new ones.
"""

from __future__ import annotations

import random
import time

import pytest

from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity, ReservedBatch

pytest.importorskip("nats")

ALL = 2**20


@pytest.fixture
def path(nats_server: str) -> str:
    return f"{nats_server}/reserve-{time.monotonic_ns()}"


@pytest.mark.parametrize("seed", [0, 1])
def test_random_reservations_match_the_release_order_model(path: str, seed: int) -> None:
    from rocksq_aio._dispatch import reserve_operation, settle_operation

    rng = random.Random(seed)
    released: list[bytes] = []  # the server's redelivery queue, in release order
    fresh: list[bytes] = []
    batches: list[ReservedBatch] = []
    pushed = 0

    def take(count: int) -> list[bytes]:
        taken = (released + fresh)[:count]
        from_released = min(count, len(released))
        del released[:from_released]
        del fresh[: len(taken) - from_released]
        return taken

    with PersistentQueueWithCapacity(path) as queue:
        for _step in range(200):
            roll = rng.random()
            if roll < 0.3:
                items = [b"%d" % (pushed + offset) for offset in range(rng.randint(1, 3))]
                pushed += len(items)
                queue.push(items)
                fresh.extend(items)
            elif roll < 0.5:
                count = rng.randint(1, 3)
                batch = queue.reserve_batch(count)
                assert batch.items == take(count)
                batches.append(batch)
            elif roll < 0.65 and batches:
                batches.pop(rng.randrange(len(batches))).ack()
            elif roll < 0.8 and batches:
                batch = batches.pop(rng.randrange(len(batches)))
                batch.nack()
                released.extend(batch.items)
            elif batches:
                # One group of the nonblocking worker: a reservation, then a release.
                older = batches.pop(rng.randrange(len(batches)))
                count = rng.randint(1, 2)
                reserve = reserve_operation(count)
                engine = queue._engine
                engine.submit(reserve)
                engine.submit(settle_operation(older._reservation, ack=False))
                engine.drain()
                reservation = reserve.outcome()
                assert reservation.items == take(count)
                released.extend(older.items)
                batches.append(ReservedBatch(engine, reservation))
            assert queue.len == len(released) + len(fresh)
            assert queue.pending == sum(len(batch.items) for batch in batches)
        assert queue.pop(ALL) == released + fresh


def test_mpmc_released_items_come_back_first_to_their_label_only(path: str) -> None:
    with MpmcQueue(path, 0) as queue:
        queue.add([b"a", b"b", b"c", b"d"])
        with queue.reserve("L", max_elements=2) as items:
            assert items == [b"a", b"b"]
            assert queue.pending("L") == 2
        assert queue.pending("L") == 0
        with pytest.raises(ValueError), queue.reserve("L", max_elements=1) as items:
            assert items == [b"c"]
            raise ValueError("not processed")
        # c comes back first, in the same read as what follows it.
        assert queue.next("L", max_elements=ALL) == ([b"c", b"d"], False)
        assert queue.next("other", max_elements=ALL) == ([b"a", b"b", b"c", b"d"], False)


def test_mpmc_reservations_left_at_close_are_released(path: str) -> None:
    queue = MpmcQueue(path, 0)
    queue.add([b"%d" % number for number in range(6)])
    queue.reserve_batch("L", max_elements=2).ack()
    queue.reserve_batch("L", max_elements=2)  # never settled: released at close
    queue.close()
    with MpmcQueue(path, 0) as reopened:
        assert reopened.pending("L") == 0
        assert reopened.next("L", max_elements=ALL) == ([b"2", b"3", b"4", b"5"], False)
        assert reopened.next("L", max_elements=ALL) == ([], False)
