"""Every bad argument gets a TypeError/ValueError naming it, and changes nothing."""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import QueueError, StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.clock import FakeClock

pytestmark = pytest.mark.contract

ALL = 2**20
STORED = [b"first", b"second"]


@pytest.fixture
def fifo(queue_path: str) -> Iterator[PersistentQueueWithCapacity]:
    queue = PersistentQueueWithCapacity(queue_path, max_elements=10)
    queue.push(list(STORED))
    try:
        yield queue
    finally:
        queue.close()


@pytest.fixture
def mpmc(queue_path: str, clock: FakeClock) -> Iterator[MpmcQueue]:
    queue = MpmcQueue(queue_path, 60, clock=clock)
    queue.add(list(STORED))
    assert queue.next("existing") == ([b"first"], False)
    try:
        yield queue
    finally:
        queue.close()


def assert_fifo_unchanged(queue: PersistentQueueWithCapacity) -> None:
    assert queue.len == len(STORED)
    assert queue.payload_size == sum(len(item) for item in STORED)
    assert queue.pop(max_elements=ALL) == STORED
    path = queue.path
    queue.close()
    with PersistentQueueWithCapacity(path, max_elements=10) as reopened:
        assert reopened.len == 0


def assert_mpmc_unchanged(queue: MpmcQueue) -> None:
    assert queue.len == len(STORED)
    assert queue.labels == ["existing"]
    assert queue.next("existing", max_elements=ALL) == ([b"second"], False)
    assert queue.next("checker", max_elements=ALL) == (STORED, False)


# ---------------------------------------------------------------- items

BAD_ITEM_LISTS: list[Any] = [
    pytest.param("text", id="str"),
    pytest.param(5, id="int"),
    pytest.param(None, id="None"),
    pytest.param(b"bare-bytes", id="bare-bytes"),
    pytest.param(bytearray(b"bare"), id="bare-bytearray"),
    pytest.param({b"a": b"b"}, id="dict"),
    pytest.param(["text"], id="list-of-str"),
    pytest.param([1], id="list-of-int"),
    pytest.param([None], id="list-of-None"),
    pytest.param([[b"nested"]], id="nested-list"),
    pytest.param([b"ok", b"ok", "bad-last"], id="only-last-bad"),
    pytest.param([b"ok", b"ok", 7], id="only-last-int"),
    pytest.param([b"ok", None], id="only-last-None"),
]


@pytest.mark.parametrize("items", BAD_ITEM_LISTS)
def test_push_rejects_bad_items(fifo: PersistentQueueWithCapacity, items: Any) -> None:
    with pytest.raises(TypeError, match="items"):
        fifo.push(items)
    assert_fifo_unchanged(fifo)


@pytest.mark.parametrize("items", BAD_ITEM_LISTS)
def test_add_rejects_bad_items(mpmc: MpmcQueue, items: Any) -> None:
    with pytest.raises(TypeError, match="items"):
        mpmc.add(items)
    assert_mpmc_unchanged(mpmc)


def test_bad_item_message_names_its_position(fifo: PersistentQueueWithCapacity) -> None:
    with pytest.raises(TypeError, match=r"items\[2\].*str"):
        fifo.push([b"a", b"b", "c"])  # type: ignore[list-item]
    assert_fifo_unchanged(fifo)


# ---------------------------------------------------------------- max_elements of pop / next

BAD_COUNTS: list[Any] = [
    pytest.param(0, ValueError, id="zero"),
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(-(2**70), ValueError, id="huge-negative"),
    pytest.param(1.5, TypeError, id="float"),
    pytest.param(1.0, TypeError, id="integral-float"),
    pytest.param(True, TypeError, id="True"),
    pytest.param(False, TypeError, id="False"),
    pytest.param("1", TypeError, id="str"),
    pytest.param(None, TypeError, id="None"),
]


@pytest.mark.parametrize(("max_elements", "error"), BAD_COUNTS)
def test_pop_rejects_bad_max_elements(
    fifo: PersistentQueueWithCapacity, max_elements: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="max_elements"):
        fifo.pop(max_elements=max_elements)
    with pytest.raises(error, match="max_elements"):
        fifo.pop(max_elements)
    assert_fifo_unchanged(fifo)


@pytest.mark.parametrize(("max_elements", "error"), BAD_COUNTS)
def test_next_rejects_bad_max_elements(
    mpmc: MpmcQueue, max_elements: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="max_elements"):
        mpmc.next("existing", StartPosition.Oldest, max_elements)
    # A label that does not exist yet is not created by a rejected call.
    with pytest.raises(error, match="max_elements"):
        mpmc.next("newcomer", max_elements=max_elements)
    assert_mpmc_unchanged(mpmc)


@pytest.mark.parametrize("no_gil", [None, 0, 1, "yes"])
def test_fifo_no_gil_must_be_bool(fifo: PersistentQueueWithCapacity, no_gil: Any) -> None:
    with pytest.raises(TypeError, match="no_gil"):
        fifo.push([b"x"], no_gil=no_gil)
    with pytest.raises(TypeError, match="no_gil"):
        fifo.pop(1, no_gil=no_gil)
    assert_fifo_unchanged(fifo)


@pytest.mark.parametrize("no_gil", [None, 0, 1, "yes"])
def test_mpmc_no_gil_must_be_bool(mpmc: MpmcQueue, no_gil: Any) -> None:
    with pytest.raises(TypeError, match="no_gil"):
        mpmc.add([b"x"], no_gil=no_gil)
    with pytest.raises(TypeError, match="no_gil"):
        mpmc.next("newcomer", StartPosition.Oldest, 1, no_gil=no_gil)
    assert_mpmc_unchanged(mpmc)


# ---------------------------------------------------------------- capacity


@pytest.mark.parametrize(
    ("max_elements", "error"),
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(-5, ValueError, id="negative"),
        pytest.param(2**64, ValueError, id="2**64"),
        pytest.param(10**30, ValueError, id="10**30"),
        pytest.param("10", TypeError, id="str"),
        pytest.param(10.0, TypeError, id="float"),
        pytest.param(None, TypeError, id="None"),
        pytest.param(True, TypeError, id="True"),
    ],
)
def test_capacity_rejects_bad_max_elements(
    queue_path: str, max_elements: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="max_elements"):
        PersistentQueueWithCapacity(queue_path, max_elements)
    assert not os.path.exists(queue_path), "a rejected open must not create the directory"
    # An existing queue is left intact, and not left locked.
    with PersistentQueueWithCapacity(queue_path, max_elements=5) as queue:
        queue.push(list(STORED))
    with pytest.raises(error, match="max_elements"):
        PersistentQueueWithCapacity(queue_path, max_elements=max_elements)
    with PersistentQueueWithCapacity(queue_path, max_elements=5) as queue:
        assert queue.pop(max_elements=ALL) == STORED


# ---------------------------------------------------------------- ttl


@pytest.mark.parametrize(
    ("ttl", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(-0.001, ValueError, id="small-negative"),
        pytest.param("5", TypeError, id="str"),
        pytest.param(float("nan"), ValueError, id="nan"),
        pytest.param(float("inf"), ValueError, id="inf"),
        pytest.param(float("-inf"), ValueError, id="-inf"),
        pytest.param(None, TypeError, id="None"),
        pytest.param(True, TypeError, id="True"),
    ],
)
def test_mpmc_rejects_bad_ttl(
    queue_path: str, clock: FakeClock, ttl: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="ttl"):
        MpmcQueue(queue_path, ttl, clock=clock)
    assert not os.path.exists(queue_path)
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        queue.add(list(STORED))
    with pytest.raises(error, match="ttl"):
        MpmcQueue(queue_path, ttl, clock=clock)
    with MpmcQueue(queue_path, 0, clock=clock) as queue:
        assert queue.next("r", max_elements=ALL) == (STORED, False)


@pytest.mark.parametrize(
    "ttl",
    [pytest.param(sys.float_info.max, id="float-max"), pytest.param(10**400, id="10**400")],
)
def test_mpmc_huge_ttl_is_accepted_or_rejected_cleanly(
    queue_path: str, clock: FakeClock, ttl: Any
) -> None:
    """A finite, huge ttl either means "practically never" or is a ValueError naming ttl."""
    try:
        queue = MpmcQueue(queue_path, ttl, clock=clock)
    except ValueError as error:
        assert "ttl" in str(error)
        return
    with queue:
        queue.add([b"a"])
        clock.advance(1000 * 365 * 24 * 3600)
        queue.add([b"b"])
        assert queue.next("r", max_elements=ALL) == ([b"a", b"b"], False)


def test_mpmc_rejects_non_callable_clock(queue_path: str) -> None:
    with pytest.raises(TypeError, match="clock"):
        MpmcQueue(queue_path, 10, clock=123)  # type: ignore[arg-type]
    assert not os.path.exists(queue_path)


# ---------------------------------------------------------------- labels


BAD_LABELS: list[Any] = [
    pytest.param("", ValueError, id="empty"),
    pytest.param(1, TypeError, id="int"),
    pytest.param(None, TypeError, id="None"),
    pytest.param(b"x", TypeError, id="bytes"),
    pytest.param("x" * 1_000_000, ValueError, id="1MB-str"),
    pytest.param("é" * 2049, ValueError, id="4098-bytes-utf8"),
    pytest.param("\ud800", ValueError, id="lone-surrogate"),
    pytest.param("ok\udfffok", ValueError, id="embedded-surrogate"),
]


@pytest.mark.parametrize(("label", "error"), BAD_LABELS)
@pytest.mark.parametrize("method", ["next", "remove_label"])
def test_bad_label_is_rejected(
    mpmc: MpmcQueue, method: str, label: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="label") as raised:
        getattr(mpmc, method)(label)
    assert len(str(raised.value)) < 1000, "the message must not echo a huge label"
    assert_mpmc_unchanged(mpmc)


class _OtherEnum(enum.Enum):
    Oldest = 0
    Middle = 1


@pytest.mark.parametrize(
    "start_position",
    [
        pytest.param(0, id="int-0"),
        pytest.param(1, id="int-1"),
        pytest.param("Oldest", id="str"),
        pytest.param(None, id="None"),
        pytest.param(True, id="True"),
        pytest.param(_OtherEnum.Middle, id="foreign-enum"),
    ],
)
def test_next_rejects_bad_start_position(mpmc: MpmcQueue, start_position: Any) -> None:
    with pytest.raises(TypeError, match="start_position"):
        mpmc.next("existing", start_position)
    with pytest.raises(TypeError, match="start_position"):
        mpmc.next("newcomer", start_position=start_position)
    assert_mpmc_unchanged(mpmc)


# ---------------------------------------------------------------- paths


BAD_PATHS: list[Any] = [
    pytest.param(None, TypeError, id="None"),
    pytest.param(123, TypeError, id="int"),
    pytest.param(b"/tmp/rocksq_aio-bytes-path", TypeError, id="bytes"),
    pytest.param("", ValueError, id="empty"),
    pytest.param(["/tmp/x"], TypeError, id="list"),
]


@pytest.mark.parametrize(("path", "error"), BAD_PATHS)
def test_fifo_rejects_bad_path(path: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="path"):
        PersistentQueueWithCapacity(path)
    if isinstance(path, bytes):
        assert not os.path.exists(path)


@pytest.mark.parametrize(("path", "error"), BAD_PATHS)
def test_mpmc_rejects_bad_path(path: Any, error: type[Exception], clock: FakeClock) -> None:
    with pytest.raises(error, match="path"):
        MpmcQueue(path, 0, clock=clock)
    if isinstance(path, bytes):
        assert not os.path.exists(path)


def test_path_with_nul_byte_is_a_value_error_naming_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path"):
        PersistentQueueWithCapacity(str(tmp_path / "bad\x00name"))
    assert os.listdir(tmp_path) == []


def test_pathlike_path_is_accepted(tmp_path: Path) -> None:
    with PersistentQueueWithCapacity(tmp_path / "q") as queue:  # type: ignore[arg-type]
        queue.push([b"a"])
    with PersistentQueueWithCapacity(str(tmp_path / "q")) as queue:
        assert queue.pop() == [b"a"]


def open_kind(kind: str, path: Path, clock: FakeClock) -> PersistentQueueWithCapacity | MpmcQueue:
    if kind == "fifo":
        return PersistentQueueWithCapacity(str(path))
    return MpmcQueue(str(path), 0, clock=clock)


def assert_round_trip(kind: str, path: Path, clock: FakeClock) -> None:
    """What one handle of the queue at ``path`` appends, the next one reads."""
    if kind == "fifo":
        with PersistentQueueWithCapacity(str(path)) as queue:
            queue.push([b"a"])
        with PersistentQueueWithCapacity(str(path)) as queue:
            assert queue.pop() == [b"a"]
    else:
        with MpmcQueue(str(path), 0, clock=clock) as stream:
            stream.add([b"a"])
        with MpmcQueue(str(path), 0, clock=clock) as stream:
            assert stream.next("r") == ([b"a"], False)


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_path_that_is_a_regular_file(tmp_path: Path, clock: FakeClock, kind: str) -> None:
    path = tmp_path / "a-file"
    path.write_bytes(b"precious")
    with pytest.raises(ValueError, match="path") as raised:
        open_kind(kind, path, clock)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == b"precious"
    # The failed open left no lock behind: fixing the path makes it usable.
    path.unlink()
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push([b"a"])
        assert queue.pop() == [b"a"]


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_non_empty_directory_that_is_not_a_database(
    tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    path = tmp_path / "project"
    path.mkdir()
    (path / "notes.txt").write_text("keep me")
    with pytest.raises(QueueError, match="refus"):
        open_kind(kind, path, clock)
    assert os.listdir(path) == ["notes.txt"]
    assert (path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_empty_existing_directory_is_used(tmp_path: Path, clock: FakeClock, kind: str) -> None:
    path = tmp_path / "empty"
    path.mkdir()
    assert_round_trip(kind, path, clock)


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_missing_parent_directories_are_created(
    tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    path = tmp_path / "does" / "not" / "exist" / "queue"
    assert_round_trip(kind, path, clock)
    assert path.is_dir()


# ---------------------------------------------------------------- other constructor options


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        pytest.param("batch_bytes", 0, ValueError, id="batch_bytes-zero"),
        pytest.param("batch_bytes", "4", TypeError, id="batch_bytes-str"),
        pytest.param("cache_bytes", -1, ValueError, id="cache_bytes-negative"),
        pytest.param("cache_bytes", 1.5, TypeError, id="cache_bytes-float"),
        pytest.param("sync", 1, TypeError, id="sync-int"),
        pytest.param("sync", None, TypeError, id="sync-None"),
    ],
)
def test_fifo_rejects_bad_options(
    queue_path: str, option: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=option):
        PersistentQueueWithCapacity(queue_path, **{option: value})
    assert not os.path.exists(queue_path)
    with PersistentQueueWithCapacity(queue_path) as queue:
        assert queue.is_empty
