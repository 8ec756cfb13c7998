"""The command-line tool's export and import (an image of a queue in a file):
the file format, round trips (FIFO, MPMC with labels, expiry reports and
hand-backs, through pipes), refusals, rejected files leaving nothing behind,
and progress on long runs.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
from rocksq_aio.cli import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, main
from rocksq_aio.cli import _output as cli_output

from support.cli import drain_labels, run
from support.clock import FakeClock

Oldest = StartPosition.Oldest


def export_ok(
    capsys: pytest.CaptureFixture[str], queue: object, target: object, *extra: str
) -> str:
    """``export QUEUE TARGET [EXTRA...]``, which must succeed; the target's path."""
    code, _out, err = run(capsys, "export", queue, target, *extra)
    assert code == EXIT_OK, err
    return str(target)


def import_ok(capsys: pytest.CaptureFixture[str], source: object, target: object) -> str:
    """``import SOURCE TARGET``, which must succeed; what it said on stderr."""
    code, _out, err = run(capsys, "import", source, target)
    assert code == EXIT_OK, err
    return err


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
    export_ok(capsys, fifo_path, target, "--force")
    code, _out, err = run(capsys, "export", fifo_path, os.path.join(target + ".d", "x"))
    assert code == EXIT_NOT_FOUND and "does not exist" in err


def test_export_format_mpmc(capsys: pytest.CaptureFixture[str], mpmc_path: str) -> None:
    target = mpmc_path + ".export"
    export_ok(capsys, mpmc_path, target)
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
    target = export_ok(capsys, fifo_path, tmp_path / "fifo.export.gz")
    with open(target, "rb") as stream:
        assert stream.read(2) == b"\x1f\x8b"
    copy = str(tmp_path / "nested" / "copy")
    err = import_ok(capsys, target, copy)
    assert "imported 3 items" in err
    with PersistentQueueWithCapacity(copy) as queue:
        assert queue.payload_size == 266
        assert queue.pop(10) == [b"line\nbreak", b"", bytes(range(256))]
    assert oct(os.stat(copy).st_mode & 0o777) == oct(0o700)


def test_round_trip_mpmc(
    capsys: pytest.CaptureFixture[str], mpmc_path: str, tmp_path: Path
) -> None:
    first = export_ok(capsys, mpmc_path, tmp_path / "first.export")
    copy = str(tmp_path / "copy")
    os.mkdir(copy)  # an empty directory is accepted (and replaced)
    err = import_ok(capsys, first, copy)
    assert "imported 5 elements and 4 labels" in err
    second = export_ok(capsys, copy, tmp_path / "second.export")
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
    export = export_ok(capsys, path, tmp_path / "expired.export")
    header, lines = read_export(export)
    assert lines == [] and header["count"] == 0
    copy = str(tmp_path / "copy")
    import_ok(capsys, export, copy)
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
    export = export_ok(capsys, fifo_path, tmp_path / "fifo.export")
    used = str(tmp_path / "used")
    with PersistentQueueWithCapacity(used) as queue:  # emptied: head 2
        queue.push([b"x", b"y"])
        queue.pop(2)
    import_ok(capsys, export, used)
    with PersistentQueueWithCapacity(used) as queue:
        assert queue.pop(10) == [b"line\nbreak", b"", bytes(range(256))]


def test_import_refusals(
    capsys: pytest.CaptureFixture[str], fifo_path: str, mpmc_path: str, tmp_path: Path
) -> None:
    export = export_ok(capsys, fifo_path, tmp_path / "fifo.export")
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
