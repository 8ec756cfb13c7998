"""Faults from below: a full disk, I/O errors, corrupted files, foreign directories, permissions.

Each test breaks something under the queue and checks that the library
reports it with the right ``QueueError`` (never a crash, a hang, a silent
loss or silently wrong data), refuses what it must refuse, leaves what is not
its own untouched, and recovers once the fault is gone.

Tests that need root (mounting a small tmpfs, a read-only bind mount) skip
with the reason when they cannot mount.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from rocksq_aio import (
    QueueError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
    StartPosition,
    remove_mpmc_queue,
)
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.items import make_item
from support.rocksdb import raw_database

ALL = 2**30
MiB = 1024 * 1024
CHILD_TIMEOUT = 60.0
"""Seconds a child process may take; only reached on a hang (which fails the test)."""

Queue = PersistentQueueWithCapacity | MpmcQueue


def open_queue(kind: str, path: Path | str, **options: Any) -> Queue:
    if kind == "fifo":
        return PersistentQueueWithCapacity(str(path), **options)
    return MpmcQueue(str(path), 0, **options)


def append(queue: Queue, items: list[bytes]) -> None:
    if isinstance(queue, PersistentQueueWithCapacity):
        queue.push(items)
    else:
        queue.add(items)


def take_all(queue: Queue, label: str = "audit") -> list[bytes]:
    if isinstance(queue, PersistentQueueWithCapacity):
        return queue.pop(max_elements=ALL)
    items, _expired = queue.next(label, StartPosition.Oldest, ALL)
    return items


def contents(kind: str, path: Path | str, **options: Any) -> list[bytes]:
    """Everything a fresh handle reads (FIFO: drained; MPMC: read by a new label)."""
    queue = open_queue(kind, path, **options)
    try:
        return take_all(queue, label=f"audit-{os.urandom(4).hex()}")
    finally:
        queue.close()


def snapshot(directory: Path, *, info_logs: bool = True) -> dict[str, str]:
    """Every file under ``directory`` with the hash of its bytes.

    ``info_logs=False`` leaves out RocksDB's human-readable LOG files, which any
    open attempt rotates (harmless for whoever owns the database).
    """
    files = {}
    for root, _dirs, names in os.walk(directory):
        for name in names:
            if not info_logs and name.startswith("LOG"):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            files[os.path.relpath(path, directory)] = digest
    return files


def run_python(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``script`` in a fresh interpreter; fail on a crash, a panic or a hang."""
    try:
        completed = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung for {CHILD_TIMEOUT} s")
    assert completed.returncode == 0, (
        f"the child crashed (exit {completed.returncode}): {completed.stderr[-3000:]}"
    )
    return completed.stdout


# ---------------------------------------------------------------- mounts


def _require_root_and(tool: str) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux mounts")
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    if shutil.which(tool) is None:
        pytest.skip(f"`{tool}` is not installed")


def _unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


@contextlib.contextmanager
def small_tmpfs(target: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``target`` (skips the test if it cannot mount)."""
    _require_root_and("mount")
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield target
    finally:
        _unmount(target)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` read-only for everyone, root included (a read-only bind mount).

    Not root: chmod 0o500 does it (root bypasses permission bits, hence the mount).
    """
    if os.geteuid() != 0:
        os.chmod(directory, 0o500)
        try:
            yield
        finally:
            os.chmod(directory, 0o700)
        return
    _require_root_and("mount")
    for command in (
        ["mount", "--bind", str(directory), str(directory)],
        ["mount", "-o", "remount,bind,ro", str(directory)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            if command[1] != "--bind":
                _unmount(directory)
            pytest.skip(f"cannot make a read-only bind mount: {result.stderr.strip()}")
    try:
        yield
    finally:
        _unmount(directory)


# ---------------------------------------------------------------- a. a full disk

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
        # test_close_after_a_failed_write_releases_the_queue_at_once's business.
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


# ---------------------------------------------------------------- b. injected I/O errors


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


BASE = [make_item(number) for number in range(5)]
EXTRA = [make_item(number) for number in range(5, 8)]


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


# ---------------------------------------------------------------- c. corruption

_READ_ALL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from rocksq_aio import QueueError
    from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

    kind, path = sys.argv[1], sys.argv[2]
    result = {"items": []}
    try:
        if kind == "fifo":
            queue = PersistentQueueWithCapacity(path)
        else:
            queue = MpmcQueue(path, 0)
    except BaseException as error:
        result.update(stage="open", error=type(error).__name__, message=str(error))
    else:
        result["len"] = queue.len
        try:
            while True:
                if kind == "fifo":
                    batch = queue.pop(max_elements=37)
                else:
                    batch, _ = queue.next("audit", max_elements=37)
                if not batch:
                    break
                result["items"].extend(item.hex() for item in batch)
            result["stage"] = "done"
        except BaseException as error:
            result.update(stage="read", error=type(error).__name__, message=str(error))
    print(json.dumps(result))
    """
)


def read_in_child(kind: str, path: Path) -> dict[str, Any]:
    """Open the queue and read everything in a fresh interpreter (a crash fails the test)."""
    result: dict[str, Any] = json.loads(run_python(_READ_ALL_SCRIPT, kind, str(path)))
    result["items"] = [bytes.fromhex(item) for item in result["items"]]
    return result


CORRUPTION_ITEMS = [make_item(number, 1000) for number in range(2000)]


@pytest.fixture(scope="module")
def closed_fifo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed FIFO queue whose elements are in SST files (closing flushes the memtables)."""
    path = tmp_path_factory.mktemp("corruption") / "pristine"
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push(CORRUPTION_ITEMS)
    assert any(name.endswith(".sst") for name in os.listdir(path))
    return path


def _largest(directory: Path, suffix: str) -> Path:
    return max(
        (directory / name for name in os.listdir(directory) if name.endswith(suffix)),
        key=lambda path: path.stat().st_size,
    )


def _flip(path: Path, offset: int, count: int = 4) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        original = handle.read(count)
        handle.seek(offset)
        handle.write(bytes(byte ^ 0xFF for byte in original))


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, 0.999])
def test_flipped_bytes_in_an_sst_are_reported_as_corruption(
    closed_fifo: Path, tmp_path: Path, where: float
) -> None:
    path = tmp_path / "queue"
    shutil.copytree(closed_fifo, path)
    sst = _largest(path, ".sst")
    _flip(sst, int(sst.stat().st_size * where))
    result = read_in_child("fifo", path)
    assert result["stage"] in ("open", "read"), (
        f"read {len(result['items'])} items without noticing the corruption"
    )
    assert result["error"] == "QueueCorruptedError", result
    assert str(path) in result["message"]
    # Whatever came out before the error is exactly what was pushed.
    assert result["items"] == CORRUPTION_ITEMS[: len(result["items"])]


def test_flipped_bytes_in_a_manifest_record_are_reported(closed_fifo: Path, tmp_path: Path) -> None:
    """Bit rot in the MANIFEST's first record (RocksDB takes a bad *last* record for a torn
    write and drops it, like a WAL tail, so only an earlier record is sure to be checked)."""
    path = tmp_path / "queue"
    shutil.copytree(closed_fifo, path)
    manifest = path / (path / "CURRENT").read_text().strip()
    _flip(manifest, 12)  # past the 7-byte header of the first record
    result = read_in_child("fifo", path)
    assert result["stage"] == "open", result
    assert result["error"] == "QueueCorruptedError", result
    assert str(path) in result["message"]


def test_a_missing_sst_is_reported(closed_fifo: Path, tmp_path: Path) -> None:
    path = tmp_path / "queue"
    shutil.copytree(closed_fifo, path)
    _largest(path, ".sst").unlink()
    result = read_in_child("fifo", path)
    assert result["stage"] in ("open", "read"), result
    assert result["error"] in ("QueueCorruptedError", "QueueIOError"), result
    assert result["items"] == CORRUPTION_ITEMS[: len(result["items"])]


def _log_records(data: bytes) -> list[int]:
    """Offsets of the records of a RocksDB log file (MANIFEST or WAL format).

    32 KiB blocks of records, each a 7-byte header (crc32c, little-endian u16
    length, type) and its payload; a block tail under 7 bytes is padding.
    """
    offsets = []
    offset = 0
    while offset + 7 <= len(data):
        left_in_block = 32768 - offset % 32768
        if left_in_block < 7:
            offset += left_in_block
            continue
        (length,) = struct.unpack_from("<H", data, offset + 4)
        offsets.append(offset)
        offset += 7 + length
    return offsets


_OPEN_MANY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from rocksq_aio.blocking import PersistentQueueWithCapacity
    for path in sys.argv[1:]:
        result = {"path": path}
        try:
            queue = PersistentQueueWithCapacity(path)
        except BaseException as error:
            result.update(error=type(error).__name__, message=str(error)[:300])
        else:
            result["len"] = queue.len
            queue.close()
        result["tables"] = sorted(name for name in os.listdir(path) if name.endswith(".sst"))
        print(json.dumps(result), flush=True)
    """
)


def test_a_manifest_cut_short_never_opens_as_a_silently_emptied_queue(
    closed_fifo: Path, tmp_path: Path
) -> None:
    """A damaged length field makes a MANIFEST record look like a torn write at the end.

    RocksDB then drops that record and every later one without an error (the
    same tolerance that survives a crash in the middle of a MANIFEST write), and
    the read-write open deletes the table files the dropped records added. For
    each record in turn the open must fail with a QueueError or give back
    every item; never open as an empty or shorter queue.
    """
    manifest_name = (closed_fifo / "CURRENT").read_text().strip()
    records = _log_records((closed_fifo / manifest_name).read_bytes())
    tables = sorted(name for name in os.listdir(closed_fifo) if name.endswith(".sst"))
    assert len(records) > 3 and tables
    paths = []
    for number, offset in enumerate(records):
        path = tmp_path / f"record-{number}"
        shutil.copytree(closed_fifo, path)
        _flip(path / manifest_name, offset + 4, 2)  # the record's length
        paths.append(str(path))
    outcomes = [json.loads(line) for line in run_python(_OPEN_MANY_SCRIPT, *paths).splitlines()]
    assert len(outcomes) == len(records)
    wrong = []
    for number, outcome in enumerate(outcomes):
        if "error" in outcome:
            if not outcome["error"].startswith("Queue"):
                wrong.append((number, outcome))
        elif outcome["len"] != len(CORRUPTION_ITEMS):
            wrong.append((number, outcome))
    assert not wrong, f"of {len(records)} MANIFEST records, cutting at these lost data: {wrong}"


WAL_ITEMS = [make_item(number, 100) for number in range(1000)]

_PUSH_AND_DIE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from rocksq_aio.blocking import PersistentQueueWithCapacity
    queue = PersistentQueueWithCapacity(sys.argv[1], sync=True)
    for number in range(1000):
        queue.push([b"%08d" % number + bytes([number % 251]) * 92])
    os._exit(0)  # no close: everything is only in the write-ahead log
    """
)


def test_flipped_bytes_in_the_middle_of_the_wal_are_not_silently_dropped(tmp_path: Path) -> None:
    """1000 synced pushes, then bit rot in the middle of the WAL.

    Reopening must report the corruption, or give back every item; RocksDB's
    default point-in-time recovery instead stops replaying at the bad record
    and silently drops every push after it.
    """
    path = tmp_path / "queue"
    run_python(_PUSH_AND_DIE_SCRIPT, str(path))
    wal = _largest(path, ".log")
    _flip(wal, wal.stat().st_size // 2)
    result = read_in_child("fifo", path)
    assert result["items"] == WAL_ITEMS[: len(result["items"])]
    if result["stage"] == "done":
        assert len(result["items"]) == len(WAL_ITEMS), (
            f"{len(WAL_ITEMS) - len(result['items'])} synced pushes after a corrupted WAL "
            "record were dropped without an error"
        )
    else:
        assert result["error"] == "QueueCorruptedError", result


# ---- c.ii corrupted counters and positions

FIFO_STATE = struct.Struct(">QQQ")
POSITION = struct.Struct(">QB")


def _index(number: int) -> bytes:
    return struct.pack(">Q", number)


def dump(path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    with raw_database(path) as families:
        return {name: list(family.items()) for name, family in families.items()}


def _fifo_setup(path: Path) -> None:
    """Elements 0..4 pushed, element 0 popped: head 1, tail 5."""
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push(BASE)
        assert queue.pop() == BASE[:1]


def _mpmc_setup(path: Path) -> None:
    """Elements 0..4 added, label "reader" at 2."""
    with MpmcQueue(str(path), 0) as stream:
        stream.add(BASE)
        stream.next("reader", StartPosition.Oldest, 2)


def _payload(numbers: range) -> int:
    return len(BASE[0]) * len(numbers)  # every item is the same size


Corruption = Callable[[dict[str, Any]], None]


def _put(family: str, key: bytes, value: bytes) -> Corruption:
    def corrupt(families: dict[str, Any]) -> None:
        families[family][key] = value

    return corrupt


def _delete(family: str, *keys: bytes) -> Corruption:
    def corrupt(families: dict[str, Any]) -> None:
        for key in keys:
            del families[family][key]

    return corrupt


def _both(*steps: Corruption) -> Corruption:
    def corrupt(families: dict[str, Any]) -> None:
        for step in steps:
            step(families)

    return corrupt


def _mpmc_counters(head: int, tail: int) -> bytes:
    return FIFO_STATE.pack(head, tail, 2_000_000_000_000)


COUNTER_CASES: list[Any] = [
    # FIFO: state = head, tail, payload size (24 bytes)
    pytest.param("fifo", _put("meta", b"state", b"\x00" * 23), "23 bytes", id="fifo-state-short"),
    pytest.param("fifo", _put("meta", b"state", b"\x00" * 25), "25 bytes", id="fifo-state-long"),
    pytest.param("fifo", _put("meta", b"state", b""), "0 bytes", id="fifo-state-empty"),
    pytest.param(
        "fifo",
        _put("meta", b"state", FIFO_STATE.pack(5, 1, 0)),
        "head 5 > tail 1",
        id="fifo-head-after-tail",
    ),
    pytest.param(
        "fifo",
        _put("meta", b"state", FIFO_STATE.pack(1, 9, _payload(range(1, 9)))),
        "ends at 9, but its last element is 4",
        id="fifo-tail-beyond-keys",
    ),
    # One-item pushes and pops leave the counters behind by at most 1024 changes
    # (SAVE_COUNTERS_EVERY): a key much further on was not written by them.
    pytest.param(
        "fifo",
        _put("data", _index(5000), b"x"),
        r"\[1, 5\).*\[1, 5001\): more changed than can have gone unsaved",
        id="fifo-key-far-past-tail",
    ),
    pytest.param(
        "fifo",
        _put("meta", b"state", FIFO_STATE.pack(1, 2000, _payload(range(1, 5)))),
        "ends at 2000",
        id="fifo-tail-far-past-keys",
    ),
    pytest.param(
        "fifo",
        _put("meta", b"state", FIFO_STATE.pack(1, 2**64 - 1, 10)),
        "ends at",
        id="fifo-tail-at-2**64",
    ),
    pytest.param(
        "fifo",
        _put("meta", b"state", FIFO_STATE.pack(2**64 - 1, 1, 0)),
        "head",
        id="fifo-head-at-2**64",
    ),
    pytest.param(
        "fifo",
        _put("meta", b"state", FIFO_STATE.pack(5, 5, 77)),
        "payload",
        id="fifo-empty-with-payload",
    ),
    # A missing head element looks like a pop whose counters were not saved yet.
    pytest.param(
        "fifo",
        _delete("data", _index(4)),
        "ends at 5, but its last element is 3",
        id="fifo-tail-element-missing",
    ),
    pytest.param(
        "fifo",
        _both(
            _put("meta", b"state", FIFO_STATE.pack(1, 2000, 10)),
            _delete("data", *(_index(index) for index in range(1, 5))),
        ),
        "holds 1999 elements, but it stores none",
        id="fifo-all-elements-missing",
    ),
    pytest.param("fifo", _delete("meta", b"state"), "counters", id="fifo-state-missing"),
    pytest.param("fifo", _delete("meta", b"kind"), "kind|counters", id="fifo-kind-missing"),
    pytest.param(
        "fifo", _delete("meta", b"kind", b"state"), "counters", id="fifo-kind-and-state-missing"
    ),
    pytest.param("fifo", _put("leased", b"\x01\x02", b"x"), "bytes", id="fifo-lease-key-short"),
    # Head 1: one item can have gone out, not two.
    pytest.param(
        "fifo",
        _both(_put("leased", _index(0) + _index(3), b"x"), _put("leased", _index(1) * 2, b"y")),
        "2 leased items",
        id="fifo-more-leases-than-taken",
    ),
    # MPMC: counters = head, tail, newest timestamp; position = index (8) + flags (1)
    pytest.param("mpmc", _put("meta", b"state", b"\x00" * 16), "16 bytes", id="mpmc-state-short"),
    pytest.param(
        "mpmc",
        _put("meta", b"state", _mpmc_counters(4, 2)),
        "head 4 > tail 2",
        id="mpmc-head-after-tail",
    ),
    pytest.param(
        "mpmc",
        _put("meta", b"state", _mpmc_counters(0, 9)),
        r"\[0, 9\)",
        id="mpmc-tail-beyond-keys",
    ),
    # One-item adds leave the saved tail behind by at most 1024 elements.
    pytest.param(
        "mpmc",
        _put("data", _index(5000), b"\x00" * 8 + b"x"),
        "ends at 5, but it stores element 5000",
        id="mpmc-key-far-past-tail",
    ),
    pytest.param(
        "mpmc",
        _put("data", _index(7), b"\x00" * 8 + b"x"),
        "element 5 is missing",
        id="mpmc-gap-before-a-key-past-tail",
    ),
    pytest.param(
        "mpmc", _put("positions", b"reader", _index(2)), "8 bytes", id="mpmc-position-short"
    ),
    pytest.param(
        "mpmc",
        _put("positions", b"reader", _index(2) + b"\x00\x00"),
        "10 bytes",
        id="mpmc-position-long",
    ),
    pytest.param(
        "mpmc",
        _put("positions", b"reader", POSITION.pack(6, 0)),
        "position 6",
        id="mpmc-position-beyond-tail",
    ),
    pytest.param(
        "mpmc",
        _put("positions", b"reader", POSITION.pack(2**64 - 1, 0)),
        "outside",
        id="mpmc-position-at-2**64",
    ),
    pytest.param(
        "mpmc",
        _both(
            _put("meta", b"state", _mpmc_counters(2, 5)),
            _delete("data", _index(0), _index(1)),
            _put("positions", b"reader", POSITION.pack(1, 0)),
        ),
        "position 1",
        id="mpmc-position-before-head",
    ),
    pytest.param(
        "mpmc",
        _put("positions", b"reader", POSITION.pack(2, 0x80)),
        "flags",
        id="mpmc-position-unknown-flags",
    ),
    pytest.param(
        "mpmc",
        _put("positions", b"\xff\xfe", POSITION.pack(2, 0)),
        "UTF-8",
        id="mpmc-label-not-utf8",
    ),
    pytest.param(
        "mpmc",
        _put("returned", b"reader", b"\x00\x00\x00\x09abc"),
        "truncated",
        id="mpmc-returned-truncated",
    ),
    pytest.param(
        "mpmc",
        _put("data", _index(0), b"\x01\x02"),
        "timestamp",
        id="mpmc-head-element-without-timestamp",
    ),
]

_OPEN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
    kind, path = sys.argv[1], sys.argv[2]
    try:
        queue = PersistentQueueWithCapacity(path) if kind == "fifo" else MpmcQueue(path, 0)
    except BaseException as error:
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))
    else:
        print(json.dumps({"opened": True, "len": queue.len}))
        queue.close()
    """
)


@pytest.mark.parametrize(("kind", "corrupt", "message"), COUNTER_CASES)
def test_corrupted_counters_are_refused_at_open(
    tmp_path: Path, kind: str, corrupt: Corruption, message: str
) -> None:
    path = tmp_path / "queue"
    (_fifo_setup if kind == "fifo" else _mpmc_setup)(path)
    with raw_database(path) as families:
        corrupt(families)
    before = dump(path)
    result = json.loads(run_python(_OPEN_SCRIPT, kind, str(path)))
    assert result.get("error") == "QueueCorruptedError", result
    assert re.search(message, result["message"]), result
    # A refused open changes nothing: the evidence stays for whoever investigates.
    assert dump(path) == before


def test_a_hole_in_the_middle_is_reported_when_read(tmp_path: Path) -> None:
    """Only the head and the tail are checked at open; a missing middle element must
    still never be skipped silently."""
    path = tmp_path / "queue"
    _fifo_setup(path)
    with raw_database(path) as families:
        del families["data"][_index(3)]
    result = read_in_child("fifo", path)
    assert result["stage"] in ("open", "read"), result
    assert result.get("len") in (None, 4), result  # never a length made up or wrapped
    assert result["error"] == "QueueCorruptedError", result
    assert "3" in result["message"]
    assert result["items"] == BASE[1 : 1 + len(result["items"])]


# ---- c.iii directories that are not queues of ours


def _plain_rocksdb(path: Path) -> None:
    options = Options(raw_mode=True)
    options.create_missing_column_families(True)
    db = Rdict(str(path), options, column_families={"users": options, "orders": options})
    users = db.get_column_family("users")
    users[b"alice"] = b"admin"
    del users
    db[b"key"] = b"value"
    db.close()


def _default_family_only(path: Path) -> None:
    db = Rdict(str(path), Options(raw_mode=True))
    for number in range(10):
        db[_index(number)] = b"not a queue element"
    db.close()


def _rocksdict_default_mode(path: Path) -> None:
    db = Rdict(str(path))
    db["config"] = {"a": 1}
    db.close()


def _rocksq(kind: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        rocksq = pytest.importorskip("rocksq", reason="the real rocksq is not installed")
        blocking = pytest.importorskip("rocksq.blocking")
        if kind == "fifo":
            queue = blocking.PersistentQueueWithCapacity(str(path))
            queue.push([b"rocksq item"])
        else:
            queue = blocking.MpmcQueue(str(path), 60)
            queue.add([b"rocksq item"])
            queue.next("label", rocksq.StartPosition.Oldest, 1)
        del queue

    return make


FOREIGN: list[Any] = [
    pytest.param(_plain_rocksdb, id="rocksdb-other-families"),
    pytest.param(_default_family_only, id="rocksdb-default-family"),
    pytest.param(_rocksdict_default_mode, id="rocksdict-pickle-mode"),
    pytest.param(_rocksq("fifo"), id="rocksq-fifo"),
    pytest.param(_rocksq("mpmc"), id="rocksq-mpmc"),
]


@pytest.mark.parametrize("make", FOREIGN)
@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_foreign_database_is_refused_and_left_alone(
    tmp_path: Path, make: Callable[[Path], None], kind: str
) -> None:
    path = tmp_path / "foreign"
    make(path)
    before = snapshot(path)
    with pytest.raises(QueueError) as raised:
        open_queue(kind, path)
    assert str(path) in str(raised.value)
    assert not isinstance(raised.value, QueueLockedError)
    assert snapshot(path) == before
    # The refused open left nothing locked behind: a second attempt is refused the same way.
    with pytest.raises(type(raised.value)):
        open_queue(kind, path)
    assert snapshot(path) == before


# ---------------------------------------------------------------- d. rocksdict-config.json


class _Marker:
    """Unpickling this creates ``path``: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_crafted_rocksdict_config_is_not_trusted(tmp_path: Path) -> None:
    """A config that switches rocksdict to pickle mode, and a pickled element waiting."""
    path = tmp_path / "queue"
    marker = tmp_path / "EXECUTED"
    # rocksdict's pickle-mode encoding of a value: type byte 6, then the pickle.
    payload = b"\x06" + pickle.dumps(_Marker(marker))
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push([payload, b"plain"])
    (path / "rocksdict-config.json").write_text(
        json.dumps(
            {
                "raw_mode": False,
                "prefix_extractors": {},
                "pickle": pickle.dumps(_Marker(marker)).hex(),
            }
        )
    )
    found = read_in_child("fifo", path)
    assert found["stage"] == "done", found
    assert found["items"] == [payload, b"plain"]
    assert not marker.exists(), "a pickle from the queue directory was executed"


def test_rocksdict_pickle_database_with_our_families_is_refused_unexecuted(
    tmp_path: Path,
) -> None:
    """A database of a rocksdict program (pickle mode) that happens to use our family names.

    Opening it as a queue must fail with a QueueError, execute none of its
    pickles, and leave it usable by its owner: rocksdict rewrites
    rocksdict-config.json (to raw_mode=true) whenever it is handed explicit
    options, even if the open then fails, after which the owner's
    ``Rdict(path)`` no longer opens its own database.
    """
    path = tmp_path / "queue"
    marker = tmp_path / "EXECUTED"
    options = Options()
    options.create_missing_column_families(True)
    families = {name: Options() for name in ("data", "meta", "leased")}
    db = Rdict(str(path), options, column_families=families)
    for name in families:
        family = db.get_column_family(name)
        family[_index(0)] = _Marker(marker)
        family[b"kind"] = _Marker(marker)
        family[b"state"] = _Marker(marker)
        del family
    db.close()
    assert not marker.exists()
    before = snapshot(path, info_logs=False)
    result = json.loads(run_python(_OPEN_SCRIPT, "fifo", str(path)))
    assert result.get("error", "").startswith("Queue"), result
    assert not marker.exists(), "a pickle from the queue directory was executed"
    changed = {
        name
        for name in set(before) | set(snapshot(path, info_logs=False))
        if before.get(name) != snapshot(path, info_logs=False).get(name)
    }
    assert not changed, f"the refused open changed {sorted(changed)} of someone else's database"
    owner = Rdict(str(path))  # how its owner opens it: options from its rocksdict-config.json
    owner.close()


@pytest.mark.parametrize("text", ["{not json", "", '{"raw_mode": "yes"}'])
def test_garbage_rocksdict_config_does_not_matter(tmp_path: Path, text: str) -> None:
    path = tmp_path / "queue"
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push([b"a"])
    (path / "rocksdict-config.json").write_text(text)
    assert contents("fifo", path) == [b"a"]


# ---------------------------------------------------------------- e. permissions and locks


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
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_SCRIPT, kind, queue_path], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"OPEN\n"
        with pytest.raises(QueueLockedError) as raised:
            open_queue(kind, queue_path)
        assert queue_path in str(raised.value)
        with pytest.raises(QueueLockedError):
            remove_mpmc_queue(queue_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert contents(kind, queue_path) == [b"a"]


# ---------------------------------------------------------------- f. bad input, more


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
