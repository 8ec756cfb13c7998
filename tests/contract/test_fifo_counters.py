"""The FIFO's counters saved lazily (format v2): one-item pushes and pops
write only their key; the counters are saved every SAVE_COUNTERS_EVERY of
them and at close, and found again from the keys at open (after a crash,
from a version 1 queue, under a staged release).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import pytest

from rocksq_aio import QueueIOError
from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.fifo import CountingDb, assert_counters, drain
from support.rocksdb import raw_database

pytestmark = pytest.mark.contract


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
        assert queue._engine._store.get("meta", b"kind") == b"rocksq_aio.fifo.v2"
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
    counter = CountingDb(queue._engine._store._db, fail_at=2)
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
