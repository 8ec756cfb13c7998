"""Behaviour of the blocking MPMC stream, ``rocksq_aio.blocking.MpmcQueue``."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rocksq_aio import StartPosition, remove_mpmc_queue
from rocksq_aio.blocking import MpmcQueue

from support.clock import FakeClock
from support.closed import assert_closed_refuses
from support.rocksdb import raw_database

pytestmark = pytest.mark.contract

ALL = 2**20
YEAR = 365 * 24 * 3600.0
Oldest = StartPosition.Oldest
Newest = StartPosition.Newest


def read_all(queue: MpmcQueue, label: str, start: StartPosition = Oldest) -> list[bytes]:
    items, expired = queue.next(label, start, max_elements=ALL)
    assert expired is False
    return items


def add_and_read(queue: MpmcQueue, *, one: str, both: str) -> None:
    """Add a and b; label ``one`` reads a, label ``both`` reads a and b."""
    queue.add([b"a", b"b"])
    assert queue.next(one) == ([b"a"], False)
    assert queue.next(both, max_elements=2) == ([b"a", b"b"], False)


# ---------------------------------------------------------------- order and labels


def test_add_next_order(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"a", b"b"])
        queue.add([b"c"])
        assert queue.len == 3
        assert len(queue) == 3
        assert not queue.is_empty
        result = queue.next("r")
        assert isinstance(result, tuple)
        assert result == ([b"a"], False)
        assert isinstance(result[0], list)
        assert type(result[1]) is bool
        assert queue.next("r", Oldest, 1) == ([b"b"], False)
        queue.add([b"d"])
        assert queue.next("r", max_elements=10) == ([b"c", b"d"], False)
        assert queue.next("r", max_elements=10) == ([], False)
        # Reading does not remove anything from the stream.
        assert queue.len == 4


def test_next_on_empty_queue(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.is_empty
        assert queue.next("r") == ([], False)
        assert queue.next("r", Newest, 5) == ([], False)


def test_next_with_huge_max_elements(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"a", b"b"])
        assert queue.next("r", Oldest, 2**64) == ([b"a", b"b"], False)
        assert queue.next("r", Oldest, 2**64) == ([], False)


def test_labels_are_independent(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2", b"3", b"4"])
        assert queue.next("a", max_elements=3) == ([b"1", b"2", b"3"], False)
        assert queue.next("b", max_elements=1) == ([b"1"], False)
        assert queue.next("c", max_elements=10) == ([b"1", b"2", b"3", b"4"], False)
        assert queue.next("a", max_elements=10) == ([b"4"], False)
        assert queue.next("b", max_elements=2) == ([b"2", b"3"], False)
        assert queue.next("c", max_elements=10) == ([], False)
        queue.add([b"5"])
        for label, expected in (("a", [b"5"]), ("b", [b"4", b"5"]), ("c", [b"5"])):
            assert queue.next(label, max_elements=10) == (expected, False)


def test_labels_property_is_sorted(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.labels == []
        for label in ("zeta", "alpha", "Mid", "beta"):
            queue.next(label)
        assert queue.labels == ["Mid", "alpha", "beta", "zeta"]
        assert isinstance(queue.labels, list)
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.labels == ["Mid", "alpha", "beta", "zeta"]


def test_positions_persist_across_reopen(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2", b"3"])
        assert queue.next("a", max_elements=2) == ([b"1", b"2"], False)
        assert queue.next("b", max_elements=1) == ([b"1"], False)
        assert queue.next("done", max_elements=3) == ([b"1", b"2", b"3"], False)
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.len == 3
        assert queue.labels == ["a", "b", "done"]
        assert queue.next("a", max_elements=10) == ([b"3"], False)
        assert queue.next("b", Newest, max_elements=10) == ([b"2", b"3"], False)
        assert queue.next("done", max_elements=10) == ([], False)
        queue.add([b"4"])
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        for label in ("a", "b", "done"):
            assert queue.next(label, max_elements=10) == ([b"4"], False)


def test_remove_label(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2", b"3"])
        assert queue.next("a", max_elements=2) == ([b"1", b"2"], False)
        assert queue.next("keep", max_elements=1) == ([b"1"], False)
        assert queue.remove_label("a") is True
        assert queue.labels == ["keep"]
        assert queue.remove_label("a") is False
        assert queue.remove_label("never-existed") is False
        # A removed label starts over, per its start position.
        assert queue.next("a", Oldest, 10) == ([b"1", b"2", b"3"], False)
        assert queue.remove_label("a") is True
        assert queue.next("a", Newest, 10) == ([b"3"], False)
        # Other labels were not touched.
        assert queue.next("keep", max_elements=10) == ([b"2", b"3"], False)
        assert queue.len == 3


def test_removed_label_stays_removed_after_reopen(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2"])
        queue.next("a", max_elements=2)
        queue.next("b", max_elements=1)
        assert queue.remove_label("a") is True
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.labels == ["b"]
        assert queue.remove_label("a") is False
        assert queue.next("a", max_elements=10) == ([b"1", b"2"], False)


# ---------------------------------------------------------------- start positions


def test_new_label_oldest_starts_at_first_element(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2", b"3"])
        assert queue.next("o", Oldest, 10) == ([b"1", b"2", b"3"], False)


def test_new_label_newest_on_non_empty_queue_gets_last_element(
    queue_path: str, clock: FakeClock
) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2", b"3"])
        assert queue.next("n", Newest, 10) == ([b"3"], False)
        assert queue.next("n", Newest, 10) == ([], False)
        queue.add([b"4", b"5"])
        assert queue.next("n", Newest, 10) == ([b"4", b"5"], False)


def test_new_label_newest_with_max_one(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2"])
        assert queue.next("n", Newest) == ([b"2"], False)
        assert queue.next("n", Newest) == ([], False)


def test_new_label_newest_on_empty_queue_starts_at_next_added(
    queue_path: str, clock: FakeClock
) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.next("n", Newest, 10) == ([], False)
        assert queue.labels == ["n"]
        queue.add([b"1", b"2"])
        assert queue.next("n", Newest, 10) == ([b"1", b"2"], False)


def test_new_label_newest_after_everything_expired(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        queue.add([b"old"])
        clock.advance(60)
        assert queue.next("n", Newest, 10) == ([], False)
        assert queue.is_empty
        queue.add([b"new"])
        assert queue.next("n", Newest, 10) == ([b"new"], False)


def test_existing_label_ignores_start_position(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2", b"3", b"4"])
        assert queue.next("x", Oldest, 1) == ([b"1"], False)
        assert queue.next("x", Newest, 1) == ([b"2"], False)
        assert queue.next("y", Newest, 1) == ([b"4"], False)
        queue.add([b"5", b"6"])
        assert queue.next("y", Oldest, 10) == ([b"5", b"6"], False)
        assert queue.next("x", Newest, 10) == ([b"3", b"4", b"5", b"6"], False)


def test_accepts_rocksq_start_position(queue_path: str, clock: FakeClock) -> None:
    rocksq = pytest.importorskip("rocksq")
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2", b"3"])
        assert queue.next("old", rocksq.StartPosition.Oldest, 10) == ([b"1", b"2", b"3"], False)
        assert queue.next("new", rocksq.StartPosition.Newest, 10) == ([b"3"], False)


# ---------------------------------------------------------------- TTL


def test_ttl_expiry_and_the_expired_flag(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        # "unread" exists before anything is added: it has read nothing.
        assert queue.next("unread") == ([], False)
        add_and_read(queue, one="partial", both="exact")
        clock.advance(5)
        queue.add([b"c"])
        assert queue.next("all", max_elements=10) == ([b"a", b"b", b"c"], False)
        assert queue.len == 3

        clock.advance(6)  # a and b are 11 s old, c is 6 s old
        queue.add([b"d"])  # expiry happens here
        assert queue.len == 2

        assert queue.next("late", max_elements=10) == ([b"c", b"d"], False)
        # Labels that had not read a or b are told, exactly once.
        assert queue.next("unread", max_elements=10) == ([b"c", b"d"], True)
        assert queue.next("unread", max_elements=10) == ([], False)
        assert queue.next("partial", max_elements=1) == ([b"c"], True)
        assert queue.next("partial", max_elements=10) == ([b"d"], False)
        # Labels that had read every expired element are not.
        assert queue.next("exact", max_elements=10) == ([b"c", b"d"], False)
        assert queue.next("all", max_elements=10) == ([b"d"], False)
        assert queue.labels == ["all", "exact", "late", "partial", "unread"]


def test_ttl_expiry_during_next(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        add_and_read(queue, one="reader", both="done")
        clock.advance(11)
        assert queue.next("reader", max_elements=10) == ([], True)
        assert queue.len == 0
        assert queue.is_empty
        assert queue.next("reader", max_elements=10) == ([], False)
        assert queue.next("done", max_elements=10) == ([], False)
        assert queue.next("fresh", max_elements=10) == ([], False)
        queue.add([b"c"])
        assert queue.next("reader", max_elements=10) == ([b"c"], False)
        assert queue.next("done", max_elements=10) == ([b"c"], False)
        assert queue.next("fresh", max_elements=10) == ([b"c"], False)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])
def test_one_item_next_expires_first(queue_path: str, clock: FakeClock, cache_bytes: int) -> None:
    # next(label) of one item for a known label is the blocking face's
    # shortcut: it must still expire what is due before it reads.
    with MpmcQueue(queue_path, 10, clock=clock, cache_bytes=cache_bytes) as queue:
        queue.add([b"a", b"b"])
        assert queue.next("reader") == ([b"a"], False)
        clock.advance(11)
        assert queue.next("reader") == ([], True)
        assert queue.len == 0
        queue.add([b"c"])
        assert queue.next("reader") == ([b"c"], False)
        assert queue.next("reader") == ([], False)


def test_elements_younger_than_ttl_stay(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        queue.add([b"a"])
        clock.advance(9)
        queue.add([b"b"])
        assert queue.len == 2
        assert queue.next("r", max_elements=10) == ([b"a", b"b"], False)
        clock.advance(2)  # a is 11 s old, b is 2 s old
        queue.add([b"c"])
        assert queue.len == 2
        assert queue.next("s", max_elements=10) == ([b"b", b"c"], False)


def test_fractional_ttl(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 1.5, clock=clock) as queue:
        queue.add([b"a"])
        clock.advance(1.0)
        queue.add([b"b"])
        assert queue.len == 2
        clock.advance(1.0)  # a is 2 s old, b 1 s
        assert queue.next("r", max_elements=10) == ([b"b"], False)
        assert queue.len == 1


def test_sub_millisecond_ttl_still_expires(queue_path: str, clock: FakeClock) -> None:
    """A positive ttl must expire elements; only 0 means never."""
    with MpmcQueue(queue_path, 0.0004, clock=clock) as queue:
        queue.add([b"a"])
        clock.advance(3600)
        queue.add([b"b"])
        assert queue.len == 1
        assert queue.next("r", max_elements=10) == ([b"b"], False)


def test_ttl_zero_never_expires(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"a", b"b"])
        assert queue.next("r") == ([b"a"], False)
        clock.advance(1000 * YEAR)
        queue.add([b"c"])
        assert queue.len == 3
        assert queue.next("r", max_elements=10) == ([b"b", b"c"], False)
    with MpmcQueue(queue_path, 0.0, clock=clock) as queue:
        clock.advance(1000 * YEAR)
        assert queue.next("s", max_elements=10) == ([b"a", b"b", b"c"], False)
        assert queue.len == 3


def test_labels_and_positions_never_expire(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 1, clock=clock) as queue:
        queue.add([b"a", b"b"])
        assert queue.next("read-all", max_elements=2) == ([b"a", b"b"], False)
        assert queue.next("read-one") == ([b"a"], False)
        assert queue.next("fresh-newest", Newest) == ([b"b"], False)
    clock.advance(5 * YEAR)
    with MpmcQueue(queue_path, 1, clock=clock) as queue:
        assert queue.labels == ["fresh-newest", "read-all", "read-one"]
        queue.add([b"c"])
        assert queue.len == 1
        clock.advance(5 * YEAR)
    with MpmcQueue(queue_path, 1, clock=clock) as queue:
        assert queue.labels == ["fresh-newest", "read-all", "read-one"]
        queue.add([b"d"])
        assert queue.len == 1
        # Positions were kept (moved past what expired), not reset.
        assert queue.next("read-all", Newest, 10) == ([b"d"], True)
        assert queue.next("read-one", Oldest, 10) == ([b"d"], True)
        assert queue.next("fresh-newest", Oldest, 10) == ([b"d"], True)


def test_expired_flag_persists_across_reopen(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        add_and_read(queue, one="r", both="all")
        clock.advance(20)
        queue.add([b"c"])  # expires a and b; flags "r" without reporting
        assert queue.len == 1
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        assert queue.len == 1
        assert queue.next("r", max_elements=10) == ([b"c"], True)
        assert queue.next("all", max_elements=10) == ([b"c"], False)
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        assert queue.next("r", max_elements=10) == ([], False)


def test_expiry_is_detected_after_reopen(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        queue.add([b"a"])
        clock.advance(5)
        queue.add([b"b"])
    clock.advance(6)
    with MpmcQueue(queue_path, 10, clock=clock) as queue:
        assert queue.next("r", max_elements=10) == ([b"b"], False)
        assert queue.len == 1


def test_clock_going_backwards(queue_path: str, clock: FakeClock) -> None:
    start = clock.now
    with MpmcQueue(queue_path, 100, clock=clock) as queue:
        queue.add([b"x"])
        clock.now = start - 500  # the wall clock steps back
        queue.add([b"y"])
        clock.now = start - 400
        queue.add([b"z"])
        assert queue.len == 3
        clock.now = start + 50
        # y and z are not older than x: nothing has expired yet, order kept.
        assert queue.next("r", max_elements=10) == ([b"x", b"y", b"z"], False)
        assert queue.len == 3
        queue.add([b"w"])
        assert queue.len == 4
    with MpmcQueue(queue_path, 100, clock=clock) as queue:
        clock.now = start + 101
        assert queue.next("s", max_elements=10) == ([b"w"], False)
        assert queue.len == 1
        assert queue.next("r", max_elements=10) == ([b"w"], False)
        clock.now = start + 151
        queue.add([b"v"])
        assert queue.len == 1
        # r had read w before it expired: nothing to report.
        assert queue.next("r", max_elements=10) == ([b"v"], False)


# ---------------------------------------------------------------- lifecycle and labels


def test_unicode_labels_work_and_persist(queue_path: str, clock: FakeClock) -> None:
    labels = ["очередь", "🚀-launch", "ünïcödé", "中文", "a b\tc"]
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1", b"2"])
        for count, label in enumerate(labels, start=1):
            queue.next(label, max_elements=count % 2 + 1)
        assert queue.labels == sorted(labels)
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.labels == sorted(labels)
        for count, label in enumerate(labels, start=1):
            expected = [b"2"] if count % 2 + 1 == 1 else []
            assert queue.next(label, max_elements=10) == (expected, False)
        assert queue.remove_label("🚀-launch") is True
        assert "🚀-launch" not in queue.labels


def test_label_of_maximum_length(queue_path: str, clock: FakeClock) -> None:
    label = "é" * 2048  # 4096 bytes in UTF-8
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"1"])
        assert queue.next(label) == ([b"1"], False)
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.labels == [label]


def test_operations_after_close_raise(queue_path: str, clock: FakeClock) -> None:
    queue = MpmcQueue(queue_path, 0, clock=clock)
    queue.add([b"a"])
    queue.close()
    assert_closed_refuses(
        queue,
        lambda: queue.add([b"b"]),
        lambda: queue.next("r"),
        lambda: queue.remove_label("r"),
    )
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.next("r", max_elements=10) == ([b"a"], False)


def test_remove_mpmc_queue(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"a"])
        queue.next("r")
    remove_mpmc_queue(queue_path)
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.is_empty
        assert queue.labels == []


def test_bytes_like_items_and_empty_add(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([])
        assert queue.is_empty
        queue.add([bytearray(b"ba"), memoryview(b"mv"), b"", b"b"])  # type: ignore[list-item]
        items, expired = queue.next("r", max_elements=10)
        assert items == [b"ba", b"mv", b"", b"b"]
        assert all(type(item) is bytes for item in items)
        assert expired is False


def test_no_gil_argument_is_accepted(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add([b"a", b"b"], no_gil=False)
        assert queue.next("r", Oldest, 1, no_gil=False) == ([b"a"], False)
        assert queue.next("r", Oldest, 1, True) == ([b"b"], False)


# ---------------------------------------------------------------- counters saved lazily (format v2)
# A one-item add writes only its element; the counters go with every
# SAVE_COUNTERS_EVERY-th one and with close(), and the tail is found at open.

_DIE_AFTER_ADDS_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    from rocksq_aio.blocking import MpmcQueue

    path, count = sys.argv[1], int(sys.argv[2])
    queue = MpmcQueue(path, 0, clock=lambda: 5_000_000.0 + len(queue))
    queue.next("reader")  # a label saved before the adds
    for number in range(count):
        queue.add([b"element-%d" % number])
    os._exit(0)  # die without closing, like kill -9
    """
)


@pytest.mark.rocksdb_only
@pytest.mark.parametrize("count", [5, 1500])
def test_one_item_adds_survive_a_crash(queue_path: str, count: int) -> None:
    subprocess.run(
        [sys.executable, "-c", _DIE_AFTER_ADDS_SCRIPT, queue_path, str(count)],
        timeout=120,
        check=True,
    )
    expected = [b"element-%d" % number for number in range(count)]
    # A clock far behind the one that stamped the elements: new stamps must
    # still not go below the newest one found on disk.
    with MpmcQueue(queue_path, 0, clock=lambda: 1.0) as queue:
        assert queue.len == count
        newest_stamp = 5_000_000_000 + (count - 1) * 1000
        assert queue._engine._state.newest_timestamp_ms == newest_stamp
        assert queue.next("reader", StartPosition.Oldest, count + 1) == (expected, False)
        queue.add([b"after"])
        assert queue.next("reader") == ([b"after"], False)
        assert queue._engine._state.newest_timestamp_ms == newest_stamp
    with MpmcQueue(queue_path, 0) as queue:
        assert queue.len == count + 1
        assert queue.next("late", StartPosition.Oldest, count + 2) == ([*expected, b"after"], False)


@pytest.mark.rocksdb_only
def test_a_version_1_mpmc_queue_is_read_by_its_exact_counters_and_upgraded(
    queue_path: str,
) -> None:
    with MpmcQueue(queue_path, 0) as queue:
        queue.add([b"a", b"b"])
    # Version 1 saved the counters with every write: a key past them is an orphan.
    with raw_database(Path(queue_path)) as families:
        families["meta"][b"kind"] = b"rocksq_aio.mpmc.v1"
        families["data"][struct.pack(">Q", 2)] = b"\x00" * 8 + b"orphan"
    with MpmcQueue(queue_path, 0) as queue:
        assert queue.len == 2
        assert queue._engine._store.get("meta", b"kind") == b"rocksq_aio.mpmc.v2"
        assert queue.next("r", StartPosition.Oldest, 5) == ([b"a", b"b"], False)
        assert queue._engine._store.data_key_bounds() == (0, 1)
