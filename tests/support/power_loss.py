"""The power-loss harness of tests/rocksdb/test_power_loss.py: the child's
environment, the model of what survives a power loss, running a child to its
kill point, and the kill-and-lose-power rounds with their checks.

How power loss is simulated
---------------------------
A child process (``tests/support/power_loss_child.py``) works on a queue with
an ``LD_PRELOAD`` shim (``tests/support/fsync_shim.c``, built with gcc at test
time) that records every durability point of the queue directory in a log:
each successful ``fsync``/``fdatasync`` of a file (its inode and its size just
before the call), each successful fsync of the directory (with the directory's
listing, name -> inode, taken right after the call), and every inode that was
unlinked or replaced by ``rename``. The child reports every operation that
returned and is killed with SIGKILL in the middle of its work: either by the
shim itself on its N-th file sync, just before the call (so the operation being
synced is written but not durable: the interesting instant), or by the parent
at a moment it picks. The parent then turns the directory into what a machine
that lost power at that instant could find after a reboot, in the most
pessimistic way the rules below allow:

* **File contents.** A file keeps exactly the bytes its inode had when it was
  last fsynced (tracked by inode, so the content synced under a temporary name
  such as ``000001.dbtmp`` follows it to ``CURRENT``); everything appended since
  is cut off. A file never synced keeps nothing (it is truncated to 0 bytes).
  RocksDB only ever appends to its files (no in-place rewrites, WAL recycling
  is off), so a prefix is the right shape for what survives. ``sync_file_range``
  is not a durability point (RocksDB does not even import it here).
* **Directory entries.** A name survives only if it was in the directory's
  listing at its last fsync (new files that RocksDB created but whose directory
  entry it never synced vanish, as after a real crash). Listings are kept by the
  directory's inode, so a directory built under a temporary name (any path that
  starts with the queue's path is watched) and renamed into place keeps them;
  a directory never synced at all loses everything in it. A name that was in that
  listing but now points to another inode was replaced by ``rename`` after the
  last directory fsync; the old inode is gone from our disk, so the name is
  kept with its new content (journalling file systems make ``rename`` atomic;
  both CURRENT files RocksDB writes point at synced MANIFESTs). Deletions are
  taken as durable: the model cannot resurrect content it never copied.
* **The queue directory's own entry** in its parent is assumed durable, except
  in ``test_new_queue_directory_entry_survives_power_loss``, which applies the
  same rule one level up (the parent's listing at its last fsync).
* What the directory held before the child started was made durable by the
  parent (``os.sync()``) and is recorded as the baseline of the log.
* Writes are durable only through ``fsync``/``fdatasync``: RocksDB opens no
  file with ``O_SYNC``/``O_DIRECT`` here and does not write through ``mmap``.
  Listings are taken right after a directory fsync returns, so a name created
  by another thread during that call counts as synced (the only optimistic
  corner of the model).
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.items import make_item

SUPPORT = Path(__file__).resolve().parent
SHIM_SOURCE = SUPPORT / "fsync_shim.c"
CHILD = SUPPORT / "power_loss_child.py"
ALL = 2**30
HANG_GUARD = 120.0
"""Seconds a child may take to reach its kill point; only reached on a hang (a failure)."""
SEED = int(os.environ.get("POWERLOSS_SEED", random.randrange(2**32)))


def child_environment(library: Path, directory: Path, log: Path) -> dict[str, str]:
    environment = dict(os.environ)
    preload = environment.get("LD_PRELOAD")
    environment["LD_PRELOAD"] = f"{library} {preload}" if preload else str(library)
    environment["POWERLOSS_DIR"] = os.path.realpath(directory)
    environment["POWERLOSS_LOG"] = str(log)
    return environment


# ---------------------------------------------------------------- the power-loss model


@dataclass
class Durable:
    """What the log says is on stable storage."""

    synced: dict[int, int] = field(default_factory=dict)
    """inode -> bytes made durable by its last fsync."""
    listings: dict[int, dict[str, int]] = field(default_factory=dict)
    """directory inode -> its entries (name -> inode) at its last fsync (by inode, so
    that a directory built under another name and renamed into place keeps them)."""
    synced_names: set[str] = field(default_factory=set)
    """Basenames of every file that was fsynced, for sanity checks of a scenario."""


def read_log(log: Path) -> Durable:
    durable = Durable()
    lines = log.read_text(errors="replace").split("\n") if log.exists() else []
    listing: dict[str, int] | None = None
    directory = 0
    for line in lines:
        if listing is not None:
            if line == "E":
                durable.listings[directory] = listing
                listing = None
            elif line.startswith("N "):
                _, inode, name = line.split(" ", 2)
                listing[name] = int(inode)
            else:  # a listing cut short by the kill is not a durability point
                listing = None
            continue
        if line == "Z":  # a baseline: it replaces everything recorded before
            durable = Durable()
        elif line.startswith("F "):
            _, inode, size, path = line.split(" ", 3)
            durable.synced[int(inode)] = int(size)
            durable.synced_names.add(os.path.basename(path))
        elif line.startswith("D "):
            directory = int(line.split(" ", 2)[1])
            listing = {}
        elif line.startswith("X "):
            durable.synced.pop(int(line[2:]), None)
    return durable


def record_baseline(directory: Path, log: Path) -> None:
    """Declare the current content of ``directory`` (and its entry in the parent) durable."""
    os.sync()
    records: list[str] = ["Z"]
    for path in (directory.parent, directory):
        if not path.is_dir():
            continue
        records.append(f"D {path.stat().st_ino} {os.path.realpath(path)}")
        for entry in os.scandir(path):
            records.append(f"N {entry.inode()} {entry.name}")
        records.append("E")
    if directory.is_dir():
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                records.append(f"F {entry.inode()} {size} {os.path.realpath(entry.path)}")
    with open(log, "a") as handle:
        handle.write("".join(record + "\n" for record in records))


def lose_power(directory: Path, log: Path, *, parent_entry: bool = False) -> list[str]:
    """Reduce ``directory`` to what survives a power loss now; return what was cut."""
    if not directory.exists():  # e.g. still being built under another name
        return []
    durable = read_log(log)
    real = os.path.realpath(directory)
    actions: list[str] = []
    if parent_entry:
        parent = durable.listings.get(os.stat(os.path.dirname(real)).st_ino, {})
        if parent.get(os.path.basename(real)) != os.stat(real).st_ino:
            shutil.rmtree(directory)
            return [f"removed {real}: its entry in the parent directory was never synced"]
    # Never synced since it was created: nothing RocksDB created in it is durable.
    listing = durable.listings.get(os.stat(real).st_ino, {})
    for entry in list(os.scandir(directory)):
        inode = entry.inode()
        if entry.name not in listing:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            actions.append(f"removed {entry.name} (created after the last directory sync)")
            continue
        if entry.is_dir(follow_symlinks=False):
            continue
        keep = durable.synced.get(inode, 0)
        size = entry.stat(follow_symlinks=False).st_size
        if size > keep:
            os.truncate(entry.path, keep)
            actions.append(f"cut {entry.name} from {size} to {keep} bytes")
    return actions


# ---------------------------------------------------------------- running a child


@dataclass
class Report:
    appends_begun: list[tuple[int, int]] = field(default_factory=list)
    appends_done: list[tuple[int, int]] = field(default_factory=list)
    reads_begun: int = 0
    reads_done: list[list[int]] = field(default_factory=list)
    empty: bool = False
    bad: list[str] = field(default_factory=list)

    def parse(self, line: str) -> None:
        kind, *fields = line.split()
        if kind == "B":
            self.appends_begun.append((int(fields[0]), int(fields[1])))
        elif kind == "P":
            self.appends_done.append((int(fields[0]), int(fields[1])))
        elif kind == "b":
            self.reads_begun += 1
        elif kind == "p":
            self.reads_done.append([int(number) for number in fields])
        elif kind == "EMPTY":
            self.empty = True
        elif kind == "BAD":
            self.bad.append(line)

    @property
    def completed_items(self) -> int:
        return sum(count for _first, count in self.appends_done)

    @property
    def popped(self) -> list[int]:
        return [number for numbers in self.reads_done for number in numbers]


def run_child(
    shim: Path,
    directory: Path,
    log: Path,
    config: dict[str, Any],
    *,
    stop_after_items: int | None = None,
    kill_at_sync: int | None = None,
) -> Report:
    """Run the child until it is killed; return what it reported.

    With ``kill_at_sync`` the shim kills the child on its N-th file sync (before
    the call: the operation being synced is written but not durable). Otherwise
    the parent kills it once ``stop_after_items`` items were appended or read.
    """
    config = {"path": str(directory), "seed": 0, **config}
    environment = child_environment(shim, directory, log)
    if kill_at_sync is not None:
        environment["POWERLOSS_KILL_AT"] = str(kill_at_sync)
    stderr_path = log.with_suffix(".stderr")
    with open(stderr_path, "ab") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=environment,
        )
    assert child.stdout is not None
    report = Report()
    pending = b""
    deadline = time.monotonic() + HANG_GUARD
    appending = config["mode"] in ("push", "add")
    try:
        while True:
            done = report.completed_items if appending else len(report.popped)
            if report.empty or (stop_after_items is not None and done >= stop_after_items):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the child made no progress for {HANG_GUARD} s (seed {SEED})")
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break  # the child died
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                report.parse(line.decode())
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=60)
    for line in (pending + rest).split(b"\n"):
        if line:
            report.parse(line.decode())
    assert child.returncode == -signal.SIGKILL, (
        f"the child was not killed but exited with {child.returncode}: "
        f"{stderr_path.read_text()[-3000:]} (seed {SEED})"
    )
    assert not report.bad, f"the child read wrong data: {report.bad}"
    return report


# ---------------------------------------------------------------- checks


def drain_fifo(directory: Path) -> list[bytes]:
    with PersistentQueueWithCapacity(str(directory), sync=True) as queue:
        items = queue.pop(max_elements=ALL)
        assert queue.len == 0
        return items


def read_mpmc(directory: Path, label: str) -> list[bytes]:
    with MpmcQueue(str(directory), 0, sync=True) as stream:
        items, expired = stream.next(label, StartPosition.Oldest, ALL)
        assert not expired
        return items


def numbers_of(items: list[bytes], size: int) -> list[int]:
    numbers = [int(item[:8]) for item in items]
    for number, item in zip(numbers, items, strict=True):
        assert item == make_item(number, size), f"item {number} came back altered"
    return numbers


def surviving_appends(
    numbers: list[int], base: int, report: Report, context: str
) -> tuple[int, int]:
    """Check the appended numbers found after the loss; return (found end, completed end)."""
    end = base + len(numbers)
    assert numbers == list(range(base, end)), f"appends came back out of order {context}"
    boundaries = {base} | {first + count for first, count in report.appends_begun}
    assert end in boundaries, f"an append came back in part: {end} items {context}"
    completed_end = max((first + count for first, count in report.appends_done), default=base)
    return end, completed_end


@dataclass
class Scenario:
    mode: str
    item_size: int = 64
    max_batch: int = 3
    batch_bytes: int = 1024 * 1024
    stop_after: tuple[int, int] = (150, 300)
    """Range of the number of items after which the parent kills the child."""
    kill_at_sync: tuple[int, int] = (20, 200)
    """Range of N: the child dies on its N-th file sync (rounds that kill at a sync)."""


def _kill_point(
    scenario: Scenario, round_number: int, sync: bool, rng: random.Random
) -> dict[str, int]:
    """Even rounds of a synced child die inside a sync; the others at a moment the parent picks."""
    if sync and round_number % 2 == 0:
        return {"kill_at_sync": rng.randint(*scenario.kill_at_sync)}
    return {"stop_after_items": rng.randint(*scenario.stop_after)}


def fresh(tmp_path: Path, name: str) -> tuple[Path, Path]:
    directory = tmp_path / name
    log = tmp_path / f"{name}.log"
    return directory, log


def run_round(
    shim: Path,
    directory: Path,
    log: Path,
    scenario: Scenario,
    round_number: int,
    *,
    sync: bool,
    base: int,
    rng: random.Random,
) -> Report:
    """Record the baseline, then run the scenario's child (numbering from ``base``)
    until its kill point."""
    record_baseline(directory, log)
    config = {
        "mode": scenario.mode,
        "sync": sync,
        "item_size": scenario.item_size,
        "max_batch": scenario.max_batch,
        "batch_bytes": scenario.batch_bytes,
        "base": base,
        "seed": rng.randrange(2**32),
    }
    return run_child(shim, directory, log, config, **_kill_point(scenario, round_number, sync, rng))


def append_rounds(
    shim: Path, tmp_path: Path, scenario: Scenario, rounds: int, *, sync: bool, seed: int
) -> list[tuple[int, int, list[str]]]:
    """Kill-and-lose-power rounds of an appending child; returns (found, completed, cuts)."""
    rng = random.Random(seed)
    directory, log = fresh(tmp_path, f"{scenario.mode}-{sync}")
    base = 0
    results = []
    for round_number in range(rounds):
        report = run_round(
            shim, directory, log, scenario, round_number, sync=sync, base=base, rng=rng
        )
        cuts = lose_power(directory, log)
        context = f"(round {round_number}, seed {seed}, cut: {cuts})"
        if scenario.mode == "push":
            found = numbers_of(drain_fifo(directory), scenario.item_size)
            end, completed_end = surviving_appends(found, base, report, context)
        else:
            found = numbers_of(read_mpmc(directory, f"audit{round_number}"), scenario.item_size)
            end, completed_end = surviving_appends(found[base:], base, report, context)
            assert found[:base] == list(range(base)), f"older elements were lost {context}"
        results.append((end, completed_end, cuts))
        if sync:
            assert end >= completed_end, (
                f"{completed_end - end} items of pushes that returned were lost {context}"
            )
        base = end
    return results


def read_rounds(
    shim: Path,
    tmp_path: Path,
    scenario: Scenario,
    rounds: int,
    *,
    sync: bool,
    seed: int,
    prefill: int = 3000,
) -> list[tuple[int, int]]:
    """Kill-and-lose-power rounds of a reading child; returns (first remaining, completed)."""
    rng = random.Random(seed)
    directory, log = fresh(tmp_path, f"{scenario.mode}-{sync}")
    items = [make_item(number, scenario.item_size) for number in range(prefill)]
    if scenario.mode == "pop":
        with PersistentQueueWithCapacity(str(directory), sync=True) as queue:
            queue.push(items)
    else:
        with MpmcQueue(str(directory), 0, sync=True) as stream:
            stream.add(items)
    consumed = 0
    results = []
    for round_number in range(rounds):
        report = run_round(shim, directory, log, scenario, round_number, sync=sync, base=0, rng=rng)
        popped = report.popped
        context = f"(round {round_number}, seed {seed})"
        assert popped == list(range(consumed, consumed + len(popped))), f"bad reads {context}"
        done = consumed + len(popped)
        cuts = lose_power(directory, log)
        context = f"(round {round_number}, seed {seed}, cut: {cuts})"
        if scenario.mode == "pop":
            remaining = numbers_of(drain_fifo(directory), scenario.item_size)
            start = remaining[0] if remaining else prefill
            assert remaining == list(range(start, prefill)), f"items lost or reordered {context}"
            # Put them back for the next round (a drained queue has nothing to pop).
            with PersistentQueueWithCapacity(str(directory), sync=True) as queue:
                queue.push([make_item(number, scenario.item_size) for number in remaining])
        else:
            with MpmcQueue(str(directory), 0, sync=True) as stream:
                position = stream._engine.position("reader")
                all_items, _ = stream.next(f"audit{round_number}", StartPosition.Oldest, ALL)
            assert numbers_of(all_items, scenario.item_size) == list(range(prefill)), (
                f"elements were lost {context}"
            )
            start = position if position is not None else 0
        results.append((start, done))
        if sync:
            assert start >= done, f"{done - start} items of reads that returned came back {context}"
            in_flight = report.reads_begun > len(report.reads_done)
            assert start == done or (in_flight and start - done <= scenario.max_batch), (
                f"items that were never read are gone: {start - done} {context}"
            )
        consumed = start
        if consumed >= prefill:
            break
    return results
