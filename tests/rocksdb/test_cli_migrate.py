"""The command-line tool's ``migrate-rocksq``: RocksQ 0.3.0 directories, built
with the real ``rocksq`` package during the run (or written in its layout for
states too costly to reach), migrated and compared with RocksQ itself, on a
copy, as the oracle.
"""

from __future__ import annotations

import gc
import importlib
import os
import shutil
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rocksdict import AccessType, DBCompressionType, Options, Rdict

from rocksq_aio.blocking import PersistentQueueWithCapacity
from rocksq_aio.cli import (
    EXIT_CORRUPTED,
    EXIT_ERROR,
    EXIT_LOCKED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    ROCKSQ_MAX_ALLOWED_INDEX,
    decode_rocksq_reader,
)

from support.cli import drain_labels, run, run_json


@pytest.fixture
def rocksq() -> Any:
    """The real RocksQ: ``.blocking``, ``.StartPosition`` (its package hides ``blocking``)."""
    try:
        package = importlib.import_module("rocksq")
        blocking = importlib.import_module("rocksq.blocking")
    except ImportError:
        pytest.skip("the rocksq package (0.3.0) is not installed: the migration tests need it")
    assert package.version() == "0.3.0"
    return SimpleNamespace(blocking=blocking, StartPosition=package.StartPosition)


M = ROCKSQ_MAX_ALLOWED_INDEX


def _no_compression() -> Options:
    # RocksQ's RocksDB build cannot read rocksdict's default (Snappy) SST files.
    options = Options(raw_mode=True)
    options.set_compression_type(DBCompressionType.none())
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    return options


def write_rocksq_dir(path: str, families: dict[str, dict[bytes, bytes]]) -> None:
    """Write a directory in RocksQ's layout (for states too costly to reach through RocksQ)."""
    db = Rdict(
        path,
        _no_compression(),
        column_families={name: _no_compression() for name in families if name != "default"},
    )
    for name, entries in families.items():
        family = db.get_column_family(name)
        for key, value in entries.items():
            family[key] = value
        del family
    db.close()


def le(index: int) -> bytes:
    return struct.pack("<Q", index)


def ttl_suffixed(value: bytes, seconds: int | None = None) -> bytes:
    return value + struct.pack("<I", int(time.time()) if seconds is None else seconds)


def oracle_copy(path: str, tmp_path: Path) -> str:
    copy = str(tmp_path / (os.path.basename(path) + "-oracle"))
    shutil.copytree(path, copy)
    return copy


def rocksq_next_all(rocksq: Any, path: str, labels: list[str]) -> dict[str, Any]:
    queue = rocksq.blocking.MpmcQueue(path, 3600)
    result = {label: queue.next(label, rocksq.StartPosition.Oldest, 1000) for label in labels}
    del queue  # RocksQ closes a queue when it is dropped
    gc.collect()
    return result


def directory_state(path: str) -> dict[str, bytes]:
    state = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as stream:
            state[name] = stream.read()
    return state


def migrate(capsys: pytest.CaptureFixture[str], source: str, target: str, *extra: str) -> str:
    before = directory_state(source)
    code, _out, err = run(capsys, "migrate-rocksq", source, target, *extra)
    assert code == EXIT_OK, err
    assert directory_state(source) == before  # the source is only read
    return err


def test_decode_rocksq_reader() -> None:
    assert decode_rocksq_reader(b"\x02\x00\x00").index == 2
    reader = decode_rocksq_reader(b"\xfb\x2c\x01\x01\xfd" + (2**60).to_bytes(8, "little") + b"\x01")
    assert (reader.index, reader.end_timestamp, reader.expired) == (300, 2**60, True)
    assert (
        decode_rocksq_reader(b"\xfd" + (M - 1).to_bytes(8, "little") + b"\x00\x00").index == M - 1
    )
    for bad in (b"", b"\x02", b"\x02\x02\x00", b"\x02\x00\x02", b"\x02\x00\x00\x00", b"\xff"):
        with pytest.raises(ValueError):
            decode_rocksq_reader(bad)


def test_migrate_fifo(capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path) -> None:
    source = str(tmp_path / "rocksq-fifo")
    queue = rocksq.blocking.PersistentQueueWithCapacity(source, 100)
    queue.push([b"a", b"bb", b""])
    assert queue.pop(max_elements=1) == [b"a"]
    queue.push([b"line\nbreak", bytes(range(256))])
    del queue  # RocksQ closes a queue when it is dropped
    gc.collect()
    target = str(tmp_path / "migrated")
    err = migrate(capsys, source, target)
    assert "migrated RocksQ FIFO queue" in err and "4 items" in err
    with PersistentQueueWithCapacity(target) as ours:
        assert ours.payload_size == 2 + 10 + 256
        assert ours.pop(100) == [b"bb", b"", b"line\nbreak", bytes(range(256))]
    # An empty RocksQ FIFO (created, never written) migrates to an empty queue.
    empty = str(tmp_path / "rocksq-empty")
    del_me = rocksq.blocking.PersistentQueueWithCapacity(empty, 10)
    del del_me
    migrate(capsys, empty, str(tmp_path / "migrated-empty"))
    assert run_json(capsys, "info", tmp_path / "migrated-empty", "--json")["length"] == 0


def test_migrate_fifo_wrapped(
    capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path
) -> None:
    # Indices wrap to 0 at u64::MAX - 100: read index M - 2, write index 2.
    source = str(tmp_path / "rocksq-wrapped")
    items = {M - 2: b"w0", M - 1: b"w1", 0: b"w2", 1: b"w3"}
    entries = {le(index): value for index, value in items.items()}
    entries[le(2**64 - 1)] = le(2)  # write index
    entries[le(2**64 - 2)] = le(M - 2)  # read index
    entries[le(2**64 - 3)] = le(8)  # payload size
    write_rocksq_dir(source, {"default": entries})
    oracle = rocksq.blocking.PersistentQueueWithCapacity(oracle_copy(source, tmp_path), 100)
    assert oracle.len == 4
    expected = oracle.pop(max_elements=10)
    del oracle  # RocksQ closes a queue when it is dropped
    gc.collect()
    assert expected == [b"w0", b"w1", b"w2", b"w3"]
    target = str(tmp_path / "migrated")
    migrate(capsys, source, target)
    with PersistentQueueWithCapacity(target) as ours:
        assert ours.pop(10) == expected


def test_migrate_fifo_missing_element_is_corruption(
    capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path
) -> None:
    source = str(tmp_path / "rocksq-holes")
    entries = {le(0): b"a", le(2): b"c", le(2**64 - 1): le(3), le(2**64 - 3): le(3)}
    write_rocksq_dir(source, {"default": entries})
    code, _out, err = run(capsys, "migrate-rocksq", source, tmp_path / "target")
    assert code == EXIT_CORRUPTED
    assert "stores 2 of them" in err
    assert not (tmp_path / "target").exists()


def build_rocksq_mpmc(rocksq: Any, path: str) -> list[str]:
    queue = rocksq.blocking.MpmcQueue(path, 60)
    queue.add([b"e%d" % number for number in range(6)])
    oldest, newest = rocksq.StartPosition.Oldest, rocksq.StartPosition.Newest
    queue.next("one", oldest, 1)
    queue.next("four", oldest, 4)
    queue.next("all", oldest, 6)
    queue.next("newest", newest, 1)
    queue.next("registered", oldest, 0)  # RocksQ registers a label without reading
    queue.add([b"", b"line\nbreak"])
    del queue  # RocksQ closes a queue when it is dropped
    gc.collect()
    return ["one", "four", "all", "newest", "registered"]


def test_migrate_mpmc(capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path) -> None:
    source = str(tmp_path / "rocksq-mpmc")
    labels = build_rocksq_mpmc(rocksq, source)
    expected = rocksq_next_all(rocksq, oracle_copy(source, tmp_path), [*labels, "new"])
    target = str(tmp_path / "migrated")
    err = migrate(capsys, source, target)
    assert "8 elements and 5 labels" in err
    info = run_json(capsys, "info", target, "--json")
    assert sorted(entry["label"] for entry in info["labels"]) == sorted(labels)
    # Timestamps are RocksDB's TTL times, to the second.
    assert info["oldest"]["timestamp_ms"] % 1000 == 0
    assert abs(info["oldest"]["timestamp_ms"] / 1000 - time.time()) < 600
    assert drain_labels(target, [*labels, "new"]) == expected


def test_migrate_mpmc_expired(
    capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path
) -> None:
    source = str(tmp_path / "rocksq-mpmc")
    labels = build_rocksq_mpmc(rocksq, source)
    # Age elements 0..2 (as if written long ago) in RocksQ's own TTL format.
    db = Rdict(
        source,
        _no_compression(),
        column_families={name: _no_compression() for name in ("system", "data", "reader")},
    )
    data = db.get_column_family("data")
    for index in range(3):
        value = data[le(index)]
        data[le(index)] = ttl_suffixed(value[:-4], int(time.time()) - 1000)
    del data
    db.close()

    # --ttl leaves out what RocksQ (ttl=100) will drop at its next compaction.
    aged = oracle_copy(source, tmp_path)
    db = Rdict(
        aged,
        _no_compression(),
        column_families={name: _no_compression() for name in ("system", "data", "reader")},
        access_type=AccessType.with_ttl(100),
    )
    data = db.get_column_family("data")
    data.compact_range(None, None)  # RocksDB's TTL compaction, as RocksQ has it
    assert sorted(struct.unpack("<Q", key)[0] for key in data.keys()) == [3, 4, 5, 6, 7]  # noqa: SIM118
    del data
    db.close()
    compacted = oracle_copy(aged, tmp_path)  # the compacted state, before RocksQ reads it
    expected = rocksq_next_all(rocksq, aged, [*labels, "new"])
    assert expected["one"] == ([b"e3", b"e4", b"e5", b"", b"line\nbreak"], True)
    assert expected["four"][1] is False

    err = migrate(capsys, source, str(tmp_path / "with-ttl"), "--ttl", "100")
    assert "5 elements" in err
    assert drain_labels(str(tmp_path / "with-ttl"), [*labels, "new"]) == expected
    # After the compaction, the same without --ttl: the missing elements expired.
    migrate(capsys, compacted, str(tmp_path / "compacted"))
    assert drain_labels(str(tmp_path / "compacted"), [*labels, "new"]) == expected
    # Without --ttl and before any compaction, RocksQ still delivers them: so do we.
    migrate(capsys, source, str(tmp_path / "all"))
    assert drain_labels(str(tmp_path / "all"), ["one"])["one"] == (
        [b"e1", b"e2", b"e3", b"e4", b"e5", b"", b"line\nbreak"],
        False,
    )


def test_migrate_mpmc_wrapped(
    capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path
) -> None:
    source = str(tmp_path / "rocksq-wrapped")
    now_ns = time.time_ns()
    data = {
        le(index): ttl_suffixed(b"w%d" % number)
        for number, index in enumerate([M - 3, M - 2, M - 1, 0, 1])
    }
    system = {
        le(2**64 - 1): ttl_suffixed(le(M - 3)),  # start index
        le(2**64 - 2): ttl_suffixed(le(2)),  # write index
        le(2**64 - 3): ttl_suffixed(le(now_ns)),  # write timestamp
    }

    def reader(index: int, end: int | None = None) -> bytes:
        encoded = b"\xfd" + index.to_bytes(8, "little") if index >= 251 else bytes([index])
        encoded += b"\x00" if end is None else b"\x01\xfd" + end.to_bytes(8, "little")
        return ttl_suffixed(encoded + b"\x00")

    readers = {
        b"before-wrap": reader(M - 1),
        b"after-wrap": reader(1),
        b"at-end": reader(2, now_ns),
    }
    write_rocksq_dir(source, {"default": {}, "system": system, "data": data, "reader": readers})
    labels = ["before-wrap", "after-wrap", "at-end", "new"]
    expected = rocksq_next_all(rocksq, oracle_copy(source, tmp_path), labels)
    assert expected["before-wrap"] == ([b"w2", b"w3", b"w4"], False)
    target = str(tmp_path / "migrated")
    migrate(capsys, source, target)
    assert drain_labels(target, labels) == expected


def test_migrate_labels_rocksq_accepts_but_we_do_not(
    capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path
) -> None:
    source = str(tmp_path / "rocksq-mpmc")
    queue = rocksq.blocking.MpmcQueue(source, 60)
    queue.add([b"a", b"b"])
    queue.next("", rocksq.StartPosition.Oldest, 1)
    queue.next("kept", rocksq.StartPosition.Oldest, 2)
    del queue  # RocksQ closes a queue when it is dropped
    gc.collect()
    code, _out, err = run(capsys, "migrate-rocksq", source, tmp_path / "target")
    assert code == EXIT_ERROR and "--drop-label" in err
    assert not (tmp_path / "target").exists()
    code, _out, err = run(
        capsys, "migrate-rocksq", source, tmp_path / "target", "--drop-label", "x"
    )
    assert code == EXIT_NOT_FOUND and "no such RocksQ label" in err
    migrate(capsys, source, str(tmp_path / "target"), "--drop-label", "")
    assert drain_labels(str(tmp_path / "target"), ["kept"])["kept"] == ([], False)


def test_migrate_dry_run_and_refusals(
    capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path, fifo_path: str
) -> None:
    source = str(tmp_path / "rocksq-mpmc")
    build_rocksq_mpmc(rocksq, source)
    err = migrate(capsys, source, str(tmp_path / "dry"), "--dry-run")
    assert "dry run" in err and "one@1" in err and "all@6" in err
    assert not (tmp_path / "dry").exists()
    # Not a RocksQ directory.
    code, _out, err = run(capsys, "migrate-rocksq", fifo_path, tmp_path / "x")
    assert code == EXIT_NOT_FOUND and "rocksq_aio queue" in err
    code, _out, err = run(capsys, "migrate-rocksq", tmp_path / "nope", tmp_path / "x")
    assert code == EXIT_NOT_FOUND
    # DST must be new or empty.
    code, _out, err = run(capsys, "migrate-rocksq", source, fifo_path)
    assert code == EXIT_ERROR and "FIFO" in err
    code, _out, err = run(capsys, "migrate-rocksq", source, source)
    assert code == EXIT_USAGE


def test_migrate_refuses_a_rocksq_queue_in_use(
    capsys: pytest.CaptureFixture[str], rocksq: Any, tmp_path: Path
) -> None:
    if not os.path.exists("/proc/locks"):
        pytest.skip("needs /proc/locks to see a lock held in this very process")
    source = str(tmp_path / "rocksq-fifo")
    queue = rocksq.blocking.PersistentQueueWithCapacity(source, 10)
    queue.push([b"a"])
    code, _out, err = run(capsys, "migrate-rocksq", source, tmp_path / "target")
    assert code == EXIT_LOCKED and "is open" in err
    assert queue.pop(max_elements=1) == [b"a"]  # RocksQ's own lock is intact
    del queue  # RocksQ closes a queue when it is dropped
    gc.collect()
    migrate(capsys, source, str(tmp_path / "target"))
