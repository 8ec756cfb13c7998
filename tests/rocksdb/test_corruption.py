"""Corrupted files under a closed queue (flipped bytes in an SST, the MANIFEST
or the WAL, a missing SST, a MANIFEST cut short): reported as
QueueCorruptedError (or QueueIOError), never a crash, never a silently shorter
queue; whatever is read before the error is exactly what was pushed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import textwrap
from pathlib import Path

import pytest

from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.faults import read_in_child, run_python
from support.items import make_item

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
