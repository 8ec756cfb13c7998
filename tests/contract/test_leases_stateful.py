"""Leases against a model, with an injected clock (no sleeps), on both engines.

Steps: push, reserve, ack, nack, extend, the clock moving on (expiry), reopen
and crash. Checked after each: which items a reserve gets and their
deliveries, redelivery order, LeaseExpiredError for a settle too late, and
the counters.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import rocksq_aio
from rocksq_aio.blocking import LeaseExpiredError, PersistentQueueWithCapacity, ReservedBatch

from support.clock import FakeClock

TIMEOUT = 10.0


@dataclass
class Lease:
    batch: ReservedBatch
    items: list[tuple[bytes, int]]
    deadline: float


class FifoLeaseMachine(RuleBasedStateMachine):
    engine = "rocksdb"

    def __init__(self) -> None:
        super().__init__()
        if self.engine == "memory":
            self.directory = None
            self.path = f"memory://leases-{uuid.uuid4().hex}"
        else:
            self.directory = tempfile.mkdtemp(prefix="rocksq_aio_leases_")
            self.path = os.path.join(self.directory, "queue")
        self.clock = FakeClock()
        self.queue = self._open()
        self.model: deque[tuple[bytes, int]] = deque()
        self.leases: dict[int, Lease] = {}  # by reservation order
        self.order = itertools.count()
        self.numbers = itertools.count()

    def _open(self) -> PersistentQueueWithCapacity:
        return PersistentQueueWithCapacity(self.path, clock=self.clock, lease_timeout=TIMEOUT)

    def _release(self, orders: list[int]) -> None:
        back = [pair for order in sorted(orders) for pair in self.leases.pop(order).items]
        self.model.extendleft(reversed(back))

    def _expire(self) -> None:
        """What every operation does first: release the leases whose deadline passed."""
        self._release([o for o, lease in self.leases.items() if lease.deadline <= self.clock.now])

    @rule(count=st.integers(1, 4))
    def push(self, count: int) -> None:
        self._expire()
        items = [b"%d" % next(self.numbers) for _ in range(count)]
        self.queue.push(items)
        self.model.extend((item, 0) for item in items)

    @rule(count=st.integers(1, 3))
    def reserve(self, count: int) -> None:
        self._expire()
        batch = self.queue.reserve_batch(count)
        taken = [self.model.popleft() for _ in range(min(count, len(self.model)))]
        assert batch.items == [item for item, _n in taken]
        assert batch.deliveries == [n + 1 for _item, n in taken]
        if taken:
            self.leases[next(self.order)] = Lease(
                batch, [(item, n + 1) for item, n in taken], self.clock.now + TIMEOUT
            )

    def _pick(self, index: int) -> tuple[int, Lease]:
        order = sorted(self.leases)[index % len(self.leases)]
        return order, self.leases[order]

    @precondition(lambda self: self.leases)
    @rule(index=st.integers(0, 9), how=st.sampled_from(["ack", "nack", "extend"]))
    def settle(self, index: int, how: str) -> None:
        order, lease = self._pick(index)
        expired = lease.deadline <= self.clock.now
        self._expire()
        if expired:
            with pytest.raises(LeaseExpiredError):
                getattr(lease.batch, how)()
            return
        getattr(lease.batch, how)()
        if how == "ack":
            del self.leases[order]
        elif how == "nack":
            self._release([order])
        else:
            lease.deadline = max(lease.deadline, self.clock.now + TIMEOUT)

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.99, 10.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(crash=st.booleans())
    def reopen(self, crash: bool) -> None:
        if crash and self.engine == "rocksdb":
            # What kill -9 leaves: no close(), every write in the WAL.
            self.queue._engine._store.close()
        else:
            self.queue.close()
        self.queue = self._open()
        self._release(list(self.leases))

    @invariant()
    def counters(self) -> None:
        # Properties show the last operation's state: compare after one.
        self.queue.push([])
        self._expire()
        assert self.queue.len == len(self.model)
        assert self.queue.pending == sum(len(lease.items) for lease in self.leases.values())

    def teardown(self) -> None:
        self.queue.close()
        if self.directory is None:
            rocksq_aio.remove_queue(self.path)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)


class MemoryFifoLeaseMachine(FifoLeaseMachine):
    engine = "memory"


SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFifoLeasesRocksDB = FifoLeaseMachine.TestCase
TestFifoLeasesRocksDB.settings = SETTINGS
TestFifoLeasesMemory = MemoryFifoLeaseMachine.TestCase
TestFifoLeasesMemory.settings = SETTINGS
