"""Crash safety: a child process works on a queue and is killed with SIGKILL at random moments.

The child (``tests/support/crash_child.py``) reports every operation before calling it
and again once it returned, one line per event on a pipe. After the kill the
parent reopens the queue (RocksDB's lock dies with the process) and checks
what the README promises for ``sync=False``: every operation that returned is
on disk, and an operation in flight at the kill is applied entirely or not at
all; ``len`` and ``payload_size`` match what is actually stored.

Each scenario repeats kill-and-check rounds on the same directory, so recovery
from one crash is also the starting point of the next. The normal run kills
``NORMAL_KILLS`` times per scenario; the ``stress`` variants (``make stress``)
``STRESS_KILLS`` times. The random seed is in every failure message; set
``CRASH_SEED`` to replay the same choices (kill moments still vary).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import rocksq_aio
from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.items import ALL, item_number, make_item

NORMAL_KILLS = 20
STRESS_KILLS = 200
MAX_KILL_DELAY = 0.1
"""The child is killed after a random delay in [0, MAX_KILL_DELAY) s once its queue is open."""
HANG_GUARD = 120.0
"""Only reached if the child never opens its queue (a hang): then the test fails."""
PREFILL = 30_000
"""Items put in the queue before each run of a popping child."""
BIG_ITEM = 16 * 1024
BIG_BATCH = 20  # items per push: 320 KiB, five times the batch byte cap below
BIG_BATCH_BYTES = 64 * 1024

CHILD = Path(__file__).resolve().parent.parent / "support" / "crash_child.py"


# ---------------------------------------------------------------- the child and its report


@dataclass
class Report:
    """What a killed child said about its operations."""

    appends: dict[int, int] = field(default_factory=dict)
    """Every append called: first number -> count."""
    completed: set[int] = field(default_factory=set)
    """First numbers of the appends that returned."""
    delivered: list[int] = field(default_factory=list)
    """Numbers returned by reads (pop/next), in report order."""
    reads_in_flight: dict[str, int] = field(default_factory=dict)
    """Reader -> max_elements of its read called and not returned at the kill."""
    raw: list[str] = field(default_factory=list)

    @property
    def appended_end(self) -> int | None:
        return max((first + count for first, count in self.appends.items()), default=None)

    def tail(self, lines: int = 8) -> str:
        return "".join(self.raw[-lines:])


def parse_report(lines: list[str]) -> Report:
    report = Report(raw=lines)
    for line in lines:
        kind, *fields = line.split()
        if kind == "B":
            first, count = int(fields[0]), int(fields[1])
            assert first not in report.appends, f"child announced append {first} twice"
            report.appends[first] = count
        elif kind == "P":
            first, count = int(fields[0]), int(fields[1])
            assert report.appends.get(first) == count, f"child completed unknown append: {line}"
            report.completed.add(first)
        elif kind == "b":
            assert fields[0] not in report.reads_in_flight, f"overlapping reads: {line}"
            report.reads_in_flight[fields[0]] = int(fields[1])
        elif kind == "p":
            limit = report.reads_in_flight.pop(fields[0])
            assert len(fields) - 1 <= limit, f"read returned more than asked: {line}"
            report.delivered.extend(int(number) for number in fields[1:])
        else:
            assert kind in ("READY", "OPENING"), f"unexpected line from the child: {line!r}"
    return report


def _child_environment() -> dict[str, str]:
    # The child imports the same rocksq_aio as this process.
    library_root = str(Path(rocksq_aio.__file__).resolve().parent.parent)
    environment = dict(os.environ)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = library_root + (os.pathsep + existing if existing else "")
    return environment


def run_and_kill(
    config: dict[str, Any], delay: float, stderr_path: Path, started: str = "READY"
) -> Report:
    """Start the child, SIGKILL it ``delay`` s after it reports ``started``, return its report.

    ``READY``: the queue is open; ``OPENING``: the queue is about to be created.
    """
    marker = started + "\n"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(CHILD), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_child_environment(),
        )
    lines: list[str] = []
    ready = threading.Event()

    def read_stdout() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            if not raw.endswith(b"\n"):
                break  # never happens: every line is one write
            line = raw.decode()
            lines.append(line)
            if line == marker:
                ready.set()
        ready.set()  # end of output: the child died

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        ready.wait(HANG_GUARD)
        alive = process.poll() is None and marker in lines
        if alive:
            time.sleep(delay)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        reader.join()
        assert process.stdout is not None
        process.stdout.close()
    problem = stderr_path.read_text(errors="replace")
    assert alive, f"the child never said {started} (exit {process.returncode}):\n{problem}"
    assert process.returncode == -signal.SIGKILL, (
        f"the child died before the kill (exit {process.returncode}):\n{problem}"
    )
    return parse_report(lines)


# ---------------------------------------------------------------- checks


def check_contents(items: list[bytes], item_size: int, context: str) -> list[int]:
    numbers = [item_number(item) for item in items]
    for number, item in zip(numbers, items, strict=True):
        assert item == make_item(number, item_size), f"{context}: item {number} is damaged"
    return numbers


def check_appended(stored: list[int], base: int, report: Report, context: str) -> int:
    """``stored`` (what this round appended) must be whole appends base..N-1, in order.

    Appends are submitted in number order and committed in order, so what
    survives is a prefix of them: every completed append, then possibly some
    of those in flight, each entirely. Returns N.
    """
    expected = list(range(base, base + len(stored)))
    if stored != expected:
        counts = Counter(stored)
        duplicates = sorted(number for number, count in counts.items() if count > 1)
        wrong = next(i for i, (a, b) in enumerate(zip(stored, expected, strict=True)) if a != b)
        raise AssertionError(
            f"{context}: stored items are not {base}.. in order: position {wrong} holds "
            f"{stored[wrong]}, expected {expected[wrong]}; duplicates {duplicates[:10]}"
        )
    end = base + len(stored)
    boundaries = {base} | {first + count for first, count in report.appends.items()}
    assert end in boundaries, (
        f"{context}: stored items end at {end}, inside an append: half of a multi-item "
        f"append was applied (appends {sorted(report.appends.items())[-5:]})\n{report.tail()}"
    )
    lost = sorted(
        (first, report.appends[first])
        for first in report.completed
        if first + report.appends[first] > end
    )
    assert not lost, (
        f"{context}: appends reported complete are missing (stored up to {end}): {lost[:5]}\n"
        f"{report.tail()}"
    )
    return end


def check_reads(remaining: list[int], stream: list[int], report: Report, context: str) -> None:
    """A reader drew from the front of ``stream``; ``remaining`` is what is left for it.

    No item a read returned may be left (or be returned twice), and nothing a
    read did not return may be gone, except items of reads in flight at the kill.
    """
    taken = len(stream) - len(remaining)
    assert taken >= 0 and stream[taken:] == remaining, (
        f"{context}: what is left ({len(remaining)} items, first {remaining[:5]}) is not the end "
        f"of the stream read from (first {stream[:5]}, {len(stream)} items)"
    )
    delivered = report.delivered
    duplicates = sorted(number for number, count in Counter(delivered).items() if count > 1)
    assert not duplicates, f"{context}: items returned by two reads: {duplicates[:10]}"
    left = set(remaining)
    reappeared = [number for number in delivered if number in left]
    assert not reappeared, f"{context}: items returned by a read are back: {reappeared[:10]}"
    taken_set = set(stream[:taken])
    unknown = [number for number in delivered if number not in taken_set]
    assert not unknown, f"{context}: reads returned items not in the stream: {unknown[:10]}"
    in_flight = sum(report.reads_in_flight.values())
    assert taken - len(delivered) <= in_flight, (
        f"{context}: {taken - len(delivered)} items gone without being returned to a reader, "
        f"but reads in flight at the kill asked for only {in_flight}\n{report.tail()}"
    )


def check_fifo_drained(
    queue: PersistentQueueWithCapacity, item_size: int, context: str
) -> list[int]:
    """Pop everything; check len and payload_size against what was actually stored."""
    length, payload = queue.len, queue.payload_size
    items: list[bytes] = []
    while batch := queue.pop(ALL):
        items.extend(batch)
    assert length == len(items), f"{context}: len was {length} but {len(items)} items stored"
    stored_bytes = sum(map(len, items))
    assert payload == stored_bytes, (
        f"{context}: payload_size was {payload} but the stored items hold {stored_bytes} bytes"
    )
    assert (queue.len, queue.payload_size, queue.is_empty) == (0, 0, True), context
    return check_contents(items, item_size, context)


# ---------------------------------------------------------------- scenarios


def _seed() -> int:
    return int(os.environ.get("CRASH_SEED", random.randrange(2**32)))


FACES = [("blocking", "asyncio"), ("async", "asyncio"), ("async", "trio")]


def _config(path: str, mode: str, face: tuple[str, str], base: int, seed: int) -> dict[str, Any]:
    return {
        "mode": mode,
        "face": face[0],
        "backend": face[1],
        "path": path,
        "base": base,
        "seed": seed,
        "max_batch": 5,
        "fixed_batch": False,
        "item_size": 8,
        "batch_bytes": None,
        "writers": 8,
        "readers": 4,
    }


def start_rounds(tmp_path: Path) -> tuple[int, random.Random, str]:
    """A scenario's seed, the random choices it drives, and the queue's path."""
    seed = _seed()
    return seed, random.Random(seed), str(tmp_path / "queue")


def kill_rounds(
    kills: int, faces: list[tuple[str, str]], seed: int
) -> Iterator[tuple[tuple[str, str], str]]:
    """Each of ``kills`` rounds: its face (the faces in turn) and the context its checks report."""
    for kill in range(kills):
        face = faces[kill % len(faces)]
        yield face, f"seed {seed}, kill {kill}, {face[0]}/{face[1]}"


def kill_child(config: dict[str, Any], rng: random.Random, tmp_path: Path) -> Report:
    """Run the child of ``config`` and kill it after a random delay (see run_and_kill)."""
    return run_and_kill(config, rng.uniform(0, MAX_KILL_DELAY), tmp_path / "stderr")


def run_push_rounds(
    tmp_path: Path,
    kills: int,
    faces: list[tuple[str, str]],
    *,
    item_size: int = 8,
    max_batch: int = 5,
    fixed_batch: bool = False,
    batch_bytes: int | None = None,
) -> None:
    """Pushing child killed ``kills`` times; after each kill every completed push is there."""
    seed, rng, path = start_rounds(tmp_path)
    options: dict[str, Any] = {"batch_bytes": batch_bytes} if batch_bytes else {}
    base = completed = 0
    for face, context in kill_rounds(kills, faces, seed):
        config = _config(path, "push", face, base, rng.randrange(2**32))
        config.update(
            item_size=item_size,
            max_batch=max_batch,
            fixed_batch=fixed_batch,
            batch_bytes=batch_bytes,
        )
        report = kill_child(config, rng, tmp_path)
        with PersistentQueueWithCapacity(path, **options) as queue:  # must open after a kill
            stored = check_fifo_drained(queue, item_size, context)
        end = check_appended(stored, base, report, context)
        base = max(end, report.appended_end or base)
        completed += len(report.completed)
    assert completed, f"seed {seed}: no push ever completed before a kill: nothing was tested"


def run_pop_rounds(tmp_path: Path, kills: int) -> None:
    """Popping child killed ``kills`` times: no popped item comes back, none other is lost."""
    seed, rng, path = start_rounds(tmp_path)
    base = popped = 0
    for face, context in kill_rounds(kills, FACES, seed):
        prefill = list(range(base, base + PREFILL))
        with PersistentQueueWithCapacity(path) as queue:
            queue.push([make_item(number, 8) for number in prefill])
        config = _config(path, "pop", face, base, rng.randrange(2**32))
        report = kill_child(config, rng, tmp_path)
        with PersistentQueueWithCapacity(path) as queue:
            remaining = check_fifo_drained(queue, 8, context)
        check_reads(remaining, prefill, report, context)
        if face[0] == "blocking":  # one reader: it got exactly the front of the queue
            assert report.delivered == prefill[: len(report.delivered)], context
        base += PREFILL
        popped += len(report.delivered)
    assert popped, f"seed {seed}: no pop ever returned an item before a kill: nothing was tested"


def run_mpmc_rounds(tmp_path: Path, kills: int) -> None:
    """Child adding and reading label "reader", killed: positions never re-deliver."""
    seed, rng, path = start_rounds(tmp_path)
    base = total = delivered = 0
    for face, context in kill_rounds(kills, FACES, seed):
        config = _config(path, "mpmc", face, base, rng.randrange(2**32))
        report = kill_child(config, rng, tmp_path)
        with MpmcQueue(path, 0) as queue:
            # "audit" read everything up to the previous round: it gets this round's adds.
            added, _expired = queue.next("audit", StartPosition.Oldest, ALL)
            stream = check_contents(added, 8, context)
            end = check_appended(stream, base, report, context)
            total += len(stream)
            assert queue.len == total, f"{context}: len {queue.len}, {total} elements added"
            left, expired = queue.next("reader", StartPosition.Oldest, ALL)
            assert not expired, context
            check_reads(check_contents(left, 8, context), stream, report, context)
            if face[0] == "blocking":
                assert report.delivered == stream[: len(report.delivered)], context
            assert queue.labels == ["audit", "reader"], context
        base = max(end, report.appended_end or base)
        delivered += len(report.delivered)
    assert total and delivered, f"seed {seed}: nothing was added and read before a kill"


CREATE_WINDOW = 0.04
"""Creating a queue takes 10-35 ms here: the kill lands at a random point of it, or just after."""


def run_create_rounds(tmp_path: Path, kills: int) -> None:
    """A process killed while creating a queue must not leave a directory that cannot be opened.

    Nothing was queued yet, so nothing can be lost; but the application's next
    start must be able to open (and use) its queue.
    """
    seed = _seed()
    rng = random.Random(seed)
    refused: list[str] = []
    for kill in range(kills):
        kind = ("fifo", "mpmc")[kill % 2]
        path = str(tmp_path / f"queue{kill}")
        config = {"mode": "create", "kind": kind, "path": path}
        delay = rng.uniform(0, CREATE_WINDOW)
        run_and_kill(config, delay, tmp_path / "stderr", started="OPENING")
        try:
            if kind == "fifo":
                with PersistentQueueWithCapacity(path) as queue:
                    assert (queue.len, queue.payload_size) == (0, 0)
                    queue.push([b"a", b"bc"])
                    assert queue.pop(5) == [b"a", b"bc"]
            else:
                with MpmcQueue(path, 0) as mpmc:
                    assert (mpmc.len, mpmc.labels) == (0, [])
                    mpmc.add([b"a", b"bc"])
                    assert mpmc.next("label", StartPosition.Oldest, 5) == ([b"a", b"bc"], False)
        except rocksq_aio.QueueError as error:
            files = sorted(os.listdir(path))
            refused.append(f"{kind} killed after {delay * 1000:.1f} ms: {error!r}; files {files}")
    assert not refused, (
        f"seed {seed}: {len(refused)} of {kills} queues killed while being created cannot "
        "be opened again:\n" + "\n".join(refused)
    )


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("face", ["blocking", "async"])
def test_killed_pusher_keeps_every_completed_push_whole(tmp_path: Path, face: str) -> None:
    faces = FACES[:1] if face == "blocking" else FACES[1:]
    run_push_rounds(tmp_path, NORMAL_KILLS, faces)


def test_killed_popper_neither_loses_nor_redelivers(tmp_path: Path) -> None:
    run_pop_rounds(tmp_path, NORMAL_KILLS)


def test_killed_mpmc_reader_position_never_redelivers(tmp_path: Path) -> None:
    run_mpmc_rounds(tmp_path, NORMAL_KILLS)


def test_killed_big_push_over_the_batch_byte_cap_is_all_or_nothing(tmp_path: Path) -> None:
    run_push_rounds(
        tmp_path,
        NORMAL_KILLS,
        FACES,
        item_size=BIG_ITEM,
        max_batch=BIG_BATCH,
        fixed_batch=True,
        batch_bytes=BIG_BATCH_BYTES,
    )


@pytest.mark.stress
@pytest.mark.parametrize("face", ["blocking", "async"])
def test_stress_killed_pusher(tmp_path: Path, face: str) -> None:
    faces = FACES[:1] if face == "blocking" else FACES[1:]
    run_push_rounds(tmp_path, STRESS_KILLS, faces)


@pytest.mark.stress
def test_stress_killed_popper(tmp_path: Path) -> None:
    run_pop_rounds(tmp_path, STRESS_KILLS)


@pytest.mark.stress
def test_stress_killed_mpmc_reader(tmp_path: Path) -> None:
    run_mpmc_rounds(tmp_path, STRESS_KILLS)


@pytest.mark.stress
def test_stress_killed_big_push(tmp_path: Path) -> None:
    run_push_rounds(
        tmp_path,
        STRESS_KILLS,
        FACES,
        item_size=BIG_ITEM,
        max_batch=BIG_BATCH,
        fixed_batch=True,
        batch_bytes=BIG_BATCH_BYTES,
    )


def test_killed_while_creating_the_queue_it_opens_again(tmp_path: Path) -> None:
    run_create_rounds(tmp_path, NORMAL_KILLS)


@pytest.mark.stress
def test_stress_killed_while_creating_the_queue(tmp_path: Path) -> None:
    run_create_rounds(tmp_path, STRESS_KILLS)
