"""The command-line tool on a queue that a running service holds open.

The service is another process (``tests/support/live_writer.py``): a blocking
FIFO queue or an async MPMC queue with labels, that keeps appending, reading
and reserving while info, peek, stats and export run against it here
(``main([...])`` in this process, once as ``python -m rocksq_aio``). Every item
is the number of the index it was appended at, so a snapshot is consistent
exactly when its counters and its items agree: a FIFO export is the numbers
``head - reserved .. tail - 1`` in order (the reserved items first), an MPMC
export the numbers ``head .. tail - 1``. A reader that mixed two moments (the
counters of one, the items of a later one) fails these checks or the read
itself: planted once (the views caught up with the primary again before
reading items), both snapshot tests failed with exit 5, an element missing.

The service checks everything it reads itself and must keep working and end
with its data intact; the commands that write (import, migrate-rocksq onto it,
remove_queue) refuse it with exit 4.
"""

from __future__ import annotations

import base64
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rocksq_aio
from rocksq_aio import QueueLockedError
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
from rocksq_aio.cli import EXIT_CORRUPTED, EXIT_LOCKED, EXIT_OK
from rocksq_aio.rocksdb import format as _format
from rocksq_aio.rocksdb.view import FifoView, MpmcView

from support.cli import run, run_json
from support.rocksdb import raw_database

WRITER = Path(__file__).resolve().parent.parent / "support" / "live_writer.py"
SNAPSHOT = "snapshot of a queue open in another process, as of "
MIN_ROUNDS = 4
MAX_ROUNDS = 40


def number_of(item: bytes) -> int:
    return int(item.split(b".", 1)[0])


class Writer:
    """The live service in its own process; its stdout is read by a thread."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, str(WRITER), kind, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self._wait(lambda: "READY" in self.lines)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.strip())
                self.changed.notify_all()
        with self.changed:
            self.lines.append("EOF")
            self.changed.notify_all()

    def _wait(self, done: Any) -> None:
        with self.changed:
            finished = self.changed.wait_for(
                lambda: done() or "EOF" in self.lines or self.failed(), timeout=120
            )
        assert finished and not self.failed(), self.lines[-5:]
        assert done(), f"the writer stopped: {self.lines[-5:]}"

    def failed(self) -> bool:
        return any(line.startswith("FAILED") for line in self.lines)

    def ops(self) -> int:
        counts = [int(line.split()[1]) for line in self.lines if line.startswith("OPS ")]
        return counts[-1] if counts else 0

    def keep_going(self, more: int = 200) -> None:
        """Wait until the writer did ``more`` operations: it is not disturbed."""
        target = self.ops() + more
        self._wait(lambda: self.ops() >= target)

    def stop(self) -> dict[str, int]:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        assert self.process.wait(timeout=120) == 0, self.lines[-5:]
        self._wait(lambda: "EOF" in self.lines)
        result: dict[str, int] = json.loads(self.lines[-2])
        return result


@pytest.fixture
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Writer]]:
    """A queue of kind ``request.param`` and the live writer that holds it open."""
    path = str(tmp_path / "live")
    writer = Writer(request.param, path)
    try:
        yield path, writer
    finally:
        if writer.process.poll() is None:
            writer.process.kill()
            writer.process.wait(timeout=60)


class Rounds:
    """Rounds of snapshots: at least MIN_ROUNDS, and until one caught a reservation
    (set ``seen_reserved``); the writer works on between two. Each round starts
    with ``info --json``, checked for what every snapshot says."""

    def __init__(self, capsys: pytest.CaptureFixture[str], live: tuple[str, Writer]) -> None:
        self.capsys = capsys
        self.path, self.writer = live
        self.seen_reserved = False

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        number = 0
        while number < MIN_ROUNDS or not self.seen_reserved:
            assert number < MAX_ROUNDS, "no snapshot caught the writer holding a reservation"
            number += 1
            self.writer.keep_going()
            info = run_json(self.capsys, "info", self.path, "--json")
            assert info["snapshot"]["open_in"] == "another process"
            assert info["snapshot"]["note"].startswith(SNAPSHOT)
            assert info["length"] == info["tail"] - info["head"] >= 0
            yield number, info


def check_peek(capsys: pytest.CaptureFixture[str], path: str, *args: str) -> None:
    """Peeked items are the numbers of their indices."""
    peeked = run_json(capsys, "peek", path, "--json", "-n", 20, *args)
    assert peeked["snapshot"]["note"].startswith(SNAPSHOT)
    for entry in peeked["items"]:
        assert entry["returned"] or number_of(base64.b64decode(entry["base64"])) == entry["index"]


def export_snapshot(capsys: pytest.CaptureFixture[str], path: str, file: Path) -> Path:
    code, _out, err = run(capsys, "export", path, file)
    assert code == EXIT_OK, err
    assert "exported a " + SNAPSHOT in err
    return file


def read_export(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    header_line, *lines = path.read_bytes().splitlines()
    return json.loads(header_line), lines


# ---------------------------------------------------------------- FIFO


def check_fifo_export(file: Path) -> tuple[dict[str, Any], list[bytes]]:
    """The export of a FIFO snapshot is the numbers head - reserved .. tail - 1."""
    header, lines = read_export(file)
    items = [base64.b64decode(line) for line in lines]
    head, tail = header["head"], header["tail"]
    reserved = header.get("reserved_included", 0)
    assert header["count"] == len(items) == reserved + tail - head
    assert [number_of(item) for item in items] == list(range(head - reserved, tail))
    assert header["payload_size"] == sum(map(len, items[reserved:]))
    assert header["snapshot"]["note"].startswith(SNAPSHOT)
    return header, items


@pytest.mark.parametrize("live", ["fifo"], indirect=True)
def test_fifo_snapshots_of_a_live_queue(
    capsys: pytest.CaptureFixture[str], live: tuple[str, Writer], tmp_path: Path
) -> None:
    path, writer = live
    rounds = Rounds(capsys, live)
    for number, info in rounds:
        rounds.seen_reserved = rounds.seen_reserved or info["reserved"] > 0

        check_peek(capsys, path)
        exported = export_snapshot(capsys, path, tmp_path / f"export-{number}")
        header, items = check_fifo_export(exported)
        rounds.seen_reserved = rounds.seen_reserved or header.get("reserved_included", 0) > 0

        # The export round-trips into a fresh queue, which is no snapshot.
        copy = tmp_path / f"copy-{number}"
        assert run(capsys, "import", exported, copy)[0] == EXIT_OK
        assert "snapshot" not in run_json(capsys, "info", copy, "--json")
        with PersistentQueueWithCapacity(str(copy)) as queue:
            assert queue.pop(max_elements=len(items) + 1) == items

    code, out, err = run(capsys, "info", path)
    assert code == EXIT_OK, err
    assert out.startswith(SNAPSHOT)
    assert "reserved:" in out
    code, out, _err = run(capsys, "peek", path)
    assert code == EXIT_OK and out.startswith(SNAPSHOT)
    code, out, err = run(capsys, "peek", path, "--raw", "-n", 3)
    assert code == EXIT_OK and err.count(SNAPSHOT) == 1 and SNAPSHOT not in out

    writer.keep_going()
    final = writer.stop()
    # The writer's data is intact: what it did not pop, in order.
    with PersistentQueueWithCapacity(path) as queue:
        assert queue.len == final["appended"] - final["head"]
        rest = queue.pop(max_elements=queue.len + 1)
    assert [number_of(item) for item in rest] == list(range(final["head"], final["appended"]))


def test_operator_in_another_process(tmp_path: Path) -> None:
    """``python -m rocksq_aio`` run by an operator beside the service."""
    path = str(tmp_path / "live")
    writer = Writer("fifo", path)
    try:
        writer.keep_going()
        for command in (["info"], ["stats"], ["peek", "-n", "2"]):
            result = subprocess.run(
                [sys.executable, "-m", "rocksq_aio", *command, path],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(SNAPSHOT), result.stdout
        writer.keep_going()
    finally:
        writer.stop()


# ---------------------------------------------------------------- MPMC


def check_mpmc_export(file: Path) -> tuple[dict[str, Any], list[bytes]]:
    """The export of an MPMC snapshot is the numbers head .. tail - 1, labels inside."""
    header, lines = read_export(file)
    stamped = [line.split(b" ") for line in lines]
    stamps = [int(stamp) for stamp, _item in stamped]
    items = [base64.b64decode(item) for _stamp, item in stamped]
    head, tail, count = header["head"], header["tail"], header["count"]
    assert count == len(items) == tail - head
    assert [number_of(item) for item in items] == list(range(head, tail))
    assert stamps == sorted(stamps)
    assert header["snapshot"]["note"].startswith(SNAPSHOT)
    reserved_and_returned = 0
    for label in header["labels"]:
        assert label["label"] in ("a", "b", "c")
        assert 0 <= label["offset"] <= count
        returned = [number_of(base64.b64decode(item)) for item in label["returned"]]
        if label["label"] != "c":
            assert returned == []  # a and b never reserve
        # What goes back to a label was read by it: before its position.
        assert all(number < head + label["offset"] for number in returned)
        reserved_and_returned += len(returned)
    assert header.get("reserved_included", 0) <= reserved_and_returned
    return header, lines


@pytest.mark.parametrize("live", ["mpmc"], indirect=True)
def test_mpmc_snapshots_of_a_live_queue(
    capsys: pytest.CaptureFixture[str], live: tuple[str, Writer], tmp_path: Path
) -> None:
    path, writer = live
    rounds = Rounds(capsys, live)
    for number, info in rounds:
        head, tail = info["head"], info["tail"]
        if head < tail:
            assert info["oldest"]["index"] == head and info["newest"]["index"] == tail - 1
        for label in info["labels"]:
            assert head <= label["position"] <= tail
            assert label["lag"] == tail - label["position"]
            assert label["reserved"] == 0 or label["label"] == "c"
            rounds.seen_reserved = rounds.seen_reserved or label["reserved"] > 0

        check_peek(capsys, path, "-l", "a")
        exported = export_snapshot(capsys, path, tmp_path / f"export-{number}")
        header, lines = check_mpmc_export(exported)
        rounds.seen_reserved = rounds.seen_reserved or header.get("reserved_included", 0) > 0

        # The export round-trips: a fresh queue built from it exports the same.
        copy = tmp_path / f"copy-{number}"
        assert run(capsys, "import", exported, copy)[0] == EXIT_OK
        again = tmp_path / f"again-{number}"
        assert run(capsys, "export", copy, again)[0] == EXIT_OK
        copy_header, copy_lines = read_export(again)
        assert "snapshot" not in copy_header
        assert copy_lines == lines
        assert copy_header["labels"] == header["labels"]

    stats = run_json(capsys, "stats", path, "--json")
    assert stats["snapshot"]["note"].startswith(SNAPSHOT)
    assert stats["read_only"] is False
    assert {"data", "positions", "leased"} <= set(stats["column_families"])
    code, out, _err = run(capsys, "stats", path)
    assert code == EXIT_OK and out.startswith(SNAPSHOT)
    code, out, _err = run(capsys, "info", path)
    assert code == EXIT_OK and out.startswith(SNAPSHOT) and "RESERVED" in out

    writer.keep_going()
    final = writer.stop()
    info = run_json(capsys, "info", path, "--json")
    assert "snapshot" not in info
    assert info["tail"] == final["appended"]
    _header, lines = read_export_of(capsys, path, tmp_path / "final")
    assert [number_of(base64.b64decode(line.split(b" ")[1])) for line in lines] == list(
        range(info["head"], info["tail"])
    )


def read_export_of(
    capsys: pytest.CaptureFixture[str], path: str, file: Path
) -> tuple[dict[str, Any], list[bytes]]:
    code, _out, err = run(capsys, "export", path, file)
    assert code == EXIT_OK, err
    return read_export(file)


# ---------------------------------------------------------------- writes refuse


def rocksq_fifo(path: Path) -> str:
    """A RocksQ 0.3.0 FIFO queue to migrate (skipped without the rocksq package)."""
    try:
        blocking = importlib.import_module("rocksq.blocking")
    except ImportError:
        pytest.skip("the rocksq package (0.3.0) is not installed")
    queue = blocking.PersistentQueueWithCapacity(str(path), 10)
    queue.push([b"from rocksq"])
    del queue  # RocksQ closes a queue when it is dropped
    gc.collect()
    return str(path)


@pytest.mark.parametrize("live", ["fifo", "mpmc"], indirect=True)
def test_writes_refuse_a_live_queue(
    capsys: pytest.CaptureFixture[str], live: tuple[str, Writer], tmp_path: Path
) -> None:
    path, writer = live
    kind = writer.kind
    exported = tmp_path / "empty.export"
    header = {"format": "rocksq_aio-export", "version": 1, "kind": kind, "count": 0}
    exported.write_text(json.dumps(header) + "\n")
    writer.keep_going()
    code, _out, err = run(capsys, "import", exported, path)
    assert code == EXIT_LOCKED and "already open" in err, err
    if kind == "fifo":
        source = rocksq_fifo(tmp_path / "rocksq")
        code, _out, err = run(capsys, "migrate-rocksq", source, path)
        assert code == EXIT_LOCKED and "already open" in err, err
    with pytest.raises(QueueLockedError):
        rocksq_aio.remove_queue(path)
    with pytest.raises(QueueLockedError):
        rocksq_aio.remove_mpmc_queue(path)
    writer.keep_going()
    writer.stop()
    assert "snapshot" not in run_json(capsys, "info", path, "--json")


# ---------------------------------------------------------------- nothing disturbed


@pytest.mark.parametrize("live", ["fifo"], indirect=True)
def test_the_queue_directory_is_left_alone(
    capsys: pytest.CaptureFixture[str],
    live: tuple[str, Writer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rocksdict rewrites its config file at every open: it is put back as it was,
    and the secondary instance's own directory is removed."""
    path, writer = live
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = Path(path) / "rocksdict-config.json"
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    names = set(os.listdir(path))
    for args in (
        ["info", path],
        ["peek", path],
        ["stats", path],
        ["export", path, tmp_path / "x.export"],
    ):
        writer.keep_going(50)
        assert run(capsys, *args)[0] == EXIT_OK, args
        assert os.listdir(scratch) == [], args
        assert (config.read_bytes(), config.stat().st_mtime_ns) == before, args
    # Only the writer's own files came and went (tables and logs), nothing of ours.
    created = set(os.listdir(path)) - names
    assert all(name.endswith((".sst", ".log")) or name.startswith("MANIFEST") for name in created)
    writer.stop()


# ---------------------------------------------------------------- open in this process


def test_snapshot_of_a_queue_open_in_this_process(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fifo_path, mpmc_path = str(tmp_path / "fifo"), str(tmp_path / "mpmc")
    with PersistentQueueWithCapacity(fifo_path) as fifo, MpmcQueue(mpmc_path, 0) as mpmc:
        fifo.push([b"0", b"1", b"2"])
        fifo.push([b"3"])  # one item: its counters are not saved
        batch = fifo.reserve_batch(1)
        mpmc.add([b"0", b"1"])
        mpmc.add([b"2"])
        mpmc.next("a")
        mpmc_batch = mpmc.reserve_batch("c", max_elements=2)
        info = run_json(capsys, "info", fifo_path, "--json")
        assert info["snapshot"]["open_in"] == "this process"
        assert (info["head"], info["tail"], info["reserved"]) == (1, 4, 1)
        info = run_json(capsys, "info", mpmc_path, "--json")
        assert (info["head"], info["tail"]) == (0, 3)
        labels = {entry["label"]: entry for entry in info["labels"]}
        assert (labels["a"]["position"], labels["c"]["position"]) == (1, 2)
        assert (labels["a"]["reserved"], labels["c"]["reserved"]) == (0, 2)
        for path in (fifo_path, mpmc_path):
            for args in (["peek", path], ["stats", path], ["info", path]):
                code, out, err = run(capsys, *args)
                assert code == EXIT_OK, (args, err)
                assert out.startswith("snapshot of a queue open in this process, as of ")
        # Export includes the reservations, as a restart would deliver them again.
        code, _out, err = run(capsys, "export", fifo_path, tmp_path / "fifo.export")
        assert code == EXIT_OK, err
        header, lines = read_export(tmp_path / "fifo.export")
        assert header["reserved_included"] == 1
        assert [base64.b64decode(line) for line in lines] == [b"0", b"1", b"2", b"3"]
        assert run(capsys, "export", mpmc_path, tmp_path / "mpmc.export")[0] == EXIT_OK
        header, _lines = read_export(tmp_path / "mpmc.export")
        returned = {label["label"]: label["returned"] for label in header["labels"]}
        assert returned["c"] == [base64.b64encode(b"0").decode(), base64.b64encode(b"1").decode()]
        # stats --read-only does not take the lock either.
        assert run_json(capsys, "stats", fifo_path, "--json", "--read-only")["read_only"]
        # Writes still refuse.
        code, _out, err = run(capsys, "import", tmp_path / "fifo.export", fifo_path)
        assert code == EXIT_LOCKED and "already open" in err
        batch.ack()
        mpmc_batch.ack()
        assert fifo.pop(max_elements=10) == [b"1", b"2", b"3"]
    assert "snapshot" not in run_json(capsys, "info", fifo_path, "--json")


def test_snapshot_while_another_process_merely_holds_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = str(tmp_path / "fifo")
    with PersistentQueueWithCapacity(path) as queue:
        queue.push([b"a", b"b"])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from rocksq_aio.blocking import PersistentQueueWithCapacity\n"
            "queue = PersistentQueueWithCapacity(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
            "assert queue.pop(max_elements=5) == [b'a', b'b']\n",
            path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        code, out, err = run(capsys, "info", path)
        assert code == EXIT_OK, err
        assert out.startswith(SNAPSHOT) and "2 items" in out
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    code, out, _err = run(capsys, "info", path)
    assert code == EXIT_OK and not out.startswith("snapshot") and "0 items" in out


# ---------------------------------------------------------------- the view itself


def test_a_view_leaves_out_a_write_still_being_staged(tmp_path: Path) -> None:
    """The keys of a large write whose last batch has not landed are not the queue's."""
    fifo_path, mpmc_path = tmp_path / "fifo", tmp_path / "mpmc"
    with PersistentQueueWithCapacity(str(fifo_path)) as fifo:
        fifo.push([b"0", b"1", b"2", b"3"])
        fifo.pop(max_elements=2)
    with MpmcQueue(str(mpmc_path), 0) as mpmc:
        mpmc.add([b"0", b"1"])
    stamp = _format.stamp(int(time.time() * 1000), b"staged")
    cases = [
        (fifo_path, 4, 6, b"staged"),  # a push at the tail
        (fifo_path, 0, 2, b"given back"),  # a give-back below the head
        (mpmc_path, 2, 5, stamp),  # an add at the tail
    ]
    for path, start, stop, value in cases:
        with raw_database(path) as families:
            families["meta"][_format.STAGING_KEY] = _format.encode_staged_range(start, stop)
            for index in range(start, stop - 1):  # the last batch never landed
                families["data"][_format.encode_index(index)] = value
        if path == fifo_path:
            with FifoView(str(path)) as view:
                assert (view.snapshot().head, view.snapshot().tail, view.len) == (2, 4, 2)
                assert view.read_stored(2, 2) == [b"2", b"3"]
                assert view.payload_size == 2
        else:
            with MpmcView(str(path)) as view:
                assert (view.snapshot().head, view.snapshot().tail) == (0, 2)
                assert [item for _stamp, item in view.read_stored(0, 2)] == [b"0", b"1"]
        with raw_database(path) as families:
            del families["meta"][_format.STAGING_KEY]
            for index in range(start, stop):
                del families["data"][_format.encode_index(index)]


def test_a_view_refuses_a_corrupted_queue(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A view validates what it reads as an open does (exit 5 from the tool)."""
    bad_counters, hole = tmp_path / "bad-counters", tmp_path / "hole"
    for path in (bad_counters, hole):
        with PersistentQueueWithCapacity(str(path)) as queue:
            queue.push([b"a", b"b", b"c"])
    with raw_database(bad_counters) as families:
        families["meta"][_format.STATE_KEY] = b"\x00" * 5
    with raw_database(hole) as families:
        del families["data"][_format.encode_index(1)]
    with pytest.raises(rocksq_aio.QueueCorruptedError, match="counters"):
        FifoView(str(bad_counters))
    for path, command in ((bad_counters, "info"), (hole, "peek")):
        # Another process holding the lock is enough to make the tool read a snapshot.
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path / "LOCK")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "ready"
            code, out, err = run(capsys, command, path)
            assert code == EXIT_CORRUPTED, err
            assert out == ""
        finally:
            holder.communicate("", timeout=60)


LOCK_HOLDER = """\
import fcntl, sys
lock = open(sys.argv[1], "r+")
fcntl.lockf(lock, fcntl.LOCK_EX)
print("ready", flush=True)
sys.stdin.read()
"""
