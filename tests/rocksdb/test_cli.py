"""The command-line tool (rocksq_aio.cli), run in-process through ``main([...])``.

The migration tests build RocksQ 0.3.0 directories with the real ``rocksq``
package during the run and use RocksQ itself, on a copy, as the oracle.
"""

from __future__ import annotations

import base64
import gc
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rocksdict import AccessType, DBCompressionType, Options, Rdict

from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
from rocksq_aio.cli import (
    EXIT_CORRUPTED,
    EXIT_ERROR,
    EXIT_LOCKED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    ROCKSQ_MAX_ALLOWED_INDEX,
    decode_rocksq_reader,
    main,
)
from rocksq_aio.cli import _output as cli_output

from support.cli import run, run_json
from support.clock import FakeClock

Oldest = StartPosition.Oldest


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def fifo_path(tmp_path: Path) -> str:
    """A FIFO queue: items b'a' (popped), b'line\\nbreak', b'', 0..255."""
    path = str(tmp_path / "fifo")
    with PersistentQueueWithCapacity(path) as queue:
        queue.push([b"a", b"line\nbreak", b"", bytes(range(256))])
        queue.pop()
    return path


def build_mpmc(path: str, clock: FakeClock) -> None:
    """An MPMC queue with expired elements, labels, an expiry report and a hand-back."""
    with MpmcQueue(path, 10, clock=clock) as queue:
        queue.add([b"old-0", b"old-1", b"old-2"])
        queue.next("slow", Oldest, 1)
        queue.next("done", Oldest, 3)
        clock.advance(20)  # the old elements expire at the next add
        queue.add([b"new-0", b"", b"new\n2"])
        clock.advance(1.5)
        queue.add([bytes(range(256)), b"last"])
        queue.next("mid", Oldest, 2)
        queue.reserve_batch("mid", max_elements=1).nack()  # handed back: read first
        queue.next("fresh", Oldest, 1)


@pytest.fixture
def mpmc_path(tmp_path: Path, clock: FakeClock) -> str:
    path = str(tmp_path / "mpmc")
    build_mpmc(path, clock)
    return path


def drain_labels(path: str, labels: list[str]) -> dict[str, tuple[list[bytes], bool]]:
    """Everything each label reads from now on (items handed back come first, in a
    read of their own), and whether it was told that elements expired."""
    result = {}
    with MpmcQueue(path, 0) as queue:
        for label in labels:
            everything: list[bytes] = []
            told = False
            while True:
                items, expired = queue.next(label, Oldest, 1000)
                everything += items
                told = told or expired
                if not items:
                    break
            result[label] = (everything, told)
    return result


# ---------------------------------------------------------------- help and usage


def test_help_as_module_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rocksq_aio", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("info", "peek", "export", "import", "migrate-rocksq", "stats"):
        assert command in result.stdout
    assert "exit codes" in result.stdout
    assert "python -m rocksq_aio" in result.stdout


@pytest.mark.parametrize("command", ["info", "peek", "export", "import", "migrate-rocksq", "stats"])
def test_help_of_every_command(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _err = run(capsys, command, "--help")
    assert code == EXIT_OK
    assert out.startswith("usage:")
    assert command in out
    assert "exit codes" in out


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["info"],
        ["peek", "x", "-n", "0"],
        ["peek", "x", "--raw", "--json"],
        ["info", "x", "--ttl", "-1"],
        ["export", "x"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, err = run(capsys, *args)
    assert code == EXIT_USAGE
    assert out == ""
    assert "usage:" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "--version")
    assert code == EXIT_OK
    assert "0.1.0" in out


# ---------------------------------------------------------------- info


def test_info_fifo(capsys: pytest.CaptureFixture[str], fifo_path: str) -> None:
    code, out, _err = run(capsys, "info", fifo_path)
    assert code == EXIT_OK
    assert "FIFO" in out
    assert "3 items" in out
    info = run_json(capsys, "info", fifo_path, "--json")
    assert info["kind"] == "fifo"
    assert (info["length"], info["head"], info["tail"]) == (3, 1, 4)
    assert info["payload_size"] == len(b"line\nbreak") + 256
    assert info["disk_size"] > 0
    assert "data" in info["column_families"]


def test_info_mpmc(capsys: pytest.CaptureFixture[str], mpmc_path: str, clock: FakeClock) -> None:
    info = run_json(capsys, "info", mpmc_path, "--json")
    assert info["kind"] == "mpmc"
    assert (info["length"], info["head"], info["tail"]) == (5, 3, 8)
    assert info["ttl"] is None and "not stored" in info["ttl_note"]
    start_ms = int((clock.now - 21.5) * 1000)
    assert info["oldest"]["index"] == 3
    assert info["oldest"]["timestamp_ms"] == start_ms + 20_000
    assert info["newest"]["index"] == 7
    assert info["newest"]["timestamp_ms"] == start_ms + 21_500
    assert info["oldest"]["time"].endswith("Z")
    labels = {entry["label"]: entry for entry in info["labels"]}
    assert sorted(labels) == ["done", "fresh", "mid", "slow"]
    assert labels["slow"] == {
        "label": "slow",
        "position": 3,
        "offset": 0,
        "lag": 5,
        "returned": 0,
        "expired_unseen": True,
    }
    assert (labels["mid"]["position"], labels["mid"]["lag"], labels["mid"]["returned"]) == (6, 2, 1)
    assert (labels["fresh"]["position"], labels["fresh"]["lag"]) == (4, 4)
    assert labels["done"]["expired_unseen"] is False  # it had read everything that expired

    code, out, _err = run(capsys, "info", mpmc_path, "--ttl", "5")
    assert code == EXIT_OK
    assert "MPMC" in out and "not stored on disk" in out
    assert "slow" in out and "yes" in out
    # The fixture's fake clock is far in the past: with a 5 s TTL everything is past it.
    assert "with --ttl 5: 5 elements already past it" in out
    info = run_json(capsys, "info", mpmc_path, "--json", "--ttl", str(10**10))
    assert info["expired_with_display_ttl"] == 0


def test_info_does_not_consume(
    capsys: pytest.CaptureFixture[str], mpmc_path: str, fifo_path: str
) -> None:
    for path in (mpmc_path, fifo_path):
        run_json(capsys, "info", path, "--json")
        run(capsys, "peek", path, "-n", "100")
        run(capsys, "export", path, path + ".export")
    assert drain_labels(mpmc_path, ["fresh"])["fresh"][0] == [
        b"",
        b"new\n2",
        bytes(range(256)),
        b"last",
    ]
    with PersistentQueueWithCapacity(fifo_path) as queue:
        assert queue.pop(10) == [b"line\nbreak", b"", bytes(range(256))]


# ---------------------------------------------------------------- errors


def test_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in ("info", "peek", "export", "stats"):
        args = [command, tmp_path / "nope"] + ([tmp_path / "out"] if command == "export" else [])
        code, out, err = run(capsys, *args)
        assert code == EXIT_NOT_FOUND, (command, err)
        assert "no such file or directory" in err
        assert out == ""
    assert not (tmp_path / "nope").exists()  # nothing was created


def test_not_a_queue(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _out, err = run(capsys, "info", empty)
    assert code == EXIT_NOT_FOUND and "not a queue" in err
    assert os.listdir(empty) == []  # not turned into a queue
    a_file = tmp_path / "file"
    a_file.write_text("hello")
    code, _out, err = run(capsys, "info", a_file)
    assert code == EXIT_NOT_FOUND and "not a directory" in err
    # A RocksDB database without our meta column family (RocksQ's FIFO layout).
    other = str(tmp_path / "other")
    db = Rdict(other, Options(raw_mode=True))
    db[b"k"] = b"v"
    db.close()
    code, _out, err = run(capsys, "info", other)
    assert code == EXIT_NOT_FOUND and "migrate-rocksq" in err


def _raw_open(path: str) -> Rdict:
    families = Rdict.list_cf(path, Options(raw_mode=True))
    return Rdict(
        path,
        Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in families},
    )


def _put_meta(path: str, key: bytes, value: bytes) -> None:
    db = _raw_open(path)
    meta = db.get_column_family("meta")
    meta[key] = value
    del meta
    db.close()


def test_unknown_kind(capsys: pytest.CaptureFixture[str], fifo_path: str) -> None:
    _put_meta(fifo_path, b"kind", b"rocksq_aio.fifo.v99")
    code, _out, err = run(capsys, "info", fifo_path)
    assert code == EXIT_NOT_FOUND
    assert "unknown queue kind" in err


def test_corrupted_queue(capsys: pytest.CaptureFixture[str], fifo_path: str) -> None:
    _put_meta(fifo_path, b"state", b"\x00" * 5)
    for command in ("info", "peek"):
        code, out, err = run(capsys, command, fifo_path)
        assert code == EXIT_CORRUPTED, err
        assert "counters" in err
        assert out == ""


# ---------------------------------------------------------------- peek


def test_peek_fifo(capsys: pytest.CaptureFixture[str], fifo_path: str) -> None:
    code, out, _err = run(capsys, "peek", fifo_path, "-n", "2")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert "from the head (index 1)" in lines[0]
    assert lines[1] == "#1  10 B  b'line\\nbreak'"
    assert lines[2] == "#2  0 B  b''"
    assert len(lines) == 3

    code, out, _err = run(capsys, "peek", fifo_path, "--max-bytes", "4")
    assert "#3  256 B  b'\\x00\\x01\\x02\\x03' ... (+252 bytes)" in out

    code, out, _err = run(capsys, "peek", fifo_path, "--hex", "--max-bytes", "0")
    assert "00000000  6c 69 6e 65 0a 62 72 65 61 6b" in out
    assert "|line.break|" in out
    assert "000000f0  f0 f1" in out

    document = run_json(capsys, "peek", fifo_path, "--json", "-n", "100")
    assert [base64.b64decode(item["base64"]) for item in document["items"]] == [
        b"line\nbreak",
        b"",
        bytes(range(256)),
    ]
    assert [item["index"] for item in document["items"]] == [1, 2, 3]

    code, _out, err = run(capsys, "peek", fifo_path, "--label", "x")
    assert code == EXIT_USAGE and "MPMC" in err


def parse_netstrings(data: bytes) -> list[bytes]:
    items = []
    while data:
        length, _colon, rest = data.partition(b":")
        size = int(length)
        assert rest[size : size + 1] == b","
        items.append(rest[:size])
        data = rest[size + 1 :]
    return items


def test_peek_raw_netstrings(capsysbinary: pytest.CaptureFixture[bytes], fifo_path: str) -> None:
    assert main(["peek", fifo_path, "--raw", "-n", "100"]) == EXIT_OK
    out, _err = capsysbinary.readouterr()
    assert out.startswith(b"10:line\nbreak,0:,256:")
    assert parse_netstrings(out) == [b"line\nbreak", b"", bytes(range(256))]


def test_peek_mpmc(capsys: pytest.CaptureFixture[str], mpmc_path: str) -> None:
    document = run_json(capsys, "peek", mpmc_path, "--json", "-n", "2")
    assert [item["index"] for item in document["items"]] == [3, 4]
    assert base64.b64decode(document["items"][0]["base64"]) == b"new-0"
    assert all(item["timestamp_ms"] > 0 for item in document["items"])

    # A label with items handed back reads them first, then from its position.
    document = run_json(capsys, "peek", mpmc_path, "--json", "--label", "mid")
    assert [item["index"] for item in document["items"]] == [None, 6, 7]
    assert [item["returned"] for item in document["items"]] == [True, False, False]
    assert [base64.b64decode(item["base64"]) for item in document["items"]] == [
        b"new\n2",
        bytes(range(256)),
        b"last",
    ]
    code, out, _err = run(capsys, "peek", mpmc_path, "-l", "done", "-n", "1")
    assert code == EXIT_OK and "#3" in out and "b'new-0'" in out
    code, out, _err = run(capsys, "peek", mpmc_path, "-l", "mid", "-n", "1")
    assert "returned" in out and "1 handed-back items first" in out

    code, _out, err = run(capsys, "peek", mpmc_path, "--label", "nobody")
    assert code == EXIT_NOT_FOUND
    assert "no label 'nobody'" in err and "done, fresh, mid, slow" in err
    # Peeking consumed nothing.
    assert drain_labels(mpmc_path, ["mid"])["mid"] == (
        [b"new\n2", bytes(range(256)), b"last"],
        False,
    )


# ---------------------------------------------------------------- export / import


def read_export(path: str) -> tuple[dict[str, Any], list[str]]:
    with open(path, encoding="ascii") as stream:
        lines = stream.read().split("\n")
    assert lines[-1] == ""
    return json.loads(lines[0]), lines[1:-1]


def test_export_format_fifo(capsys: pytest.CaptureFixture[str], fifo_path: str) -> None:
    target = fifo_path + ".export"
    code, out, err = run(capsys, "export", fifo_path, target)
    assert code == EXIT_OK and out == ""
    assert "exported 3 items" in err
    header, lines = read_export(target)
    assert header["format"] == "rocksq_aio-export"
    assert header["version"] == 1
    assert header["kind"] == "fifo"
    assert header["count"] == 3
    assert "labels" not in header
    assert lines == [
        base64.b64encode(b"line\nbreak").decode(),
        "",
        base64.b64encode(bytes(range(256))).decode(),
    ]
    # An existing file is kept unless --force.
    code, _out, err = run(capsys, "export", fifo_path, target)
    assert code == EXIT_ERROR and "--force" in err
    assert run(capsys, "export", fifo_path, target, "--force")[0] == EXIT_OK
    code, _out, err = run(capsys, "export", fifo_path, os.path.join(target + ".d", "x"))
    assert code == EXIT_NOT_FOUND and "does not exist" in err


def test_export_format_mpmc(capsys: pytest.CaptureFixture[str], mpmc_path: str) -> None:
    target = mpmc_path + ".export"
    assert run(capsys, "export", mpmc_path, target)[0] == EXIT_OK
    header, lines = read_export(target)
    assert header["kind"] == "mpmc" and header["count"] == 5
    labels = {entry["label"]: entry for entry in header["labels"]}
    assert labels["slow"] == {"label": "slow", "offset": 0, "expired_unseen": True, "returned": []}
    assert labels["mid"]["offset"] == 3
    assert labels["mid"]["returned"] == [base64.b64encode(b"new\n2").decode()]
    assert labels["done"]["offset"] == 0 and labels["done"]["expired_unseen"] is False
    stamps = [int(line.split(" ")[0]) for line in lines]
    assert stamps[0] == stamps[1] == stamps[2] == stamps[3] - 1500 == stamps[4] - 1500
    assert [base64.b64decode(line.split(" ")[1]) for line in lines] == [
        b"new-0",
        b"",
        b"new\n2",
        bytes(range(256)),
        b"last",
    ]


def test_round_trip_fifo(
    capsys: pytest.CaptureFixture[str], fifo_path: str, tmp_path: Path
) -> None:
    target = str(tmp_path / "fifo.export.gz")
    assert run(capsys, "export", fifo_path, target)[0] == EXIT_OK
    with open(target, "rb") as stream:
        assert stream.read(2) == b"\x1f\x8b"
    copy = str(tmp_path / "nested" / "copy")
    code, _out, err = run(capsys, "import", target, copy)
    assert code == EXIT_OK, err
    assert "imported 3 items" in err
    with PersistentQueueWithCapacity(copy) as queue:
        assert queue.payload_size == 266
        assert queue.pop(10) == [b"line\nbreak", b"", bytes(range(256))]
    assert oct(os.stat(copy).st_mode & 0o777) == oct(0o700)


def test_round_trip_mpmc(
    capsys: pytest.CaptureFixture[str], mpmc_path: str, tmp_path: Path
) -> None:
    first = str(tmp_path / "first.export")
    assert run(capsys, "export", mpmc_path, first)[0] == EXIT_OK
    copy = str(tmp_path / "copy")
    os.mkdir(copy)  # an empty directory is accepted (and replaced)
    code, _out, err = run(capsys, "import", first, copy)
    assert code == EXIT_OK, err
    assert "imported 5 elements and 4 labels" in err
    second = str(tmp_path / "second.export")
    assert run(capsys, "export", copy, second)[0] == EXIT_OK
    header1, lines1 = read_export(first)
    header2, lines2 = read_export(second)
    assert lines1 == lines2  # items and exact timestamps
    assert header1["labels"] == header2["labels"]  # offsets, expiry reports, hand-backs
    labels = ["done", "fresh", "mid", "slow", "brand-new"]
    assert drain_labels(copy, labels) == drain_labels(mpmc_path, labels)
    assert drain_labels(copy, ["slow"])["slow"] == ([], False)  # reported once


def test_round_trip_mpmc_everything_expired(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clock: FakeClock
) -> None:
    path = str(tmp_path / "expired")
    with MpmcQueue(path, 10, clock=clock) as queue:
        queue.add([b"a", b"b"])
        queue.next("reader", Oldest, 1)
        clock.advance(60)
        assert queue.next("other", Oldest, 5) == ([], False)  # expires everything
    export = str(tmp_path / "expired.export")
    assert run(capsys, "export", path, export)[0] == EXIT_OK
    header, lines = read_export(export)
    assert lines == [] and header["count"] == 0
    copy = str(tmp_path / "copy")
    assert run(capsys, "import", export, copy)[0] == EXIT_OK
    expected = {"reader": ([], True), "other": ([], False)}
    assert drain_labels(copy, ["reader", "other"]) == expected
    assert drain_labels(path, ["reader", "other"]) == expected


def test_round_trip_through_pipes(
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
    fifo_path: str,
    tmp_path: Path,
) -> None:
    assert main(["export", fifo_path, "-"]) == EXIT_OK
    exported, err = capsysbinary.readouterr()
    assert exported.startswith(b'{"format": "rocksq_aio-export"')
    assert b"to stdout" in err

    class Stdin:
        buffer = __import__("io").BytesIO(exported)

    monkeypatch.setattr(sys, "stdin", Stdin)
    copy = str(tmp_path / "copy")
    assert main(["import", "-", copy]) == EXIT_OK
    with PersistentQueueWithCapacity(copy) as queue:
        assert queue.len == 3


def test_import_into_empty_queue_of_same_kind(
    capsys: pytest.CaptureFixture[str], fifo_path: str, tmp_path: Path
) -> None:
    export = str(tmp_path / "fifo.export")
    assert run(capsys, "export", fifo_path, export)[0] == EXIT_OK
    used = str(tmp_path / "used")
    with PersistentQueueWithCapacity(used) as queue:  # emptied: head 2
        queue.push([b"x", b"y"])
        queue.pop(2)
    assert run(capsys, "import", export, used)[0] == EXIT_OK
    with PersistentQueueWithCapacity(used) as queue:
        assert queue.pop(10) == [b"line\nbreak", b"", bytes(range(256))]


def test_import_refusals(
    capsys: pytest.CaptureFixture[str], fifo_path: str, mpmc_path: str, tmp_path: Path
) -> None:
    export = str(tmp_path / "fifo.export")
    assert run(capsys, "export", fifo_path, export)[0] == EXIT_OK
    # A non-empty queue is never overwritten.
    code, _out, err = run(capsys, "import", export, fifo_path)
    assert code == EXIT_ERROR and "refusing to overwrite a non-empty queue" in err
    # A queue of the other kind.
    empty_mpmc = str(tmp_path / "empty-mpmc")
    MpmcQueue(empty_mpmc, 0).close()
    code, _out, err = run(capsys, "import", export, empty_mpmc)
    assert code == EXIT_ERROR and "holds a MPMC queue" in err
    # A directory that is not a queue.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _out, err = run(capsys, "import", export, foreign)
    assert code == EXIT_NOT_FOUND and "neither a queue nor an empty directory" in err
    assert os.listdir(foreign) == ["notes.txt"]
    # A missing export file.
    code, _out, err = run(capsys, "import", tmp_path / "missing.export", tmp_path / "new")
    assert code == EXIT_NOT_FOUND and "no such file" in err
    assert not os.path.exists(tmp_path / "new")
    assert drain_labels(mpmc_path, ["fresh"])["fresh"][0][0] == b""


def header(kind: str, count: int, **extra: object) -> bytes:
    fields = {"format": "rocksq_aio-export", "version": 1, "kind": kind, "count": count, **extra}
    return json.dumps(fields).encode() + b"\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"not json\n", "not a JSON header"),
        (b'{"format": "other"}\n', "not a rocksq_aio-export file"),
        (header("fifo", 0, version=2), "version"),
        (header("lifo", 0), "kind"),
        (header("fifo", -1), "count"),
        (header("fifo", 2) + b"YQ==\n", "truncated"),
        (header("fifo", 1) + b"YQ==\nYg==\n", "more lines"),
        (header("fifo", 1) + b"!!!\n", "base64"),
        (header("mpmc", 1) + b"YQ==\n", "timestamp"),
        (header("mpmc", 1) + b"-5 YQ==\n", "timestamp"),
        (header("mpmc", 1, labels=[{"label": "a", "offset": 2}]) + b"1 YQ==\n", "offset"),
        (header("mpmc", 0, labels=[{"label": ""}]), "non-empty"),
        (header("mpmc", 0, labels=[{"label": "a"}, {"label": "a"}]), "twice"),
        (header("mpmc", 0, labels=[{"label": "a", "returned": ["%"]}]), "base64"),
        (header("fifo", 0, labels=[{"label": "a"}]), "FIFO export cannot have labels"),
    ],
)
def test_import_rejects_bad_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    source = tmp_path / "bad.export"
    source.write_bytes(content)
    target = tmp_path / "target"
    code, _out, err = run(capsys, "import", source, target)
    assert code == EXIT_ERROR, err
    assert message in err
    assert not target.exists()  # a failed import leaves nothing behind
    assert os.listdir(tmp_path) == ["bad.export"]


def test_progress_on_long_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = str(tmp_path / "long")
    with MpmcQueue(path, 0) as queue:
        queue.add([b"%d" % number for number in range(3000)])
        queue.next("reader", Oldest, 2500)
    export = str(tmp_path / "long.export")
    code, _out, err = run(capsys, "export", path, export)
    assert "items/s" not in err  # short runs show no progress
    monkeypatch.setattr(cli_output, "PROGRESS_MIN_ITEMS", 1000)
    monkeypatch.setattr(cli_output, "PROGRESS_INTERVAL", 0.0)
    code, _out, err = run(capsys, "export", path, export, "--force")
    assert code == EXIT_OK
    assert "export" in err and "3000/3000" in err  # a tqdm bar when tqdm is installed
    code, _out, err = run(capsys, "import", export, tmp_path / "copy")
    assert code == EXIT_OK
    assert "import" in err and "3000/3000" in err
    assert "positioning labels" in err and "2500/2500" in err
    code, _out, err = run(capsys, "export", path, export, "--force", "--quiet")
    assert err == ""
    # Without tqdm, a plain line.
    monkeypatch.setitem(sys.modules, "tqdm", None)
    code, _out, err = run(capsys, "export", path, export, "--force")
    assert code == EXIT_OK
    assert "export: 3000/3000 items (100%)" in err


# ---------------------------------------------------------------- stats


def test_stats(capsys: pytest.CaptureFixture[str], mpmc_path: str) -> None:
    stats = run_json(capsys, "stats", mpmc_path, "--json")
    assert stats["kind"] == "mpmc" and stats["read_only"] is False
    families = stats["column_families"]
    assert {"data", "meta", "positions", "default"} <= set(families)
    data = families["data"]
    for name in (
        "rocksdb.estimate-num-keys",
        "rocksdb.total-sst-files-size",
        "rocksdb.estimate-pending-compaction-bytes",
        "rocksdb.compaction-pending",
    ):
        assert isinstance(data[name], int), name
    assert data["rocksdb.estimate-num-keys"] >= 1
    assert len(data["files_per_level"]) == 7
    assert stats["db"]["rocksdb.num-running-compactions"] == 0
    assert "Compaction Stats" in stats["rocksdb.stats"]
    code, out, _err = run(capsys, "stats", mpmc_path)
    assert code == EXIT_OK
    assert "FAMILY" in out and "positions" in out and "num-running-compactions: 0" in out
    assert "Compaction Stats" not in out
    code, out, _err = run(capsys, "stats", mpmc_path, "--verbose")
    assert "Compaction Stats" in out
    # Opening for stats changed nothing.
    assert run_json(capsys, "info", mpmc_path, "--json")["length"] == 5


# ---------------------------------------------------------------- RocksQ migration


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
