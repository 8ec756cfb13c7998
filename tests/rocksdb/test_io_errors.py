"""Injected I/O errors from RocksDB (before or after the write landed): a clear
QueueIOError naming the path, the handle refused until reopened, close()
releasing the lock, and after reopening the state before the call or after it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import QueueIOError, QueueLockedError, StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.faults import ALL, BASE, EXTRA, Queue, append, contents, open_queue, take_all
from support.items import make_item


class FailingDb:
    """Stands in for the rocksdict ``Rdict``: the ``fail_on``-th call of ``method`` raises.

    With ``lands=True`` the call is made first (the write reached RocksDB and
    the error came after), otherwise it fails before anything is written.
    A FIFO queue's one-item push and pop write through the data column
    family instead (see ``inject``); those count as calls of ``write``.
    """

    def __init__(
        self, db: Any, *, fail_on: int, method: str = "write", lands: bool = False
    ) -> None:
        self._db = db
        self.fail_on = fail_on
        self.method = method
        self.lands = lands
        self.calls = 0

    def call(self, target: Any, method: str, counted_as: str, *args: Any) -> Any:
        real = getattr(target, method)
        if counted_as != self.method:
            return real(*args)
        self.calls += 1
        if self.calls != self.fail_on:
            return real(*args)
        if self.lands:
            real(*args)
        raise Exception("IO error: injected")

    def write(self, *args: Any) -> Any:
        return self.call(self._db, "write", "write", *args)

    def flush_wal(self, *args: Any) -> Any:
        return self.call(self._db, "flush_wal", "flush_wal", *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class _FailingFamily:
    """A column family whose one-key writes count as writes of a FailingDb."""

    def __init__(self, failing: FailingDb, family: Any) -> None:
        self._failing = failing
        self._family = family

    def put(self, *args: Any) -> Any:
        return self._failing.call(self._family, "put", "write", *args)

    def delete(self, *args: Any) -> Any:
        return self._failing.call(self._family, "delete", "write", *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._family, name)


def inject(queue: Any, **options: Any) -> FailingDb:
    """Make the queue's store write through a FailingDb (options as for FailingDb)."""
    store = queue._engine._store
    failing = FailingDb(store._db, **options)
    store._db = failing
    store._data = _FailingFamily(failing, store._data)
    return failing


Operation = Callable[[Any], object]

IO_ERROR_CASES: list[Any] = [
    # kind, operation, then what a reader finds after reopening if the failed write
    # landed: the items, and the MPMC labels (before the call: ["old"])
    pytest.param("fifo", lambda q: q.push([EXTRA[0]]), BASE + EXTRA[:1], [], id="fifo-push-one"),
    pytest.param("fifo", lambda q: q.push(EXTRA), BASE + EXTRA, [], id="fifo-push-many"),
    pytest.param("fifo", lambda q: q.pop(max_elements=2), BASE[2:], [], id="fifo-pop"),
    # A reservation that landed is a lease of a dead handle: released at the next open.
    pytest.param("fifo", lambda q: q.reserve_batch(2), BASE, [], id="fifo-reserve"),
    pytest.param("mpmc", lambda q: q.add(EXTRA), BASE + EXTRA, ["old"], id="mpmc-add"),
    pytest.param(
        "mpmc",
        lambda q: q.next("reader", StartPosition.Oldest, 2),
        BASE[2:],
        ["old", "reader"],
        id="mpmc-next",
    ),
    pytest.param("mpmc", lambda q: q.remove_label("old"), BASE, [], id="mpmc-remove-label"),
]


def _reader_view(kind: str, path: Path) -> tuple[list[str], list[bytes]]:
    """(MPMC labels, what a reader finds): FIFO: what is queued; MPMC: label "reader"'s rest."""
    if kind == "fifo":
        return [], contents("fifo", path)
    with MpmcQueue(str(path), 0) as stream:
        labels = stream.labels
        items, _expired = stream.next("reader", StartPosition.Oldest, ALL)
        return labels, items


def _refused_everything(queue: Queue) -> None:
    calls: list[Callable[[], object]] = [lambda: append(queue, [b"more"])]
    if isinstance(queue, PersistentQueueWithCapacity):
        calls += [queue.pop, queue.reserve_batch]
    else:
        calls += [lambda: queue.next("reader"), lambda: queue.remove_label("old")]
    for call in calls:
        with pytest.raises(QueueIOError, match="refused"):
            call()


@pytest.mark.parametrize("lands", [False, True], ids=["before-writing", "after-writing"])
@pytest.mark.parametrize(("kind", "operation", "landed", "landed_labels"), IO_ERROR_CASES)
def test_injected_write_error(
    queue_path: str,
    kind: str,
    operation: Operation,
    landed: list[bytes],
    landed_labels: list[str],
    lands: bool,
) -> None:
    queue = open_queue(kind, queue_path)
    append(queue, BASE)
    if isinstance(queue, MpmcQueue):
        queue.next("old")  # a label for remove_label
    inject(queue, fail_on=1, lands=lands)
    with pytest.raises(QueueIOError, match="injected") as raised:
        operation(queue)
    assert queue_path in str(raised.value)
    _refused_everything(queue)
    queue.close()  # the proxy forwards close()
    assert queue.closed
    del queue, raised  # see test_close_after_a_failed_write_releases_the_queue_at_once
    gc.collect()
    # Reopened, the queue shows the state before the call, or after it if it landed.
    labels, found = _reader_view(kind, Path(queue_path))
    assert found == (landed if lands else BASE)
    if kind == "mpmc":
        assert labels == (landed_labels if lands else ["old"])
    else:
        with PersistentQueueWithCapacity(queue_path) as again:
            assert (again.len, again.payload_size) == (0, 0)  # drained above, counters agree
            again.push([b"works"])
            assert again.pop() == [b"works"]


LEAK_CASES: list[Any] = [
    pytest.param("fifo", lambda q: q.push([b"x"]), {}, id="fifo-push"),
    pytest.param("fifo", lambda q: q.pop(), {}, id="fifo-pop"),
    # Two items of 700 bytes over a 1 KiB cap: one staged write, then the final batch.
    pytest.param(
        "fifo",
        lambda q: q.push([make_item(9, 700), make_item(10, 700)]),
        {"batch_bytes": 1024, "fail_on": 2},
        id="fifo-staged-push",
    ),
    pytest.param("fifo", lambda q: q.reserve_batch(1), {}, id="fifo-reserve"),
    pytest.param("mpmc", lambda q: q.add([b"x"]), {}, id="mpmc-add"),
    pytest.param("mpmc", lambda q: q.next("r"), {}, id="mpmc-next"),
]


@pytest.mark.parametrize(("kind", "operation", "options"), LEAK_CASES)
def test_close_after_a_failed_write_releases_the_queue_at_once(
    queue_path: str, kind: str, operation: Operation, options: dict[str, int]
) -> None:
    """The documented recovery from QueueIOError: close(), then open the path again.

    The failed handle and its exception are still alive, as in a program that
    logged the error and retries; close() must still release RocksDB's lock.
    """
    fail_on = options.pop("fail_on", 1)
    queue = open_queue(kind, queue_path, **options)
    append(queue, BASE)
    inject(queue, fail_on=fail_on)
    with pytest.raises(QueueIOError, match="injected") as raised:
        operation(queue)
    queue.close()
    try:
        again = open_queue(kind, queue_path, **options)
    except QueueLockedError as error:
        pytest.fail(f"close() after {raised.value!r} left the queue locked: {error}")
    with again:
        assert take_all(again) == BASE


def test_injected_error_on_the_nth_write_keeps_the_first_ones(queue_path: str) -> None:
    queue = PersistentQueueWithCapacity(queue_path)
    inject(queue, fail_on=4)
    for number in range(3):
        queue.push([make_item(number)])
    with pytest.raises(QueueIOError, match="injected"):
        queue.push([make_item(3)])
    with pytest.raises(QueueIOError):
        queue.push([make_item(4)])
    assert queue.len == 3
    queue.close()
    del queue
    gc.collect()
    assert contents("fifo", queue_path) == [make_item(number) for number in range(3)]


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_failed_fsync_with_sync_true(queue_path: str, kind: str) -> None:
    """flush_wal failing after the write: the write is in the WAL, the handle is refused."""
    queue = open_queue(kind, queue_path, sync=True)
    append(queue, BASE)
    inject(queue, fail_on=1, method="flush_wal")
    with pytest.raises(QueueIOError, match="injected"):
        append(queue, EXTRA)
    _refused_everything(queue)
    queue.close()
    del queue  # see test_close_after_a_failed_write_releases_the_queue_at_once
    gc.collect()
    found = contents(kind, queue_path)
    assert found in (BASE, BASE + EXTRA)


def test_failed_staged_push_leaves_no_orphans_after_reopen(queue_path: str) -> None:
    """A push over the batch byte cap failing on its 2nd staged write, in the same process."""
    queue = PersistentQueueWithCapacity(queue_path, batch_bytes=1024)
    queue.push(BASE)
    inject(queue, fail_on=2)
    with pytest.raises(QueueIOError, match="injected"):
        queue.push([make_item(number, 700) for number in range(10)])
    queue.close()
    del queue
    gc.collect()
    with PersistentQueueWithCapacity(queue_path, batch_bytes=1024) as again:
        assert again._engine._store.data_key_bounds() == (0, len(BASE) - 1)
        assert again.pop(max_elements=ALL) == BASE
