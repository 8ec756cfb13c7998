"""Power loss: with ``sync=True`` an operation that returned survives losing everything unsynced.

The harness (tests/support/power_loss.py, whose docstring describes the model)
runs a child with an ``LD_PRELOAD`` shim that records every durability point,
kills it in the middle of its work, and turns the queue directory into what a
machine that lost power at that instant could find after a reboot.

Then the queue is reopened without the shim, with RocksDB's default WAL
recovery mode (point in time, which the library does not change), and checked:
with ``sync=True`` every push that returned is there, whole and in order, the
push in flight at the kill is all there or absent, and a pop that returned
never comes back. The same harness with ``sync=False`` must find losses
(``test_harness_detects_lost_pushes_with_sync_false`` and
``..._reappearing_pops_...``), which shows that it can fail.

``test_crash_while_creating_a_queue_leaves_it_usable`` kills a child at each
file sync of a queue's creation and checks that the directory, as the kill left
it and after a power loss, opens as a working queue.

The normal run does a few kill rounds per scenario; the ``stress`` variants
(``make stress``) many more. ``POWERLOSS_SEED`` replays the random choices.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rocksq_aio import QueueError
from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.power_loss import (
    SEED,
    SHIM_SOURCE,
    Scenario,
    append_rounds,
    child_environment,
    drain_fifo,
    fresh,
    lose_power,
    numbers_of,
    read_log,
    read_mpmc,
    read_rounds,
    record_baseline,
    run_child,
    surviving_appends,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux (/proc/self/fd, LD_PRELOAD)"
)


# ---------------------------------------------------------------- the shim


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the shim and check that LD_PRELOAD really interposes fsync here."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (gcc/cc) on PATH: cannot build the fsync-recording shim")
    build = tmp_path_factory.mktemp("shim")
    library = build / "fsync_shim.so"
    compiled = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if compiled.returncode != 0:
        pytest.skip(f"could not build the fsync shim with {compiler}: {compiled.stderr[-2000:]}")
    probe_dir = build / "probe"
    probe_dir.mkdir()
    log = build / "probe.log"
    probe = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)\n"
        "os.write(fd, b'12345'); os.fsync(fd); os.close(fd)\n"
    )
    subprocess.run(
        [sys.executable, "-c", probe, str(probe_dir / "file")],
        env=child_environment(library, probe_dir, log),
        check=True,
        timeout=60,
    )
    if not log.exists() or " 5 " not in log.read_text():
        pytest.skip("LD_PRELOAD does not interpose fsync in this environment")
    return library


# ---------------------------------------------------------------- sync=True: nothing lost

APPENDS = [
    pytest.param(Scenario("push"), id="fifo-push"),
    pytest.param(Scenario("add"), id="mpmc-add"),
]


@pytest.mark.parametrize("scenario", APPENDS)
def test_synced_appends_survive_power_loss(shim: Path, tmp_path: Path, scenario: Scenario) -> None:
    results = append_rounds(shim, tmp_path, scenario, rounds=2, sync=True, seed=SEED)
    assert all(completed > 0 for _end, completed, _cuts in results)
    # Round 0 died inside the sync of a push: its WAL record was written, not synced, and cut.
    assert any(".log from" in cut for cut in results[0][2]), results[0][2]


def test_synced_big_pushes_across_a_memtable_flush_survive_power_loss(
    shim: Path, tmp_path: Path
) -> None:
    """Pushes staged over the batch byte cap, enough of them to switch WAL and flush an SST."""
    scenario = Scenario(
        "push",
        item_size=64 * 1024,
        max_batch=4,
        batch_bytes=64 * 1024,
        kill_at_sync=(1300, 1400),
    )
    append_rounds(shim, tmp_path, scenario, rounds=1, sync=True, seed=SEED)
    durable = read_log(tmp_path / "push-True.log")
    assert any(name.endswith(".sst") for name in durable.synced_names), (
        "the scenario never flushed a memtable; push more data"
    )
    assert len({name for name in durable.synced_names if name.endswith(".log")}) >= 2


READS = [
    pytest.param(Scenario("pop"), id="fifo-pop"),
    pytest.param(Scenario("next"), id="mpmc-next"),
]


@pytest.mark.parametrize("scenario", READS)
def test_synced_reads_never_come_back_after_power_loss(
    shim: Path, tmp_path: Path, scenario: Scenario
) -> None:
    results = read_rounds(shim, tmp_path, scenario, rounds=2, sync=True, seed=SEED)
    assert all(done > 0 for _start, done in results)


# ---------------------------------------------------------------- the harness can fail


def test_harness_detects_lost_pushes_with_sync_false(shim: Path, tmp_path: Path) -> None:
    """Without fsync the same pushes are lost under the model: the harness is not blind."""
    results = append_rounds(shim, tmp_path, Scenario("push"), rounds=1, sync=False, seed=SEED)
    [(end, completed_end, cuts)] = results
    assert end < completed_end, f"sync=False lost nothing; the harness cannot see loss ({cuts})"
    assert any("000" in cut and ".log" in cut for cut in cuts), cuts


def test_harness_detects_reappearing_pops_with_sync_false(shim: Path, tmp_path: Path) -> None:
    results = read_rounds(shim, tmp_path, Scenario("pop"), rounds=1, sync=False, seed=SEED)
    [(start, done)] = results
    assert start < done, "sync=False pops did not come back; the harness cannot see it"


# ---------------------------------------------------------------- the directory itself


def test_new_queue_directory_entry_survives_power_loss(shim: Path, tmp_path: Path) -> None:
    """A queue created with sync=True: its directory entry must be synced before a push returns.

    fsync(2): "Calling fsync() does not necessarily ensure that the entry in the
    directory containing the file has also reached disk. For that an explicit
    fsync() on a file descriptor for the directory is also needed."
    """
    directory, log = fresh(tmp_path, "new")
    record_baseline(directory, log)  # the parent as it was: without the queue
    report = run_child(
        shim,
        directory,
        log,
        {
            "mode": "push",
            "sync": True,
            "item_size": 16,
            "max_batch": 1,
            "batch_bytes": 1024 * 1024,
            "base": 0,
        },
        stop_after_items=3,
    )
    cuts = lose_power(directory, log, parent_entry=True)
    found = numbers_of(drain_fifo(directory), 16)
    end, completed_end = surviving_appends(found, 0, report, f"(cut: {cuts})")
    assert end >= completed_end, (
        f"{completed_end - end} pushes that returned were lost with their directory: {cuts}"
    )


CREATION_KILLS = [
    *(pytest.param("push", n, id=f"fifo-sync{n}") for n in range(1, 12)),
    *(pytest.param("add", n, id=f"mpmc-sync{n}") for n in range(1, 16)),
]
"""Every file sync of a queue's creation (RocksDB's IDENTITY, MANIFEST, CURRENT, one
MANIFEST edit per column family, OPTIONS, the counters) and of its first append."""


@pytest.mark.parametrize(("mode", "kill_at"), CREATION_KILLS)
def test_crash_while_creating_a_queue_leaves_it_usable(
    shim: Path, tmp_path: Path, mode: str, kill_at: int
) -> None:
    """A process killed while creating a queue (and a power loss then) must not brick it.

    Nothing was ever queued, so the next open must give a working queue; it
    must not refuse the directory for holding RocksDB's half-made database.
    """
    directory, log = fresh(tmp_path, "new")
    record_baseline(directory, log)
    report = run_child(
        shim,
        directory,
        log,
        {
            "mode": mode,
            "sync": True,
            "item_size": 16,
            "max_batch": 1,
            "batch_bytes": 1024 * 1024,
            "base": 0,
        },
        kill_at_sync=kill_at,
    )
    killed_only = tmp_path / "killed-only"
    if directory.exists():
        shutil.copytree(directory, killed_only)
    cuts = lose_power(directory, log)
    for path, moment in ((killed_only, "after the kill"), (directory, "after the power loss")):
        listing = sorted(os.listdir(path)) if path.exists() else "absent"
        context = f"{moment}, directory {listing}, cut {cuts}"
        try:
            if mode == "push":
                found = numbers_of(drain_fifo(path), 16)
            else:
                found = numbers_of(read_mpmc(path, "audit"), 16)
        except QueueError as error:
            pytest.fail(
                f"a queue killed at file sync {kill_at} of its creation is bricked "
                f"{context}: {error}"
            )
        end, completed_end = surviving_appends(found, 0, report, context)
        assert end >= completed_end, context
        if mode == "push":
            with PersistentQueueWithCapacity(str(path)) as queue:
                queue.push([b"works"])
                assert queue.pop() == [b"works"]


# ---------------------------------------------------------------- stress


@pytest.mark.stress
@pytest.mark.parametrize("scenario", APPENDS)
def test_stress_synced_appends(shim: Path, tmp_path: Path, scenario: Scenario) -> None:
    for offset in range(3):
        directory = tmp_path / str(offset)
        directory.mkdir()
        append_rounds(shim, directory, scenario, rounds=20, sync=True, seed=SEED + offset)


@pytest.mark.stress
@pytest.mark.parametrize("scenario", READS)
def test_stress_synced_reads(shim: Path, tmp_path: Path, scenario: Scenario) -> None:
    read_rounds(shim, tmp_path, scenario, rounds=20, sync=True, seed=SEED, prefill=6000)


@pytest.mark.stress
def test_stress_synced_big_pushes(shim: Path, tmp_path: Path) -> None:
    scenario = Scenario(
        "push", item_size=64 * 1024, max_batch=4, batch_bytes=64 * 1024, stop_after=(200, 3000)
    )
    append_rounds(shim, tmp_path, scenario, rounds=6, sync=True, seed=SEED)
