"""Helpers of the FIFO contract tests (tests/contract/test_fifo.py,
test_fifo_writes.py, test_fifo_counters.py)."""

from __future__ import annotations

from typing import Any

from rocksq_aio.blocking import PersistentQueueWithCapacity

ALL = 2**20  # more than any test ever stores


def drain(queue: PersistentQueueWithCapacity) -> list[bytes]:
    return queue.pop(max_elements=ALL)


def assert_counters(queue: PersistentQueueWithCapacity, expected: list[bytes]) -> None:
    assert queue.len == len(expected)
    assert len(queue) == len(expected)
    assert queue.is_empty is (not expected)
    assert queue.payload_size == sum(len(item) for item in expected)


class CountingDb:
    """Wraps the store's rocksdict handle to count writes and fail the n-th one."""

    def __init__(self, db: Any, fail_at: int | None) -> None:
        self._db = db
        self.fail_at = fail_at
        self.writes = 0

    def write(self, *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError("IO error: injected failure")
        return self._db.write(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)
