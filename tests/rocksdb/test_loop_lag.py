"""The event loop keeps running over a queue's whole life: open, 64 MiB in and out, close.

Everything that touches RocksDB runs in the queue's worker thread, but a
thread hop alone does not free the loop: rocksdict holds the GIL in some
calls (opening, and with it the replay of a crashed process's write-ahead
log; dropping a column family's handle, which flushes its memory table), and
while it does no Python thread runs. A ticker task sleeps 1 ms over and over
and records how much later than asked it wakes up, from before the
constructor to after the close; the issue bounds that lag at p99 < 50 ms and
max < 100 ms, on asyncio, uvloop and trio.

The only timing assertion of the suite, on a noisy shared machine: the lag is
the overshoot of 1 ms sleeps net of the loop thread's wait for a CPU
(``RunQueueClock``), the bounds are 3-5 times what this code shows on a quiet
machine, and a life that misses them is measured again (three attempts)
before the test fails. Run against the code before this test (open on the
loop's thread, handles dropped holding the GIL, the log replayed in process,
removed keys scanned at open) it fails: an open replaying a 60 MiB log
140-700 ms, a reopen after 64 MiB went through 50-200 ms, a close with 64 MiB
queued 30-350 ms (the disk decides), an open 15-40 ms.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from rocksq_aio import PersistentQueue, QueueCorruptedError
from rocksq_aio.blocking import PersistentQueueWithCapacity
from rocksq_aio.rocksdb import directory
from rocksq_aio.rocksdb.format import FIFO_COLUMN_FAMILIES

MIB = 1024 * 1024
ITEMS = 64
ITEMS_PER_PUSH = 8
PUSHERS = 4
TICK = 0.001
MAX_P99_LAG = 0.050
MAX_LAG = 0.100
ATTEMPTS = 3
"""Measurements of a scenario before it fails; the old code fails every one."""
CRASH_MIB = 60
"""What the crashed child pushes: just under the 64 MiB memory table, so the
whole of it is still in the write-ahead log, the largest log our options leave."""


class RunQueueClock:
    """Time the calling thread spent runnable but waiting for a CPU (Linux; else always 0).

    On a machine shared with other busy processes a thread can wait for a CPU
    for 100 ms and more: that is the machine, not a stall this library causes.
    A thread waiting for the GIL is asleep, not runnable, so this clock does not
    count it and the lag measured net of it is what the queue's threads cause.
    """

    def __init__(self) -> None:
        try:
            self._descriptor: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._descriptor = None

    def __call__(self) -> float:
        if self._descriptor is None:
            return 0.0
        # Fields: time on a CPU, time waiting on a run queue (ns), time slices.
        return int(os.pread(self._descriptor, 128, 0).split()[1]) / 1e9

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)


class Ticker:
    """Sleeps ``TICK`` over and over, recording how much later than asked it woke, by phase.

    The lag of a tick is its overshoot net of the time the loop's thread
    waited for a CPU meanwhile (``RunQueueClock``); ``raw`` keeps the overshoot.
    """

    def __init__(self) -> None:
        self.phase = "start"
        self.lags: list[tuple[str, float]] = []
        self.raw: list[float] = []
        self.stopped = False

    async def run(self) -> None:
        waited = RunQueueClock()  # opened in the loop's thread, which it measures
        try:
            while not self.stopped:
                phase = self.phase
                started = time.perf_counter()
                waited_before = waited()
                await anyio.sleep(TICK)
                overshoot = time.perf_counter() - started - TICK
                self.raw.append(overshoot)
                if phase != self.phase:
                    phase += "-" + self.phase  # a stall the tick spans, e.g. "open-push"
                self.lags.append((phase, max(0.0, overshoot - (waited() - waited_before))))
        finally:
            waited.close()

    def percentile(self, fraction: float) -> float:
        ordered = sorted(lag for _phase, lag in self.lags)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]

    def worst(self) -> float:
        return max(lag for _phase, lag in self.lags)

    def report(self) -> str:
        worst: dict[str, float] = {}
        for phase, lag in self.lags:
            worst[phase] = max(worst.get(phase, 0.0), lag)
        phases = ", ".join(f"{phase} {lag * 1000:.1f}" for phase, lag in worst.items())
        return (
            f"p99 {self.percentile(0.99) * 1000:.1f} ms, max {self.worst() * 1000:.1f} ms "
            f"over {len(self.lags)} ticks; worst by phase (ms): {phases}; "
            f"max before discounting the wait for a CPU {max(self.raw) * 1000:.1f} ms"
        )

    def within_bounds(self) -> bool:
        return self.percentile(0.99) < MAX_P99_LAG and self.worst() < MAX_LAG


ITEMS_PUSHED = [bytes([number]) * MIB for number in range(ITEMS)]
"""Distinct 1 MiB items, made once: making them on the loop would be a stall of the test's own."""


async def life(path: str, ticker: Ticker, *, push: bool = True, pop: bool = True) -> list[bytes]:
    """Open; push 64 MiB of 1 MiB items (4 concurrent pushers); pop everything; close.

    Returns what was popped, checked once the measurement is over.
    """
    batches = [
        ITEMS_PUSHED[start : start + ITEMS_PER_PUSH] for start in range(0, ITEMS, ITEMS_PER_PUSH)
    ]
    ticker.phase = "open"
    popped: list[bytes] = []
    async with PersistentQueue(path) as queue:

        async def pusher(first: int) -> None:
            for batch in batches[first::PUSHERS]:
                await queue.push(batch)

        if push:
            ticker.phase = "push"
            async with anyio.create_task_group() as pushers:
                for first in range(PUSHERS):
                    pushers.start_soon(pusher, first)
        if pop:
            ticker.phase = "pop"
            while got := await queue.pop(ITEMS_PER_PUSH):
                popped.extend(got)
        ticker.phase = "close"
    ticker.phase = "closed"
    return popped


Life = Callable[[str, Ticker], Awaitable[list[bytes]]]

WHOLE_LIFE: list[Life] = [life]
"""Open a new queue, 64 MiB in and out, close: the issue's life."""

CLOSED_FULL_THEN_REOPENED: list[Life] = [
    functools.partial(life, pop=False),
    functools.partial(life, push=False),
]
"""Close with 64 MiB queued (a full memory table to flush), then reopen and empty it."""


RESTARTED: list[Life] = [life] * 4
"""Four lives on one path: each open after the first finds 64 MiB removed before it
(whose values a scan from the first key would read, holding the GIL)."""


def check_pushed_items(popped: list[bytes]) -> None:
    """Every pushed item came out, and each push stayed in one piece."""
    assert sorted(popped) == sorted(ITEMS_PUSHED)
    positions = {item[0]: index for index, item in enumerate(popped)}
    for start in range(0, ITEMS, ITEMS_PER_PUSH):
        where = [positions[item[0]] for item in ITEMS_PUSHED[start : start + ITEMS_PER_PUSH]]
        assert where == list(range(where[0], where[0] + ITEMS_PER_PUSH))


async def measure(path: str, lives: list[Life]) -> tuple[Ticker, list[bytes]]:
    ticker = Ticker()
    popped: list[bytes] = []
    async with anyio.create_task_group() as group:
        group.start_soon(ticker.run)
        await anyio.sleep(0.01)  # the ticker is running before the constructor
        for one_life in lives:
            popped += await one_life(path, ticker)
        await anyio.sleep(0.01)  # a stall that ends with the close is recorded too
        ticker.stopped = True
    return ticker, popped


async def measure_responsive(setup: Callable[[], str], lives: list[Life], what: str) -> list[bytes]:
    """The items popped over ``lives`` on the path ``setup()`` prepares, with the lag in bounds.

    Lives that miss the bounds are measured again, on a new path, up to
    ``ATTEMPTS`` times: a disk busy with other processes' writes stretches
    the fsyncs RocksDB makes holding the GIL, now and then past the bounds.
    """
    for attempt in range(1, ATTEMPTS + 1):
        ticker, popped = await measure(setup(), lives)
        print(f"\nevent loop lag over {what} (attempt {attempt}): {ticker.report()}")
        assert len(ticker.lags) >= 20
        if ticker.within_bounds():
            return popped
    pytest.fail(f"the event loop stalled over {what}: {ticker.report()}")


def new_path(directory: Path) -> Callable[[], str]:
    attempts = iter(range(ATTEMPTS))
    return lambda: os.path.join(str(directory), f"queue-{next(attempts)}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("lives", "what"),
    [
        pytest.param(WHOLE_LIFE, "open, 64 MiB in and out, close", id="whole-life"),
        pytest.param(
            CLOSED_FULL_THEN_REOPENED,
            "open, 64 MiB in, close; reopen, 64 MiB out, close",
            id="closed-full-then-reopened",
        ),
        pytest.param(RESTARTED, "four lives on one path, each 64 MiB in and out", id="restarted"),
    ],
)
async def test_a_queues_life_keeps_the_event_loop_responsive(
    tmp_path: Path, lives: list[Life], what: str
) -> None:
    popped = await measure_responsive(new_path(tmp_path), lives, what)
    assert popped and len(popped) % ITEMS == 0  # each life's pushes, all popped
    for first in range(0, len(popped), ITEMS):
        check_pushed_items(popped[first : first + ITEMS])


_CRASHING_CHILD = textwrap.dedent(
    """
    import os, sys
    from rocksq_aio.blocking import PersistentQueueWithCapacity

    queue = PersistentQueueWithCapacity(sys.argv[1])
    for number in range(int(sys.argv[2])):
        queue.push([bytes([number % 256]) * (1024 * 1024)])
    os._exit(0)  # no close: the pushes are in the write-ahead log only
    """
)


def log_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(path, name))
        for name in os.listdir(path)
        if name.endswith(".log")
    )


@pytest.mark.anyio
async def test_an_open_replaying_a_crashed_log_keeps_the_event_loop_responsive(
    tmp_path: Path,
) -> None:
    fresh = new_path(tmp_path)

    def crashed_queue() -> str:
        path = fresh()
        crash_leaving_a_log(path)  # the point of the test: the open has a large log to replay
        return path

    what = f"an open replaying a {CRASH_MIB} MiB log, 64 MiB in and out, close"
    popped = await measure_responsive(crashed_queue, WHOLE_LIFE, what)
    # The child's pushes survived its death, first and in order; then ours.
    assert popped[:CRASH_MIB] == [bytes([number]) * MIB for number in range(CRASH_MIB)]
    check_pushed_items(popped[CRASH_MIB:])


# ---------------------------------------------------------------- the replay in a child process


def crash_leaving_a_log(path: str, mib: int = CRASH_MIB) -> None:
    subprocess.run([sys.executable, "-c", _CRASHING_CHILD, path, str(mib)], check=True, timeout=120)
    assert log_bytes(path) >= mib * MIB


def assert_holds_the_crashed_items(path: str, mib: int = CRASH_MIB) -> None:
    with PersistentQueueWithCapacity(path) as queue:
        assert queue.pop(mib + 1) == [bytes([number]) * MIB for number in range(mib)]


def test_a_child_replays_a_large_log_and_the_open_finds_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "queue")
    crash_leaving_a_log(path)
    assert directory.replay_log_in_child(path, FIFO_COLUMN_FAMILIES, 0o700)
    assert log_bytes(path) <= directory.REPLAY_IN_CHILD_BYTES
    assert_holds_the_crashed_items(path)


def test_a_small_log_is_replayed_in_process(tmp_path: Path) -> None:
    path = str(tmp_path / "queue")
    with PersistentQueueWithCapacity(path) as queue:
        queue.push([b"closed cleanly"])
    assert log_bytes(path) == 0  # a clean close leaves no log to replay
    assert not directory.replay_log_in_child(path, FIFO_COLUMN_FAMILIES, 0o700)


def test_without_a_child_the_open_replays_the_log_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "queue")
    crash_leaving_a_log(path)
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # no interpreter to start
    assert not directory.replay_log_in_child(path, FIFO_COLUMN_FAMILIES, 0o700)
    assert_holds_the_crashed_items(path)


def test_a_corrupted_log_the_child_refuses_is_reported_by_the_open(tmp_path: Path) -> None:
    path = str(tmp_path / "queue")
    crash_leaving_a_log(path)
    (log,) = [name for name in os.listdir(path) if name.endswith(".log")]
    with open(os.path.join(path, log), "r+b") as file:
        file.seek(log_bytes(path) // 2)  # inside a record, far from the torn tail
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))
    assert not directory.replay_log_in_child(path, FIFO_COLUMN_FAMILIES, 0o700)
    with pytest.raises(QueueCorruptedError):
        PersistentQueueWithCapacity(path)
