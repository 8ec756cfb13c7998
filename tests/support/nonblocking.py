"""Helpers of the nonblocking face's tests (tests/contract/test_nonblocking*.py):
a clock that holds the worker thread, a FIFO queue with room, numbered items.
The ``gated_clock`` fixture is in tests/contract/conftest.py.
"""

from __future__ import annotations

import threading

from rocksq_aio.nonblocking import PersistentQueueWithCapacity

GATE_TIMEOUT = 30.0


class GatedClock:
    """A clock that holds the worker thread (which reads it while executing an
    MPMC operation) until the test opens the gate: makes "not ready yet" states
    deterministic without sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self) -> float:
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise AssertionError("the test never opened the gate")
        return self.now

    def wait_until_entered(self) -> None:
        assert self.entered.wait(GATE_TIMEOUT), "the worker never started the operation"


def fifo(
    path: str, max_elements: int = 1_000_000, max_inflight_ops: int = 1000
) -> PersistentQueueWithCapacity:
    return PersistentQueueWithCapacity(path, max_elements, max_inflight_ops)


def items(count: int, prefix: str = "item") -> list[bytes]:
    return [f"{prefix}-{index:05d}".encode() for index in range(count)]
