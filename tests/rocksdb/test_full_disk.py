"""A full disk: every append that returned survives, the handle refuses
everything after the failure, and the queue works again once space is back
(a small tmpfs; the tests skip with the reason when they cannot mount it).
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

import pytest

from rocksq_aio import QueueError, QueueIOError

from support.faults import MiB, Queue, append, contents, open_queue, small_tmpfs, take_all
from support.items import make_item

ENOSPC_CASES = [
    pytest.param("fifo", 16 * 1024, 1024 * 1024, id="fifo"),
    pytest.param("fifo", 300 * 1024, 64 * 1024, id="fifo-staged-pushes"),
    pytest.param("mpmc", 16 * 1024, 1024 * 1024, id="mpmc"),
]


def _fill_until_full(queue: Queue, item_size: int) -> tuple[list[bytes], QueueIOError]:
    completed: list[bytes] = []
    for number in range(100_000):  # far more than the tmpfs holds
        item = make_item(number, item_size)
        try:
            append(queue, [item])
        except QueueIOError as error:
            return completed, error
        completed.append(item)
    pytest.fail("the disk never filled up")


@pytest.mark.parametrize(("kind", "item_size", "batch_bytes"), ENOSPC_CASES)
def test_full_disk_fails_cleanly_and_recovers(
    tmp_path: Path, kind: str, item_size: int, batch_bytes: int
) -> None:
    with small_tmpfs(tmp_path / "small", "8m") as root:
        filler = root / "filler"
        filler.write_bytes(b"\0" * (4 * MiB))  # made before the queue, removed to free space
        path = root / "queue"
        queue = open_queue(kind, path, batch_bytes=batch_bytes)
        try:
            completed, error = _fill_until_full(queue, item_size)
            assert completed, "not even one append fit"
            assert isinstance(error, QueueError)
            assert "No space left on device" in str(error)
            assert str(path) in str(error)
            # The handle refuses everything until it is reopened, even once space is back.
            for attempt in range(2):
                with pytest.raises(QueueIOError, match="refused"):
                    append(queue, [b"small"])
                with pytest.raises(QueueIOError, match="refused"):
                    take_all(queue)
                if attempt == 0:
                    filler.unlink()
            with contextlib.suppress(QueueIOError):  # see test_closing_after_a_full_disk...
                queue.close()
            assert queue.closed
        finally:
            with contextlib.suppress(QueueError):
                queue.close()
        # The failed handle and its error are dropped first: keeping them alive is
        # test_io_errors.py::test_close_after_a_failed_write_releases_the_queue_at_once's business.
        del queue, error
        gc.collect()
        # Every append that returned is there, whole and in order; appends work again.
        reopened = open_queue(kind, path, batch_bytes=batch_bytes)
        try:
            assert take_all(reopened) == completed
            append(reopened, [b"after"])
            assert take_all(reopened, "after-label") == (
                [b"after"] if kind == "fifo" else [*completed, b"after"]
            )
        finally:
            reopened.close()


def test_reopening_while_the_disk_is_still_full_loses_nothing(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "8m") as root:
        filler = root / "filler"
        filler.write_bytes(b"\0" * (4 * MiB))
        path = root / "queue"
        queue = open_queue("fifo", path)
        try:
            completed, _error = _fill_until_full(queue, 16 * 1024)
        finally:
            with contextlib.suppress(QueueIOError):
                queue.close()
        del queue, _error
        gc.collect()
        try:
            again = open_queue("fifo", path)
        except QueueIOError as error:  # RocksDB must write to open: a clean refusal
            assert "No space left on device" in str(error)
            assert str(path) in str(error)
        else:
            again.close()
        filler.unlink()
        assert contents("fifo", path) == completed


def test_closing_after_a_full_disk_does_not_raise_the_old_error_again(tmp_path: Path) -> None:
    """The failure was reported by the write; close() only has to let go of the queue.

    Raising it again from close() breaks ``with queue:`` blocks that handled the
    write's QueueIOError: their exit raises a second one.
    """
    with small_tmpfs(tmp_path / "small", "8m") as root:
        (root / "filler").write_bytes(b"\0" * (4 * MiB))
        path = root / "queue"
        queue = open_queue("fifo", path)
        try:
            _fill_until_full(queue, 16 * 1024)
            (root / "filler").unlink()
            queue.close()
        finally:
            with contextlib.suppress(QueueError):
                queue.close()
        assert queue.closed
