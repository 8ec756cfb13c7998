"""The nonblocking face's MPMC queue: add/next and their Responses, properties,
labels, start positions, label removal, TTL expiry and its flag, ordering.
"""

from __future__ import annotations

import pytest

from rocksq_aio import StartPosition
from rocksq_aio.nonblocking import MpmcQueue, MpmcResponse, MpmcResponseVariant

from support.clock import FakeClock
from support.nonblocking import items

pytestmark = pytest.mark.contract

Oldest = StartPosition.Oldest
Newest = StartPosition.Newest


def test_mpmc_add_next_and_variant_fields(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        added = queue.add([b"a", b"b", b"c"])
        assert isinstance(added, MpmcResponse)
        add_variant = added.get()
        assert isinstance(add_variant, MpmcResponseVariant)
        assert add_variant.data is None
        assert add_variant.labels is None
        assert add_variant.removed_label is None
        assert add_variant.len is None
        assert add_variant.size is None

        read = queue.next("r", Oldest, 2).get()
        assert read.data == ([b"a", b"b"], False)
        assert isinstance(read.data, tuple)
        assert read.labels is None
        assert read.removed_label is None
        assert read.len is None
        assert queue.next("r").get().data == ([b"c"], False)
        assert queue.next("r", Oldest, 5).get().data == ([], False)
        # Reading removes nothing from the stream.
        assert queue.len.get().len == 3


@pytest.mark.rocksdb_only
def test_mpmc_properties_are_responses(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        assert queue.is_empty
        assert queue.labels.get().labels == []
        assert queue.len.get().len == 0
        queue.add([b"a"]).get()
        queue.next("zeta").get()
        queue.next("alpha").get()
        labels = queue.labels
        assert isinstance(labels, MpmcResponse)
        assert labels.get().labels == ["alpha", "zeta"]
        length = queue.len.get()
        assert length.len == 1
        assert length.labels is None
        disk = queue.disk_size.get()
        assert disk.size is not None
        assert disk.size > 0
        assert not queue.is_empty


def test_mpmc_labels_reflect_operations_issued_before_without_waiting(
    queue_path: str, clock: FakeClock
) -> None:
    # As in RocksQ, reads of labels and len come after the operations issued before.
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        queue.add([b"a", b"b"])
        assert queue.len.get().len == 2
        queue.next("r")
        assert queue.labels.get().labels == ["r"]
        queue.remove_label("r")
        assert queue.labels.get().labels == []


def test_mpmc_labels_are_independent(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        queue.add([b"a", b"b", b"c"])
        first = queue.next("one", Oldest, 2)
        second = queue.next("two", Oldest, 1)
        third = queue.next("one", Oldest, 2)
        assert first.get().data == ([b"a", b"b"], False)
        assert second.get().data == ([b"a"], False)
        assert third.get().data == ([b"c"], False)


def test_mpmc_start_positions(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        assert queue.next("early", Newest, 5).get().data == ([], False)
        queue.add([b"a", b"b", b"c"])
        # A new label at Newest starts at the last stored element.
        assert queue.next("new", Newest, 5).get().data == ([b"c"], False)
        assert queue.next("old", Oldest, 5).get().data == ([b"a", b"b", b"c"], False)
        # One created on an empty queue reads what was added after.
        assert queue.next("early", Oldest, 5).get().data == ([b"a", b"b", b"c"], False)
        # An existing label ignores the start position.
        queue.add([b"d"])
        assert queue.next("old", Newest, 5).get().data == ([b"d"], False)


def test_mpmc_remove_label(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 0, 10, clock=clock) as queue:
        queue.add([b"a", b"b"])
        queue.next("r", Oldest, 1).get()
        removed = queue.remove_label("r")
        assert isinstance(removed, MpmcResponse)
        variant = removed.get()
        assert variant.removed_label is True
        assert variant.data is None
        assert queue.remove_label("r").get().removed_label is False
        assert queue.remove_label("never").get().removed_label is False
        assert queue.labels.get().labels == []
        # A removed label starts again from scratch.
        assert queue.next("r", Oldest, 5).get().data == ([b"a", b"b"], False)


def test_mpmc_ttl_expiry(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, 10, clock=clock) as queue:
        queue.add([b"a", b"b"]).get()
        queue.next("reader-all", Oldest, 10).get()
        clock.advance(5)
        queue.add([b"c"]).get()
        clock.advance(6)  # a and b are 11 s old, c is 6 s old
        assert queue.next("late", Oldest, 10).get().data == ([b"c"], False)
        assert queue.next("reader-all", Oldest, 10).get().data == ([b"c"], False)
        assert queue.len.get().len == 1

    with MpmcQueue(queue_path, 10, 10, clock=clock) as queue:
        assert queue.next("behind", Oldest, 1).get().data == ([b"c"], False)
        clock.advance(11)  # c expired too
        queue.add([b"d"])
        assert queue.next("slow", Oldest, 10).get().data == ([b"d"], False)
        # "behind" had read c before it expired: nothing to report.
        assert queue.next("behind", Oldest, 10).get().data == ([b"d"], False)


def test_mpmc_expired_flag_reported_once(queue_path: str, clock: FakeClock) -> None:
    with MpmcQueue(queue_path, 10, 10, clock=clock) as queue:
        queue.add([b"a", b"b"])
        queue.next("r", Oldest, 1).get()  # reads a, not b
        clock.advance(11)
        queue.add([b"c"])
        assert queue.next("r", Oldest, 10).get().data == ([b"c"], True)
        assert queue.next("r", Oldest, 10).get().data == ([], False)


def test_mpmc_ordering_of_back_to_back_reads(queue_path: str, clock: FakeClock) -> None:
    expected = items(300)
    with MpmcQueue(queue_path, 0, 1000, clock=clock) as queue:
        for offset in range(0, 300, 30):
            queue.add(expected[offset : offset + 30])
        reads = [queue.next("r", Oldest, (index % 4) + 1) for index in range(200)]
        received: list[bytes] = []
        for response in reads:
            data = response.get().data
            assert data is not None
            received.extend(data[0])
    assert received == expected
