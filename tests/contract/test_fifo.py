"""Behaviour of the blocking FIFO queue, ``rocksq_aio.blocking.PersistentQueueWithCapacity``:
order and counters, persistence and lifecycle (locks, close, removal, the other
kind's directories, interpreter exit), capacity and item types. Large pushes
and the tail cache are in test_fifo_writes.py, the lazily saved counters in
test_fifo_counters.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import (
    QueueClosedError,
    QueueError,
    QueueFullError,
    QueueLockedError,
    remove_mpmc_queue,
    remove_queue,
)
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.closed import assert_closed_refuses
from support.fifo import assert_counters, drain

pytestmark = pytest.mark.contract

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
@pytest.mark.parametrize("spelled", ["as-opened", "through-its-parent"])
def test_reopening_an_open_path_in_the_same_process_is_locked(
    queue_path: str, spelled: str
) -> None:
    same = queue_path
    if spelled == "through-its-parent":
        same = queue_path + "/../" + os.path.basename(queue_path)
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push([b"a"])
        with pytest.raises(QueueLockedError):
            PersistentQueueWithCapacity(same)
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
    assert_closed_refuses(queue, lambda: queue.push([b"b"]), queue.pop)
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
