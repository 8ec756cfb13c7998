"""Bad input, more: items bigger than the batch byte cap round-trip, and
rejected options, reserves and calls on a full queue change nothing stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import QueueFullError, StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.faults import ALL, MiB, append, contents, open_queue


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_item_bigger_than_the_batch_byte_cap_round_trips(queue_path: str, kind: str) -> None:
    huge = os.urandom(3 * MiB)
    items = [b"before", huge, b"after"]
    with open_queue(kind, queue_path, batch_bytes=MiB) as queue:
        append(queue, [huge])
        append(queue, items)
        if isinstance(queue, PersistentQueueWithCapacity):
            assert queue.payload_size == 2 * len(huge) + len(b"beforeafter")
            assert queue.pop() == [huge]
        else:
            assert queue.next("r") == ([huge], False)
    # Reopened (read from disk, not from the in-memory cache).
    with open_queue(kind, queue_path, batch_bytes=MiB) as queue:
        if isinstance(queue, PersistentQueueWithCapacity):
            assert queue.pop(max_elements=ALL) == items
        else:
            assert queue.next("r", max_elements=ALL) == (items, False)


def test_reserved_huge_item_round_trips_and_is_released_intact(queue_path: str) -> None:
    huge = os.urandom(3 * MiB)
    with PersistentQueueWithCapacity(queue_path, batch_bytes=MiB, cache_bytes=0) as queue:
        queue.push([huge])
        batch = queue.reserve_batch(1)
        assert batch.items == [huge]
        batch.nack()
        assert queue.pop() == [huge]


STORED = [b"first", b"second"]


def _assert_unchanged(kind: str, path: str) -> None:
    assert contents(kind, path) == STORED


BAD_OPTIONS: list[Any] = [
    pytest.param("directory_mode", -1, ValueError, id="mode-negative"),
    pytest.param("directory_mode", 0o10000, ValueError, id="mode-too-big"),
    pytest.param("directory_mode", "0o700", TypeError, id="mode-str"),
    pytest.param("directory_mode", 448.0, TypeError, id="mode-float"),
    pytest.param("directory_mode", True, TypeError, id="mode-bool"),
    pytest.param("directory_mode", None, TypeError, id="mode-None"),
    pytest.param("batch_bytes", 0, ValueError, id="batch_bytes-zero"),
    pytest.param("batch_bytes", -1, ValueError, id="batch_bytes-negative"),
    pytest.param("batch_bytes", 1.5, TypeError, id="batch_bytes-float"),
    pytest.param("sync", "yes", TypeError, id="sync-str"),
    pytest.param("sync", 0, TypeError, id="sync-int"),
]


@pytest.mark.parametrize(("option", "value", "error"), BAD_OPTIONS)
@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_bad_constructor_options_change_nothing(
    tmp_path: Path, kind: str, option: str, value: Any, error: type[Exception]
) -> None:
    path = str(tmp_path / "queue")
    with pytest.raises(error, match=option):
        open_queue(kind, path, **{option: value})
    assert not os.path.exists(path), "a rejected open must not create the directory"
    with open_queue(kind, path) as queue:
        append(queue, STORED)
    with pytest.raises(error, match=option):
        open_queue(kind, path, **{option: value})
    _assert_unchanged(kind, path)


BAD_RESERVE: list[Any] = [
    pytest.param(0, ValueError, id="zero"),
    pytest.param(-1, ValueError, id="negative"),
    pytest.param("1", TypeError, id="str"),
    pytest.param(1.0, TypeError, id="float"),
    pytest.param(True, TypeError, id="True"),
    pytest.param(None, TypeError, id="None"),
]


@pytest.mark.parametrize(("max_elements", "error"), BAD_RESERVE)
def test_bad_reserve_changes_nothing(queue_path: str, max_elements: Any, error: type) -> None:
    with PersistentQueueWithCapacity(queue_path) as queue:
        queue.push(STORED)
        with pytest.raises(error, match="max_elements"):
            queue.reserve_batch(max_elements)
        with pytest.raises(error, match="max_elements"), queue.reserve(max_elements):
            pytest.fail("the block of a rejected reserve ran")
        assert queue.pending == 0
    with MpmcQueue(queue_path + "-mpmc", 0) as stream:
        stream.add(STORED)
        with pytest.raises(error, match="max_elements"):
            stream.reserve_batch("r", StartPosition.Oldest, max_elements)
        with pytest.raises(TypeError, match="label"):
            stream.reserve_batch(None, StartPosition.Oldest, 1)  # type: ignore[arg-type]
        assert stream.labels == []
        assert stream.pending("r") == 0
    _assert_unchanged("fifo", queue_path)
    _assert_unchanged("mpmc", queue_path + "-mpmc")


def test_rejected_calls_in_a_row_leave_a_full_queue_unchanged(queue_path: str) -> None:
    """A full queue: over-capacity pushes, bad items and bad counts, mixed; nothing moves."""
    with PersistentQueueWithCapacity(queue_path, max_elements=2) as queue:
        queue.push(STORED)
        rejected: list[tuple[Callable[[], object], type[Exception]]] = [
            (lambda: queue.push([b"x"]), QueueFullError),
            (lambda: queue.push([b"x", "y"]), TypeError),  # type: ignore[list-item]
            (lambda: queue.push([os.urandom(3 * MiB)]), QueueFullError),
            (lambda: queue.pop(0), ValueError),
            (lambda: queue.reserve_batch(-1), ValueError),
            (lambda: queue.push(b"x" for _ in range(1)), TypeError),  # type: ignore[arg-type]
        ]
        for call, error in rejected:
            with pytest.raises(error):
                call()
            assert (queue.len, queue.payload_size) == (2, len(b"firstsecond"))
    _assert_unchanged("fifo", queue_path)
