"""Permissions and locks: the mode of new queue directories (and the parents
created for them), read-only parents and file systems, and a queue open in
another process refused both ways.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from rocksq_aio import QueueError, QueueIOError, QueueLockedError, remove_mpmc_queue
from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.faults import append, contents, open_queue, read_only, run_python
from support.processes import child_running


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.mark.parametrize("mask", [0o022, 0, 0o077], ids=["umask022", "umask0", "umask077"])
@pytest.mark.parametrize("directory_mode", [None, 0o750], ids=["default", "0o750"])
@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_new_queue_directory_mode(
    tmp_path: Path, mask: int, directory_mode: int | None, kind: str
) -> None:
    path = tmp_path / "queue"
    options = {} if directory_mode is None else {"directory_mode": directory_mode}
    with umask(mask):
        open_queue(kind, path, **options).close()
    assert _mode(path) == (directory_mode or 0o700)


@pytest.mark.parametrize("mask", [0o022, 0], ids=["umask022", "umask0"])
def test_created_parent_directories_are_no_more_open_than_the_queue(
    tmp_path: Path, mask: int
) -> None:
    """README: "New directories get mode 0o700" - the missing parents it creates too.

    Python's os.makedirs applies ``mode`` to the last directory only; the ones
    above get 0o777 minus the umask (world-writable with umask 0).
    """
    path = tmp_path / "a" / "b" / "c" / "queue"
    with umask(mask):
        PersistentQueueWithCapacity(str(path)).close()
    modes = {
        str(directory.relative_to(tmp_path)): oct(_mode(directory))
        for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c", path)
    }
    too_open = {name: mode for name, mode in modes.items() if int(mode, 8) & ~0o700}
    assert not too_open, f"directories created more permissive than 0o700: {modes}"


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_read_only_parent_gives_a_queue_error_naming_the_path(tmp_path: Path, kind: str) -> None:
    """RocksQ raises RuntimeError here; a drop-in must raise a QueueError (a RuntimeError)."""
    parent = tmp_path / "parent"
    parent.mkdir()
    path = parent / "queue"
    with read_only(parent):
        with pytest.raises(RuntimeError) as raised:
            open_queue(kind, path)
        assert isinstance(raised.value, QueueError), (
            f"{type(raised.value).__name__} is not a QueueError: {raised.value}"
        )
        assert str(path) in str(raised.value)
        assert not path.exists()
    # Nothing stayed reserved in this process: the path works once writable.
    with open_queue(kind, path) as queue:
        append(queue, [b"a"])


def test_existing_queue_on_a_read_only_file_system_is_refused_and_intact(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    path = parent / "queue"
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push([b"a", b"b"])
    with read_only(path):
        with pytest.raises(QueueIOError) as raised:
            PersistentQueueWithCapacity(str(path))
        assert str(path) in str(raised.value)
    assert contents("fifo", path) == [b"a", b"b"]


_HOLD_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
    kind, path = sys.argv[1], sys.argv[2]
    queue = PersistentQueueWithCapacity(path) if kind == "fifo" else MpmcQueue(path, 0)
    os.write(1, b"OPEN\\n")
    time.sleep(600)
    """
)

_TRY_OPEN_SCRIPT = textwrap.dedent(
    """
    import sys
    from rocksq_aio import remove_mpmc_queue
    from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
    kind, path = sys.argv[1], sys.argv[2]
    for attempt in ("open", "remove"):
        try:
            if attempt == "open":
                PersistentQueueWithCapacity(path) if kind == "fifo" else MpmcQueue(path, 0)
            else:
                remove_mpmc_queue(path)
        except BaseException as error:
            print(attempt, type(error).__name__, error)
        else:
            print(attempt, "SUCCEEDED")
    """
)


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_queue_open_in_another_process_is_locked_both_ways(queue_path: str, kind: str) -> None:
    # This process holds it: the other process is refused (FIFO: see also test_fifo.py).
    with open_queue(kind, queue_path) as queue:
        append(queue, [b"a"])
        output = run_python(_TRY_OPEN_SCRIPT, kind, queue_path).splitlines()
        assert output[0].startswith("open QueueLockedError"), output
        assert queue_path in output[0]
        assert output[1].startswith("remove QueueLockedError"), output
    # Another process holds it: this process is refused, until that process dies.
    with child_running(_HOLD_SCRIPT, kind, queue_path, ready="OPEN"):
        with pytest.raises(QueueLockedError) as raised:
            open_queue(kind, queue_path)
        assert queue_path in str(raised.value)
        with pytest.raises(QueueLockedError):
            remove_mpmc_queue(queue_path)
    assert contents(kind, queue_path) == [b"a"]
