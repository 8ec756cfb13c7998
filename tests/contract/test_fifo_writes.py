"""How the FIFO's pushes reach RocksDB: a large push staged in several writes
is atomic (all or nothing, over capacity, after a failed write, across a
crash), and the in-memory tail cache never changes what is read.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from collections import deque
from typing import Any

import pytest

from rocksq_aio import QueueFullError, QueueIOError
from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.fifo import CountingDb, assert_counters, drain

pytestmark = pytest.mark.contract

# ---------------------------------------------------------------- large pushes


ITEM_SIZE = 256 * 1024
ITEM_COUNT = 40


def _large_items(tag: int) -> list[bytes]:
    return [bytes([(tag + index) % 256]) * ITEM_SIZE for index in range(ITEM_COUNT)]


@pytest.mark.parametrize("batch_bytes", [None, 64 * 1024], ids=["default", "64KiB"])
def test_large_push_is_atomic_and_persists(queue_path: str, batch_bytes: int | None) -> None:
    options: dict[str, Any] = {} if batch_bytes is None else {"batch_bytes": batch_bytes}
    items = _large_items(7)
    with PersistentQueueWithCapacity(queue_path, **options) as queue:
        queue.push([b"before"])
        queue.push(items)
        assert queue.len == ITEM_COUNT + 1
        assert queue.payload_size == ITEM_COUNT * ITEM_SIZE + len(b"before")
    with PersistentQueueWithCapacity(queue_path, **options) as queue:
        assert queue.len == ITEM_COUNT + 1
        assert queue.payload_size == ITEM_COUNT * ITEM_SIZE + len(b"before")
        assert queue.pop() == [b"before"]
        assert queue.pop(max_elements=ITEM_COUNT) == items
        assert_counters(queue, [])


@pytest.mark.parametrize("batch_bytes", [None, 64 * 1024], ids=["default", "64KiB"])
def test_large_push_over_capacity_writes_nothing(queue_path: str, batch_bytes: int | None) -> None:
    options: dict[str, Any] = {} if batch_bytes is None else {"batch_bytes": batch_bytes}
    with PersistentQueueWithCapacity(queue_path, max_elements=ITEM_COUNT, **options) as queue:
        queue.push([b"x"])
        with pytest.raises(QueueFullError):
            queue.push(_large_items(1))
        assert_counters(queue, [b"x"])
    with PersistentQueueWithCapacity(queue_path, max_elements=ITEM_COUNT, **options) as queue:
        assert_counters(queue, [b"x"])
        assert drain(queue) == [b"x"]
        queue.push(_large_items(2)[:5])
        assert drain(queue) == _large_items(2)[:5]


def _writes_needed_for_large_push(path: str) -> int:
    with PersistentQueueWithCapacity(path, batch_bytes=64 * 1024) as queue:
        queue.push([b"before"])
        counter = CountingDb(queue._engine._store._db, fail_at=None)
        queue._engine._store._db = counter  # type: ignore[assignment]
        queue.push(_large_items(3))
        queue._engine._store._db = counter._db
        return counter.writes


_CRASHING_PUSH_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    from rocksq_aio import QueueIOError
    from rocksq_aio.blocking import PersistentQueueWithCapacity

    class FailingDb:
        def __init__(self, db, fail_at):
            self._db, self.fail_at, self.writes = db, fail_at, 0

        def write(self, *args, **kwargs):
            self.writes += 1
            if self.writes == self.fail_at:
                raise OSError("IO error: injected failure")
            return self._db.write(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._db, name)

    path, fail_at, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    queue = PersistentQueueWithCapacity(path, batch_bytes=64 * 1024)
    queue.push([b"before"])
    queue._engine._store._db = FailingDb(queue._engine._store._db, fail_at)
    try:
        queue.push([bytes([(3 + i) % 256]) * size for i in range(count)])
    except QueueIOError:
        print("PUSH-FAILED", flush=True)
    else:
        print("PUSH-SUCCEEDED", flush=True)
    os._exit(0)  # die without closing, like a crash
    """
)


@pytest.mark.rocksdb_only
@pytest.mark.parametrize("fail_at", ["second", "last"])
def test_large_push_interrupted_by_a_crash_leaves_nothing(
    queue_path: str, tmp_path: Any, fail_at: str
) -> None:
    writes = _writes_needed_for_large_push(str(tmp_path / "probe"))
    # The push is staged in several writes, so a failure can hit between them.
    assert writes > 2
    failing = 2 if fail_at == "second" else writes
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _CRASHING_PUSH_SCRIPT,
            queue_path,
            str(failing),
            str(ITEM_SIZE),
            str(ITEM_COUNT),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.stdout.strip() == "PUSH-FAILED", completed.stdout + completed.stderr

    with PersistentQueueWithCapacity(queue_path, batch_bytes=64 * 1024) as queue:
        assert_counters(queue, [b"before"])
        # The staged orphans past the tail were removed at open.
        assert queue._engine._store.data_key_bounds() == (0, 0)
        queue.push([b"after"])
        assert drain(queue) == [b"before", b"after"]
    with PersistentQueueWithCapacity(queue_path, batch_bytes=64 * 1024) as queue:
        assert_counters(queue, [])
        assert drain(queue) == []


@pytest.mark.rocksdb_only
def test_close_and_reopen_after_a_failed_write_in_the_same_process(queue_path: str) -> None:
    """The documented recovery from QueueIOError is close + reopen; it must work in-process."""
    queue = PersistentQueueWithCapacity(queue_path, batch_bytes=64 * 1024)
    queue.push([b"before"])
    counter = CountingDb(queue._engine._store._db, fail_at=2)
    queue._engine._store._db = counter  # type: ignore[assignment]
    with pytest.raises(QueueIOError):
        queue.push(_large_items(3))
    assert_counters(queue, [b"before"])
    # The handle refuses further work until it is reopened.
    with pytest.raises(QueueIOError):
        queue.pop()
    with pytest.raises(QueueIOError):
        queue.push([b"x"])
    queue._engine._store._db = counter._db
    del counter
    queue.close()

    with PersistentQueueWithCapacity(queue_path, batch_bytes=64 * 1024) as queue:
        assert_counters(queue, [b"before"])
        queue.push([b"after"])
        assert drain(queue) == [b"before", b"after"]


# ---------------------------------------------------------------- the in-memory tail cache


def _mixed_sequence(seed: int) -> list[tuple[str, Any]]:
    rng = random.Random(seed)
    steps: list[tuple[str, Any]] = []
    for _ in range(120):
        roll = rng.random()
        if roll < 0.45:
            count = rng.randint(0, 6)
            steps.append(
                ("push", [bytes([rng.randrange(256)]) * rng.randint(0, 25) for _ in range(count)])
            )
        elif roll < 0.9:
            steps.append(("pop", rng.randint(1, 8)))
        else:
            steps.append(("reopen", None))
    return steps


def _run_sequence(path: str, steps: list[tuple[str, Any]], cache_bytes: int | None) -> list[Any]:
    options: dict[str, Any] = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
    model: deque[bytes] = deque()
    observed: list[Any] = []
    queue = PersistentQueueWithCapacity(path, max_elements=30, **options)
    try:
        for action, argument in steps:
            if action == "push":
                try:
                    queue.push(argument)
                except QueueFullError:
                    assert len(model) + len(argument) > 30
                    observed.append("full")
                else:
                    model.extend(argument)
            elif action == "pop":
                popped = queue.pop(max_elements=argument)
                expected = [model.popleft() for _ in range(min(argument, len(model)))]
                assert popped == expected
                observed.append(popped)
            else:
                queue.close()
                queue = PersistentQueueWithCapacity(path, max_elements=30, **options)
            assert_counters(queue, list(model))
            observed.append((queue.len, queue.payload_size))
    finally:
        queue.close()
    with PersistentQueueWithCapacity(path, max_elements=30, **options) as queue:
        assert_counters(queue, list(model))
        remaining = drain(queue)
        assert remaining == list(model)
        observed.append(remaining)
    return observed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cache_size_does_not_change_results(tmp_path: Any, seed: int) -> None:
    steps = _mixed_sequence(seed)
    reference = _run_sequence(str(tmp_path / "default"), steps, None)
    for cache_bytes in (0, 1, 10, 64):
        observed = _run_sequence(str(tmp_path / f"cache{cache_bytes}"), steps, cache_bytes)
        assert observed == reference, f"cache_bytes={cache_bytes}"


@pytest.mark.parametrize("cache_bytes", [0, 10, None], ids=["off", "tiny", "default"])
def test_cache_with_items_larger_than_the_cache(queue_path: str, cache_bytes: int | None) -> None:
    options: dict[str, Any] = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
    with PersistentQueueWithCapacity(queue_path, **options) as queue:
        queue.push([b"a" * 50, b"b", b"c" * 9, b"d" * 11])
        assert queue.pop() == [b"a" * 50]
        queue.push([b"e" * 3])
        assert queue.pop(max_elements=3) == [b"b", b"c" * 9, b"d" * 11]
        queue.push([b"f"])
        assert queue.pop(max_elements=5) == [b"e" * 3, b"f"]
        assert_counters(queue, [])
