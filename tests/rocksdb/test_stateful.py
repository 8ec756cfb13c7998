"""Stateful (rule-based) tests of the blocking queues against in-memory models.

Hypothesis drives random sequences of operations, including closing and
reopening the queue on the same path, and checks every result and counter
against a plain Python model after each step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rocksq_aio._dispatch import Stage, give_back_operation, pop_operation
from rocksq_aio.blocking import (
    MpmcQueue,
    PersistentQueueWithCapacity,
    QueueFullError,
    StartPosition,
)
from rocksq_aio.rocksdb.base import RocksDBQueue

from support.clock import FakeClock

MACHINE_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Small items, so that equal items are common (order bugs show) and sizes vary.
ITEMS = st.lists(st.binary(max_size=6), max_size=6)


class Reopening:
    """Rules shared by the machines: reopen after close(), and after a crash.

    ``calls_since_open`` counts calls since the queue was last opened:
    reopening an untouched queue only costs time, so both rules wait for one.
    """

    queue: Any
    calls_since_open: int

    def _open(self) -> Any:
        raise NotImplementedError

    @precondition(lambda self: self.calls_since_open > 0)
    @rule()
    def reopen(self) -> None:
        self.queue.close()
        self.queue = None
        self.queue = self._open()
        self.calls_since_open = 0

    @precondition(lambda self: self.calls_since_open > 0)
    @rule()
    def crash_and_reopen(self) -> None:
        # What kill -9 leaves: every write is in the WAL, but close() never ran,
        # so counters not yet saved must be found again from the keys.
        self.queue._engine._store.close()
        self.queue = None
        self.queue = self._open()
        self.calls_since_open = 0


def give_back(queue: PersistentQueueWithCapacity, items: list[bytes]) -> None:
    """Give back items popped earlier, as the worker does for a cancelled pop."""
    read = pop_operation(max(1, len(items)))
    read.result = list(items)
    read.stage = Stage.DONE
    queue._engine.run(give_back_operation(read))


# ---------------------------------------------------------------- FIFO


class FifoMachine(Reopening, RuleBasedStateMachine):
    """``PersistentQueueWithCapacity`` against a deque."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="rocksq_aio_fifo_")
        self.path = os.path.join(self.directory, "queue")
        self.capacity = 0
        self.cache_bytes: int | None = None
        self.queue: PersistentQueueWithCapacity | None = None
        self.model: deque[bytes] = deque()
        # Items popped earlier and not given back yet: the only ones unpop may take.
        self.popped: list[bytes] = []
        # Calls since the queue was last opened: reopening an untouched queue
        # only costs time, so reopen waits for one.
        self.calls_since_open = 0
        self.saved_every = RocksDBQueue.save_counters_every  # restored by teardown

    def _open(self) -> PersistentQueueWithCapacity:
        if self.cache_bytes is None:
            return PersistentQueueWithCapacity(self.path, max_elements=self.capacity)
        return PersistentQueueWithCapacity(
            self.path, max_elements=self.capacity, cache_bytes=self.cache_bytes
        )

    @property
    def open_queue(self) -> PersistentQueueWithCapacity:
        assert self.queue is not None
        return self.queue

    @initialize(
        capacity=st.integers(min_value=5, max_value=20),
        cache_bytes=st.sampled_from([0, 16, None]),
        save_every=st.sampled_from([1, 3, RocksDBQueue.save_counters_every]),
    )
    def create(self, capacity: int, cache_bytes: int | None, save_every: int) -> None:
        self.capacity = capacity
        self.cache_bytes = cache_bytes
        # How many one-item pushes and pops may go without saving the counters:
        # small values make the crash rule find counters saved mid-way.
        RocksDBQueue.save_counters_every = save_every
        self.queue = self._open()

    @rule(items=ITEMS)
    def push(self, items: list[bytes]) -> None:
        self.calls_since_open += 1
        # An empty push is a no-op that fits even a full queue (as in RocksQ).
        refused = bool(items) and len(self.model) + len(items) > self.capacity
        if refused:
            event("push refused: queue full")
            with pytest.raises(QueueFullError):
                self.open_queue.push(items)
        else:
            self.open_queue.push(items)
            self.model.extend(items)

    @rule(max_elements=st.integers(min_value=1, max_value=8))
    def pop(self, max_elements: int) -> None:
        self.calls_since_open += 1
        expected = [self.model.popleft() for _ in range(min(max_elements, len(self.model)))]
        assert self.open_queue.pop(max_elements) == expected
        self.popped.extend(expected)

    @rule(max_elements=st.integers(min_value=1, max_value=8))
    def pop_keyword(self, max_elements: int) -> None:
        self.calls_since_open += 1
        expected = [self.model.popleft() for _ in range(min(max_elements, len(self.model)))]
        assert self.open_queue.pop(max_elements=max_elements, no_gil=False) == expected
        self.popped.extend(expected)

    @precondition(lambda self: bool(self.popped))
    @rule(data=st.data())
    def unpop(self, data: st.DataObject) -> None:
        self.calls_since_open += 1
        chosen = data.draw(
            st.lists(
                st.integers(min_value=0, max_value=len(self.popped) - 1),
                min_size=1,
                max_size=len(self.popped),
                unique=True,
            ),
            label="indices of popped items to give back, in order",
        )
        items = [self.popped[index] for index in chosen]
        for index in sorted(chosen, reverse=True):
            del self.popped[index]
        event("unpop")
        give_back(self.open_queue, items)
        if len(self.model) + len(items) > self.capacity:
            event("unpop beyond capacity")
        self.model.extendleft(reversed(items))

    @precondition(lambda self: bool(self.popped))
    @rule(count=st.integers(min_value=1, max_value=8))
    def unpop_latest(self, count: int) -> None:
        self.calls_since_open += 1
        # What an abandoned pop does: the latest popped items go back in order.
        items = self.popped[-count:]
        del self.popped[-count:]
        event("unpop")
        give_back(self.open_queue, items)
        if len(self.model) + len(items) > self.capacity:
            event("unpop beyond capacity")
        self.model.extendleft(reversed(items))

    @invariant()
    def counters_match(self) -> None:
        queue = self.open_queue
        assert queue.len == len(self.model)
        assert len(queue) == len(self.model)
        assert queue.is_empty is (not self.model)

    # A rule, not an invariant: after a crash the payload size is counted only
    # when first read, so calls must also run while it is not known yet.
    @rule()
    def read_payload_size(self) -> None:
        assert self.open_queue.payload_size == sum(len(item) for item in self.model)

    def teardown(self) -> None:
        try:
            if self.queue is not None:
                self.read_payload_size()
                # Whatever is left comes back in order.
                assert self.queue.pop(len(self.model) + 1) == list(self.model)
                assert self.queue.is_empty
                self.queue.close()
        finally:
            if self.queue is not None and not self.queue.closed:
                self.queue.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            RocksDBQueue.save_counters_every = self.saved_every


FifoMachine.TestCase.settings = MACHINE_SETTINGS
TestFifo = FifoMachine.TestCase


# ---------------------------------------------------------------- MPMC

TTL_SECONDS = 10
LABELS = ["a", "b", "c"]
# Expiry is lazy: it runs at the start of every write (add, next and also
# remove_label), not only at add and next as the ``len`` docstring says.
EXPIRES_ON_REMOVE_LABEL = True


@dataclass
class ModelPosition:
    index: int
    expired_unseen: bool = False


class MpmcModel:
    """A stream with TTL and labelled readers, all in memory, times in milliseconds."""

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms
        self.stamps: list[int] = []  # by absolute index, never shortened
        self.items: list[bytes] = []
        self.head = 0
        self.newest_ms = 0
        self.positions: dict[str, ModelPosition] = {}
        self.labels_moved = 0  # by expiry, over the whole run

    @property
    def tail(self) -> int:
        return len(self.items)

    @property
    def length(self) -> int:
        return self.tail - self.head

    def expire(self, now_ms: int) -> None:
        while self.head < self.tail and self.stamps[self.head] + self.ttl_ms <= now_ms:
            self.head += 1
            event("elements expired")
        for position in self.positions.values():
            if position.index < self.head:
                position.index = self.head
                position.expired_unseen = True
                self.labels_moved += 1

    def add(self, items: list[bytes], now_ms: int) -> None:
        self.expire(now_ms)
        if not items:
            return
        stamp = max(now_ms, self.newest_ms)
        self.newest_ms = stamp
        self.items.extend(items)
        self.stamps.extend([stamp] * len(items))

    def next(
        self, label: str, start_position: StartPosition, max_elements: int, now_ms: int
    ) -> tuple[list[bytes], bool]:
        self.expire(now_ms)
        position = self.positions.get(label)
        if position is None:
            if start_position is StartPosition.Oldest:
                position = ModelPosition(self.head)
            elif self.length:
                position = ModelPosition(self.tail - 1)
            else:
                position = ModelPosition(self.tail)
        count = min(max_elements, self.tail - position.index)
        items = self.items[position.index : position.index + count]
        self.positions[label] = ModelPosition(position.index + count)
        return items, position.expired_unseen

    def remove_label(self, label: str, now_ms: int) -> bool:
        if EXPIRES_ON_REMOVE_LABEL:
            self.expire(now_ms)
        return self.positions.pop(label, None) is not None


class MpmcMachine(Reopening, RuleBasedStateMachine):
    """``MpmcQueue`` with a TTL and a fake clock against :class:`MpmcModel`."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="rocksq_aio_mpmc_")
        self.path = os.path.join(self.directory, "queue")
        self.clock = FakeClock()
        self.model = MpmcModel(TTL_SECONDS * 1000)
        self.expiry_reports = 0
        self.calls_since_open = 0  # as in FifoMachine
        self.cache_bytes: int | None = None
        self.saved_every = RocksDBQueue.save_counters_every  # restored by teardown
        self.queue: MpmcQueue | None = self._open()

    def _open(self) -> MpmcQueue:
        if self.cache_bytes is None:
            return MpmcQueue(self.path, ttl=TTL_SECONDS, clock=self.clock)
        return MpmcQueue(self.path, ttl=TTL_SECONDS, clock=self.clock, cache_bytes=self.cache_bytes)

    # Reads come from the cache of recent elements, from disk (cache_bytes=0),
    # or from both (16 bytes: a few items).
    # One-item adds save the counters every save_every of them (see FifoMachine).
    @initialize(
        cache_bytes=st.sampled_from([0, 16, None]),
        save_every=st.sampled_from([1, 3, RocksDBQueue.save_counters_every]),
    )
    def choose_cache(self, cache_bytes: int | None, save_every: int) -> None:
        self.cache_bytes = cache_bytes
        RocksDBQueue.save_counters_every = save_every
        self.open_queue.close()
        self.queue = None
        self.queue = self._open()

    @property
    def open_queue(self) -> MpmcQueue:
        assert self.queue is not None
        return self.queue

    def now_ms(self) -> int:
        return round(self.clock.now * 1000)

    @initialize(label=st.sampled_from(LABELS))
    def subscribe(self, label: str) -> None:
        # A consumer that subscribes before anything is added, so that runs
        # often hold a label behind elements that then expire.
        expected = self.model.next(label, StartPosition.Oldest, 1, self.now_ms())
        assert self.open_queue.next(label) == expected == ([], False)

    @rule(items=ITEMS)
    def add(self, items: list[bytes]) -> None:
        self.calls_since_open += 1
        self.open_queue.add(items)
        self.model.add(items, self.now_ms())

    @rule(
        label=st.sampled_from(LABELS),
        start_position=st.sampled_from([StartPosition.Oldest, StartPosition.Newest]),
        max_elements=st.integers(min_value=1, max_value=5),
    )
    def next(self, label: str, start_position: StartPosition, max_elements: int) -> None:
        self.calls_since_open += 1
        expected = self.model.next(label, start_position, max_elements, self.now_ms())
        if expected[1]:
            event("next reported expired elements")
            self.expiry_reports += 1
        assert self.open_queue.next(label, start_position, max_elements) == expected

    @rule(label=st.sampled_from(LABELS))
    def remove_label(self, label: str) -> None:
        self.calls_since_open += 1
        expected = self.model.remove_label(label, self.now_ms())
        assert self.open_queue.remove_label(label) is expected

    # Mostly forward, 0..15 s; sometimes back, as a wall clock may be set back
    # (new stamps must then not go below the newest one). One rule rather than
    # two, so that Hypothesis's swarm testing disables time less often.
    @rule(seconds=st.integers(min_value=-5, max_value=15))
    def move_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def state_matches(self) -> None:
        queue = self.open_queue
        assert queue.len == self.model.length
        assert len(queue) == self.model.length
        assert queue.is_empty is (self.model.length == 0)
        assert queue.labels == sorted(self.model.positions)
        for label, position in self.model.positions.items():
            assert queue._engine.position(label) == position.index

    def teardown(self) -> None:
        # Steer generation towards runs where labels miss expired elements
        # (random runs rarely get there), rewarding the steps towards it too.
        target(
            float(4 * self.expiry_reports + self.model.labels_moved + self.model.head),
            label="expiry",
        )
        try:
            if self.queue is not None:
                self.queue.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            RocksDBQueue.save_counters_every = self.saved_every


# More runs than the FIFO: an expiry report needs a longer lucky sequence
# (a label, later elements, a clock step past the TTL, then that label's next).
MpmcMachine.TestCase.settings = settings(MACHINE_SETTINGS, max_examples=80)
TestMpmc = MpmcMachine.TestCase
