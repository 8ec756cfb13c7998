"""Helpers of the fault tests (tests/rocksdb/test_full_disk.py, test_io_errors.py,
test_corruption.py, test_corrupted_state.py, test_foreign_directories.py,
test_permissions.py, test_input_limits.py): one face over both queue kinds,
children that open or read a queue in a fresh interpreter, and the mounts
(a small tmpfs, a read-only bind mount) that need root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.items import make_item

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


def require_root_and(tool: str) -> None:
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
    require_root_and("mount")
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
    require_root_and("mount")
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


# ---------------------------------------------------------------- what the tests store

BASE = [make_item(number) for number in range(5)]
EXTRA = [make_item(number) for number in range(5, 8)]


def index_key(number: int) -> bytes:
    """The key of element ``number`` in the data column family (big-endian u64)."""
    return struct.pack(">Q", number)


# ---------------------------------------------------------------- children

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


_OPEN_ONE_SCRIPT = textwrap.dedent(
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


def open_in_child(kind: str, path: Path) -> dict[str, Any]:
    """Open the queue in a fresh interpreter: ``{"opened", "len"}`` or ``{"error", "message"}``."""
    result: dict[str, Any] = json.loads(run_python(_OPEN_ONE_SCRIPT, kind, str(path)))
    return result
