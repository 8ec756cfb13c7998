"""Behaviour of the blocking FIFO queue, ``rocksq_aio.blocking.PersistentQueueWithCapacity``."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import (
    QueueClosedError,
    QueueError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
    remove_mpmc_queue,
    remove_queue,
)
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.rocksdb import raw_database

pytestmark = pytest.mark.contract

ALL = 2**20  # more than any test ever stores


def drain(queue: PersistentQueueWithCapacity) -> list[bytes]:
    return queue.pop(max_elements=ALL)


def assert_counters(queue: PersistentQueueWithCapacity, expected: list[bytes]) -> None:
    assert queue.len == len(expected)
    assert len(queue) == len(expected)
    assert queue.is_empty is (not expected)
    assert queue.payload_size == sum(len(item) for item in expected)


# ---------------------------------------------------------------- order and counters


def test_push_pop_order(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a", b"b"])
        queue.push([b"c"])
        assert queue.pop() == [b"a"]
        assert queue.pop(max_elements=1) == [b"b"]
        queue.push([b"d", b"e"])
        assert queue.pop(max_elements=2) == [b"c", b"d"]
        assert queue.pop() == [b"e"]


def test_pop_on_empty_returns_empty_list(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert queue.pop() == []
        assert queue.pop(max_elements=10) == []
        queue.push([b"x"])
        assert queue.pop() == [b"x"]
        assert queue.pop() == []
        assert_counters(queue, [])


def test_pop_more_than_length_returns_all(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"1", b"2", b"3"])
        assert queue.pop(max_elements=10) == [b"1", b"2", b"3"]
        assert_counters(queue, [])


@pytest.mark.parametrize("limit", [2**40, 2**64, 10**30])
def test_pop_huge_max_elements_returns_available_items_only(queue_path: str, limit: int) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"one", b"two", b"three"])
        tracemalloc.start()
        try:
            result = queue.pop(max_elements=limit)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result == [b"one", b"two", b"three"]
        # Nothing may be sized by the limit: a few KiB of Python objects at most.
        assert peak < 1024 * 1024
        assert queue.pop(max_elements=limit) == []
        assert_counters(queue, [])


def test_counters_exact_after_each_operation(queue_path: str) -> None:
    model: list[bytes] = []
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert_counters(queue, model)
        steps: list[tuple[str, Any]] = [
            ("push", [b"abc", b"", b"defgh"]),
            ("pop", 1),
            ("push", [b"x" * 1000]),
            ("pop", 2),
            ("push", [b"12", b"345", b"6789"]),
            ("pop", 10),
            ("push", [b"z"]),
        ]
        for action, argument in steps:
            if action == "push":
                queue.push(argument)
                model.extend(argument)
            else:
                popped = queue.pop(max_elements=argument)
                assert popped == model[:argument]
                del model[:argument]
            assert_counters(queue, model)


def test_empty_items_are_stored_and_returned(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"", b"x", b""])
        assert queue.len == 3
        assert queue.payload_size == 1
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert queue.len == 3
        assert queue.pop() == [b""]
        assert queue.pop(max_elements=5) == [b"x", b""]
        assert_counters(queue, [])


@pytest.mark.rocksdb_only
def test_disk_size_is_positive(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"payload" * 100])
        assert isinstance(queue.disk_size, int)
        assert queue.disk_size > 0


# ---------------------------------------------------------------- persistence and lifecycle


def test_persistence_across_close_and_reopen(queue_path: str) -> None:
    queue = PersistentQueueWithCapacity(queue_path, max_elements=100)
    queue.push([b"first", b"second", b"third", b"fourth"])
    assert queue.pop() == [b"first"]
    queue.close()
    assert queue.closed

    queue = PersistentQueueWithCapacity(queue_path, max_elements=100)
    try:
        assert_counters(queue, [b"second", b"third", b"fourth"])
        assert queue.pop() == [b"second"]
        queue.push([b"fifth"])
    finally:
        queue.close()

    with PersistentQueueWithCapacity(queue_path, max_elements=100) as queue:
        assert_counters(queue, [b"third", b"fourth", b"fifth"])
        assert drain(queue) == [b"third", b"fourth", b"fifth"]


def test_context_manager_closes_so_path_reopens_at_once(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert isinstance(queue, PersistentQueueWithCapacity)
        queue.push([b"kept"])
    assert queue.closed
    with PersistentQueueWithCapacity(queue_path) as again:
        assert again.pop() == [b"kept"]


def test_context_manager_closes_on_exception(queue_path: str) -> None:
    with pytest.raises(KeyError), PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"kept"])
        raise KeyError("boom")
    assert queue.closed
    with PersistentQueueWithCapacity(queue_path) as again:
        assert again.pop() == [b"kept"]


@pytest.mark.rocksdb_only
def test_reopening_an_open_path_in_the_same_process_is_locked(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a"])
        with pytest.raises(QueueLockedError):
            PersistentQueueWithCapacity(queue_path)
        with pytest.raises(QueueLockedError):
            PersistentQueueWithCapacity(queue_path + "/../" + os.path.basename(queue_path))
        # The failed open did not disturb the open queue.
        assert queue.pop() == [b"a"]


_OTHER_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    from rocksq_aio import QueueLockedError
    from rocksq_aio.blocking import PersistentQueueWithCapacity

    try:
        queue = PersistentQueueWithCapacity(sys.argv[1])
    except QueueLockedError as error:
        print("LOCKED", error)
    except BaseException as error:
        print("OTHER", type(error).__name__, error)
    else:
        print("OPENED", queue.len)
        queue.close()
    """
)


def _run_python(script: str, path: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with ``path`` as its argument."""
    return subprocess.run(
        [sys.executable, "-c", script, path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _open_in_other_process(path: str) -> str:
    completed = _run_python(_OTHER_PROCESS_SCRIPT, path)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.rocksdb_only
def test_opening_in_another_process_while_open_is_locked(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a", b"b"])
        output = _open_in_other_process(queue_path)
        assert output.startswith("LOCKED"), output
        assert queue.pop(max_elements=5) == [b"a", b"b"]
        queue.push([b"c"])
    # Once closed, the other process can open it and sees the element.
    output = _open_in_other_process(queue_path)
    assert output.split() == ["OPENED", "1"], output


def test_operations_after_close_raise_queue_closed(queue_path: str) -> None:
    queue = PersistentQueueWithCapacity(queue_path)
    queue.push([b"a"])
    queue.close()
    assert queue.closed
    with pytest.raises(QueueClosedError):
        queue.push([b"b"])
    with pytest.raises(QueueClosedError):
        queue.pop()
    assert issubclass(QueueClosedError, QueueError)
    queue.close()  # closing twice is harmless
    with PersistentQueueWithCapacity(queue_path) as again:
        assert drain(again) == [b"a"]


@pytest.mark.rocksdb_only
def test_remove_queue(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a"])
        with pytest.raises(QueueLockedError):
            remove_queue(queue_path)
        assert os.path.isdir(queue_path)
        assert queue.pop() == [b"a"]
        queue.push([b"b"])
    remove_queue(queue_path)
    assert not os.path.exists(queue_path)
    # A fresh queue can be created at the same place and is empty.
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert_counters(queue, [])
        assert queue.pop() == []


def test_remove_queue_of_missing_path_is_harmless(queue_path: str) -> None:
    remove_queue(queue_path)
    assert not os.path.exists(queue_path)


def test_opening_mpmc_directory_as_fifo_is_refused(queue_path: str) -> None:
    with MpmcQueue(queue_path, 0) as stream:
        stream.add([b"event"])
    with pytest.raises(QueueError, match=r"(?i)mpmc|kind|column famil"):
        PersistentQueueWithCapacity(queue_path)
    # Nothing was changed: the stream is intact and not left locked.
    with MpmcQueue(queue_path, 0) as stream:
        assert stream.next("reader", max_elements=10) == ([b"event"], False)
    remove_mpmc_queue(queue_path)
    assert not os.path.exists(queue_path)


def test_opening_fifo_directory_as_mpmc_is_refused(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"job"])
    with pytest.raises(QueueError, match=r"(?i)fifo|kind|column famil"):
        MpmcQueue(queue_path, 0)
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert drain(queue) == [b"job"]


def test_no_gil_argument_is_accepted(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a"], no_gil=False)
        queue.push([b"b"], True)
        queue.push([b"c"], no_gil=True)
        assert queue.pop(1, no_gil=False) == [b"a"]
        assert queue.pop(1, True) == [b"b"]
        assert queue.pop(max_elements=1, no_gil=True) == [b"c"]


# ---------------------------------------------------------------- capacity


def test_queue_full_error_hierarchy() -> None:
    assert issubclass(QueueFullError, QueueError)
    assert issubclass(QueueFullError, RuntimeError)


def test_push_beyond_capacity_writes_nothing(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path, max_elements=3) as queue:
        queue.push([b"a", b"bb"])
        with pytest.raises(QueueFullError) as raised:
            queue.push([b"c", b"d"])
        assert isinstance(raised.value, RuntimeError)
        assert_counters(queue, [b"a", b"bb"])
        with pytest.raises(QueueFullError):
            queue.push([b"x"] * 100)
        assert_counters(queue, [b"a", b"bb"])
    with PersistentQueueWithCapacity(queue_path, max_elements=3) as queue:
        assert_counters(queue, [b"a", b"bb"])
        assert drain(queue) == [b"a", b"bb"]


def test_exact_fit_push_succeeds_and_next_one_is_refused(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path, max_elements=3) as queue:
        queue.push([b"a", b"b", b"c"])
        assert queue.len == 3
        with pytest.raises(QueueFullError):
            queue.push([b"d"])
        queue.push([])  # an empty push fits even a full queue
        assert queue.pop() == [b"a"]
        queue.push([b"d"])  # room again
        assert drain(queue) == [b"b", b"c", b"d"]


def test_capacity_of_one(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path, max_elements=1) as queue:
        queue.push([b"a"])
        with pytest.raises(QueueFullError):
            queue.push([b"b"])
        assert queue.pop() == [b"a"]
        queue.push([b"b"])
        assert queue.pop() == [b"b"]


# ---------------------------------------------------------------- item types


def test_bytearray_and_memoryview_items_come_back_as_bytes(queue_path: str) -> None:
    source = bytearray(b"mutable")
    view = memoryview(b"0123456789")[2:5]
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([source, view, b"plain"])  # type: ignore[list-item]
        source[:] = b"CHANGED"  # the queue copied the data at push time
        result = queue.pop(max_elements=3)
        assert result == [b"mutable", b"234", b"plain"]
        assert all(type(item) is bytes for item in result)
        assert queue.payload_size == 0


def test_tuple_of_items_is_accepted(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push((b"a", b"b"))  # type: ignore[arg-type]
        assert drain(queue) == [b"a", b"b"]


def test_empty_push_is_a_no_op(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([])
        assert_counters(queue, [])
        queue.push([b"a"])
        queue.push([])
        assert_counters(queue, [b"a"])
        assert drain(queue) == [b"a"]


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


class _CountingDb:
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


def _writes_needed_for_large_push(path: str) -> int:
    with PersistentQueueWithCapacity(path, batch_bytes=64 * 1024) as queue:
        queue.push([b"before"])
        counter = _CountingDb(queue._engine._store._db, fail_at=None)
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
    counter = _CountingDb(queue._engine._store._db, fail_at=2)
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


def test_remove_queue_refuses_a_rocksdb_directory_that_is_not_a_queue(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    path = str(tmp_path / "precious")
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    database = Rdict(path, options)
    database[b"key"] = b"value"
    database.close()
    with pytest.raises(QueueError, match="not a rocksq_aio queue"):
        remove_queue(path)
    assert os.path.exists(os.path.join(path, "CURRENT"))


def test_remove_queue_refuses_a_directory_open_in_rocksq(tmp_path: Path) -> None:
    blocking = pytest.importorskip("rocksq.blocking", reason="rocksq 0.3.0 is not installed")
    path = str(tmp_path / "live")
    live = blocking.PersistentQueueWithCapacity(path, 10)
    live.push([b"x"])
    with pytest.raises(QueueLockedError):
        remove_queue(path)
    assert os.path.exists(os.path.join(path, "CURRENT"))


# ---------------------------------------------------------------- counters saved lazily (format v2)
# One-item pushes and pops write only their key; the counters are saved every
# SAVE_COUNTERS_EVERY of them and at close, and found again from the keys at open.

_DIE_AFTER_ONE_ITEM_CALLS_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    from rocksq_aio.blocking import PersistentQueueWithCapacity

    path, pushes, pops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    queue = PersistentQueueWithCapacity(path)
    for number in range(pushes):
        queue.push([b"item-%d-" % number + b"x" * (number % 7)])
    for _ in range(pops):
        queue.pop()
    print(queue.len, queue.payload_size, flush=True)
    os._exit(0)  # die without closing, like kill -9
    """
)


@pytest.mark.parametrize(
    ("first_run", "second_run"),
    [((10, 3), (0, 0)), ((1500, 700), (5, 0)), ((40, 40), (3, 1)), ((0, 0), (2500, 2498))],
    ids=["few", "past-a-save", "emptied", "many-since-a-save"],
)
@pytest.mark.rocksdb_only
def test_one_item_calls_survive_a_crash_with_exact_counters(
    queue_path: str, first_run: tuple[int, int], second_run: tuple[int, int]
) -> None:
    expected: deque[bytes] = deque()
    for runs in (first_run, second_run):
        pushes, pops = runs
        # Each run numbers its items from 0: the model does the same.
        for number in range(pushes):
            expected.append(b"item-%d-" % number + b"x" * (number % 7))
        for _ in range(pops):
            expected.popleft()
        completed = subprocess.run(
            [sys.executable, "-c", _DIE_AFTER_ONE_ITEM_CALLS_SCRIPT, queue_path, *map(str, runs)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        length, payload = map(int, completed.stdout.split())
        assert (length, payload) == (len(expected), sum(map(len, expected)))
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert_counters(queue, list(expected))
        queue.push([b"after"])
        assert drain(queue) == [*expected, b"after"]
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert_counters(queue, [])


@pytest.mark.rocksdb_only
def test_clean_close_saves_the_counters(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        for number in range(5):
            queue.push([b"%d" % number])
        queue.pop()
        assert queue._engine._unsaved == 6
    with PersistentQueueWithCapacity(queue_path) as queue:
        saved = queue._engine._store.get("meta", b"state")
        assert saved == struct.pack(">QQQ", 1, 5, 4)
        assert_counters(queue, [b"1", b"2", b"3", b"4"])


@pytest.mark.rocksdb_only
def test_a_stray_key_below_the_head_is_dropped_at_open(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a", b"b", b"c"])
        assert queue.pop(2) == [b"a", b"b"]
    with raw_database(Path(queue_path)) as families:
        families["data"][struct.pack(">Q", 0)] = b"stray"
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert_counters(queue, [b"c"])
        assert queue._engine._store.data_key_bounds() == (2, 2)


@pytest.mark.rocksdb_only
def test_a_version_1_queue_is_read_by_its_exact_counters_and_upgraded(queue_path: str) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a", b"b", b"c"])
    # Version 1 saved the counters with every write, and left keys past them
    # only as orphans of an unfinished staged push.
    with raw_database(Path(queue_path)) as families:
        families["meta"][b"kind"] = b"rocksq_aio.fifo.v1"
        families["data"][struct.pack(">Q", 3)] = b"orphan"
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert_counters(queue, [b"a", b"b", b"c"])
        assert queue._engine._store.get("meta", b"kind") == b"rocksq_aio.fifo.v3"
        assert drain(queue) == [b"a", b"b", b"c"]


@pytest.mark.rocksdb_only
def test_a_release_staged_below_a_head_with_unsaved_counters_is_undone_at_open(
    queue_path: str,
) -> None:
    """The staging marker names the keys to drop: they lie past the saved head."""
    items = [bytes([number]) * 700 for number in range(10)]
    queue = PersistentQueueWithCapacity(queue_path, batch_bytes=1024)
    for item in items:
        queue.push([item])  # one key each, counters unsaved
    leased = queue.reserve_batch(3)  # counters saved: head 3, tail 10
    assert leased.items == items[:3]
    assert [queue.pop() for _ in range(3)] == [[item] for item in items[3:6]]  # head 6, unsaved
    counter = _CountingDb(queue._engine._store._db, fail_at=2)
    queue._engine._store._db = counter  # type: ignore[assignment]
    with pytest.raises(QueueIOError):
        leased.nack()  # puts items 0-2 back at [3, 6) in staged writes; the 2nd fails
    queue._engine._store._db = counter._db
    del counter, leased
    queue.close()
    with PersistentQueueWithCapacity(queue_path, batch_bytes=1024) as queue:
        # The lease of the dead handle is released at open: its items come first.
        assert_counters(queue, items[:3] + items[6:])
        assert drain(queue) == items[:3] + items[6:]


@pytest.mark.rocksdb_only
def test_after_a_crash_the_payload_is_counted_when_first_read_not_at_open(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rocksq_aio.rocksdb.store import Store

    counted: list[tuple[int, int]] = []
    real_payload_of = Store.payload_of

    def counting_payload_of(store: Store, start: int, stop: int) -> int:
        counted.append((start, stop))
        return real_payload_of(store, start, stop)

    monkeypatch.setattr(Store, "payload_of", counting_payload_of)
    expected: deque[bytes] = deque()
    for run in range(2):  # the payload stays unknown across a second crash
        subprocess.run(
            [sys.executable, "-c", _DIE_AFTER_ONE_ITEM_CALLS_SCRIPT, queue_path, "30", "4"],
            timeout=120,
            check=True,
        )
        expected.extend(b"item-%d-" % number + b"x" * (number % 7) for number in range(30))
        for _ in range(4):
            expected.popleft()
        queue = PersistentQueueWithCapacity(queue_path)
        assert counted == []  # opening read no element
        assert queue.len == len(expected)
        if run == 0:
            queue._engine._store.close()  # a crash again, payload still not counted
    queue.push([b"one more"])
    expected.append(b"one more")
    assert queue.pop() == [expected.popleft()]
    assert queue.payload_size == sum(map(len, expected))
    assert counted == [(queue._engine._state.head, queue._engine._state.tail)]
    assert queue.payload_size == sum(map(len, expected))  # from memory from now on
    assert len(counted) == 1
    queue.close()
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert_counters(queue, list(expected))
    assert len(counted) == 1


_CYCLE_AT_EXIT = textwrap.dedent(
    """
    import sys
    from rocksq_aio.blocking import PersistentQueueWithCapacity
    from rocksq_aio import QueueFullError
    queue = PersistentQueueWithCapacity(sys.argv[1], max_elements=1)
    queue.push([b"kept"])
    try:
        queue.push([b"refused"])
    except QueueFullError as error:
        kept = error  # RocksQ users keep it: its traceback holds the queue in a cycle
    del queue
    """
)


@pytest.mark.rocksdb_only
def test_a_queue_still_open_at_interpreter_exit_is_closed_silently(queue_path: str) -> None:
    finished = _run_python(_CYCLE_AT_EXIT, queue_path)
    assert finished.returncode == 0
    assert finished.stderr == ""
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert queue.pop() == [b"kept"]
