"""The command-line tool (rocksq_aio.cli), run in-process through ``main([...])``:
help and usage, info, errors (missing, foreign, corrupted queues; locked ones in test_cli_live.py),
peek and stats. Export/import is in test_cli_image.py, the RocksQ migration
in test_cli_migrate.py; the queues they inspect come from conftest.py.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from rocksq_aio.blocking import PersistentQueueWithCapacity
from rocksq_aio.cli import EXIT_CORRUPTED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main

from support.cli import drain_labels, run, run_json
from support.clock import FakeClock

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
