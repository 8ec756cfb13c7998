"""The three faces are one queue: the same scenario gives the same transcript.

One list of operations (FIFO pushes and pops of various sizes, a capacity
overflow, bad arguments, MPMC add/next with several labels and both start
positions, remove_label, TTL expiry driven by a fake clock, close and reopen)
is run through the blocking face, the nonblocking face (``.get()`` on every
Response) and the async face (``await``). Each run records a transcript of
results, failing operations as the name of the exception's class. The three
transcripts must be identical, and equal to the expected one written by hand
below, so that all faces being wrong the same way still fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import rocksq_aio
from rocksq_aio import StartPosition, blocking, nonblocking

from support.clock import FakeClock

pytestmark = pytest.mark.contract

Oldest = StartPosition.Oldest
Newest = StartPosition.Newest

CAPACITY = 6
TTL = 10.0
START_TIME = 1_000_000.0

Step = tuple[Any, ...]
Entry = tuple[str, Any]


def error(name: str) -> tuple[str, str]:
    return ("error", name)


# Each step with the result it must give, written by hand.
SCENARIO: list[tuple[Step, Any]] = [
    # ---- FIFO: batches, pops of various sizes, capacity, bad arguments
    (("push", [b"a"]), None),
    (("push", [b"b", b"c", b"d"]), None),
    (("len",), 4),
    (("pop", 2), [b"a", b"b"]),
    (("push", [b"e", b"f", b"g", b"h", b"i"]), error("QueueFullError")),  # 2 + 5 > 6
    (("len",), 2),
    (("payload_size",), 2),
    (("push", [b"e", b"ff", b"ggg", b"hhhh"]), None),  # exactly full
    (("push", [b"x"]), error("QueueFullError")),
    (("push", []), None),
    (("len",), 6),
    (("pop", 0), error("ValueError")),
    (("push", "not a list"), error("TypeError")),
    (("push", [b"ok", 3]), error("TypeError")),
    (("pop", 3), [b"c", b"d", b"e"]),
    (("payload_size",), 9),
    (("disk_size_positive",), True),
    (("push", [b"j"]), None),
    # ---- MPMC: several labels, both start positions
    (("add", [b"m1", b"m2", b"m3"]), None),
    (("next", "alpha", Oldest, 2), ([b"m1", b"m2"], False)),
    (("next", "beta", Newest, 5), ([b"m3"], False)),  # Newest: the last stored element
    (("labels",), ["alpha", "beta"]),
    (("mpmc_len",), 3),
    (("advance", 5.0), None),
    (("add", [b"m4"]), None),
    (("next", "alpha", Newest, 10), ([b"m3", b"m4"], False)),  # known label: position kept
    (("next", "gamma", Oldest, 1), ([b"m1"], False)),
    (("next", "beta", Oldest, 10), ([b"m4"], False)),
    (("remove_label", "beta"), True),
    (("remove_label", "beta"), False),
    (("labels",), ["alpha", "gamma"]),
    (("next", "", Oldest, 1), error("ValueError")),
    (("next", "bad", "Oldest", 1), error("TypeError")),
    (("next", "bad", Oldest, 0), error("ValueError")),
    # ---- close and reopen both queues
    (("reopen",), None),
    (("len",), 4),
    (("payload_size",), 10),
    (("pop", 3), [b"ff", b"ggg", b"hhhh"]),
    (("labels",), ["alpha", "gamma"]),
    (("mpmc_len",), 4),
    # ---- TTL: m1..m3 become 11 s old, m4 6 s old
    (("advance", 6.0), None),
    (("next", "gamma", Oldest, 10), ([b"m4"], True)),  # gamma missed m2 and m3
    (("next", "gamma", Oldest, 10), ([], False)),  # reported once
    (("next", "alpha", Oldest, 10), ([], False)),  # alpha had read everything
    (("next", "delta", Newest, 10), ([b"m4"], False)),
    (("mpmc_len",), 1),
    (("advance", 20.0), None),
    (("next", "beta", Newest, 10), ([], False)),  # everything expired: starts after
    (("mpmc_len",), 0),
    (("add", [b"m5", b"m6"]), None),
    (("next", "beta", Oldest, 1), ([b"m5"], False)),
    (("next", "delta", Oldest, 10), ([b"m5", b"m6"], False)),  # m4 was read before it expired
    (("reopen",), None),
    (("next", "beta", Oldest, 10), ([b"m6"], False)),
    (("next", "epsilon", Oldest, 10), ([b"m5", b"m6"], False)),
    (("labels",), ["alpha", "beta", "delta", "epsilon", "gamma"]),
    (("pop", 10), [b"j"]),
    (("pop", 1), []),
    (("len",), 0),
    (("payload_size",), 0),
]

EXPECTED: list[Entry] = [(step[0], result) for step, result in SCENARIO]


def error_entry(exception: Exception) -> tuple[str, str]:
    return error(type(exception).__name__)


# ---------------------------------------------------------------- blocking face


def blocking_transcript(directory: str) -> list[Entry]:
    clock = FakeClock(START_TIME)
    fifo_path = os.path.join(directory, "fifo")
    mpmc_path = os.path.join(directory, "mpmc")

    def open_queues() -> tuple[blocking.PersistentQueueWithCapacity, blocking.MpmcQueue]:
        return (
            blocking.PersistentQueueWithCapacity(fifo_path, CAPACITY),
            blocking.MpmcQueue(mpmc_path, TTL, clock=clock),
        )

    fifo, mpmc = open_queues()

    def perform(step: Step) -> Any:
        nonlocal fifo, mpmc
        kind, *arguments = step
        if kind == "push":
            return fifo.push(*arguments)
        if kind == "pop":
            return fifo.pop(*arguments)
        if kind == "len":
            return fifo.len
        if kind == "payload_size":
            return fifo.payload_size
        if kind == "disk_size_positive":
            return fifo.disk_size > 0
        if kind == "add":
            return mpmc.add(*arguments)
        if kind == "next":
            return mpmc.next(*arguments)
        if kind == "remove_label":
            return mpmc.remove_label(*arguments)
        if kind == "labels":
            return mpmc.labels
        if kind == "mpmc_len":
            return mpmc.len
        if kind == "advance":
            return clock.advance(*arguments)
        if kind == "reopen":
            fifo.close()
            mpmc.close()
            fifo, mpmc = open_queues()
            return None
        raise AssertionError(f"unknown step {step!r}")

    try:
        return run_steps(perform)
    finally:
        fifo.close()
        mpmc.close()


# ---------------------------------------------------------------- nonblocking face


def nonblocking_transcript(directory: str) -> list[Entry]:
    clock = FakeClock(START_TIME)
    fifo_path = os.path.join(directory, "fifo")
    mpmc_path = os.path.join(directory, "mpmc")

    def open_queues() -> tuple[nonblocking.PersistentQueueWithCapacity, nonblocking.MpmcQueue]:
        return (
            nonblocking.PersistentQueueWithCapacity(fifo_path, CAPACITY, 10),
            nonblocking.MpmcQueue(mpmc_path, TTL, 10, clock=clock),
        )

    fifo, mpmc = open_queues()

    def nothing(variant: Any) -> None:
        # Operations without a result give an empty variant.
        assert variant.data is None
        assert variant.len is None
        assert variant.size is None
        return None

    def perform(step: Step) -> Any:
        nonlocal fifo, mpmc
        kind, *arguments = step
        if kind == "push":
            return nothing(fifo.push(*arguments).get())
        if kind == "pop":
            return fifo.pop(*arguments).get().data
        if kind == "len":
            return fifo.len.get().len
        if kind == "payload_size":
            return fifo.payload_size.get().size
        if kind == "disk_size_positive":
            size = fifo.disk_size.get().size
            assert size is not None
            return size > 0
        if kind == "add":
            return nothing(mpmc.add(*arguments).get())
        if kind == "next":
            return mpmc.next(*arguments).get().data
        if kind == "remove_label":
            return mpmc.remove_label(*arguments).get().removed_label
        if kind == "labels":
            return mpmc.labels.get().labels
        if kind == "mpmc_len":
            return mpmc.len.get().len
        if kind == "advance":
            return clock.advance(*arguments)
        if kind == "reopen":
            fifo.close()
            mpmc.close()
            fifo, mpmc = open_queues()
            return None
        raise AssertionError(f"unknown step {step!r}")

    try:
        return run_steps(perform)
    finally:
        fifo.close()
        mpmc.close()


def run_steps(perform: Callable[[Step], Any]) -> list[Entry]:
    transcript: list[Entry] = []
    for step, _expected in SCENARIO:
        try:
            result = perform(step)
        except Exception as exception:
            result = error_entry(exception)
        transcript.append((step[0], result))
    return transcript


# ---------------------------------------------------------------- async face


async def async_transcript(directory: str) -> list[Entry]:
    clock = FakeClock(START_TIME)
    fifo_path = os.path.join(directory, "fifo")
    mpmc_path = os.path.join(directory, "mpmc")

    def open_queues() -> tuple[rocksq_aio.PersistentQueue, rocksq_aio.MpmcQueue]:
        return (
            rocksq_aio.PersistentQueue(fifo_path, CAPACITY),
            rocksq_aio.MpmcQueue(mpmc_path, TTL, clock=clock),
        )

    fifo, mpmc = open_queues()

    async def perform(step: Step) -> Any:
        nonlocal fifo, mpmc
        kind, *arguments = step
        if kind == "push":
            return await fifo.push(*arguments)
        if kind == "pop":
            return await fifo.pop(*arguments)
        if kind == "len":
            return fifo.len
        if kind == "payload_size":
            return fifo.payload_size
        if kind == "disk_size_positive":
            return fifo.disk_size > 0
        if kind == "add":
            return await mpmc.add(*arguments)
        if kind == "next":
            return await mpmc.next(*arguments)
        if kind == "remove_label":
            return await mpmc.remove_label(*arguments)
        if kind == "labels":
            return mpmc.labels
        if kind == "mpmc_len":
            return mpmc.len
        if kind == "advance":
            return clock.advance(*arguments)
        if kind == "reopen":
            await fifo.aclose()
            await mpmc.aclose()
            fifo, mpmc = open_queues()
            return None
        raise AssertionError(f"unknown step {step!r}")

    transcript: list[Entry] = []
    try:
        for step, _expected in SCENARIO:
            try:
                result = await perform(step)
            except Exception as exception:
                result = error_entry(exception)
            transcript.append((step[0], result))
    finally:
        await fifo.aclose()
        await mpmc.aclose()
    return transcript


# ---------------------------------------------------------------- the tests


def make_directory(root: Path, name: str) -> str:
    directory = root / name
    directory.mkdir()
    return str(directory)


def assert_matches_expected(transcript: list[Entry], face: str) -> None:
    assert len(transcript) == len(EXPECTED)
    for index, (got, expected) in enumerate(zip(transcript, EXPECTED, strict=True)):
        assert got == expected, f"{face} face, step {index} {SCENARIO[index][0]!r}"


def test_expected_transcript_is_well_formed() -> None:
    # The scenario covers what it claims to cover.
    kinds = {step[0] for step, _ in SCENARIO}
    assert {"push", "pop", "add", "next", "remove_label", "advance", "reopen"} <= kinds
    assert error("QueueFullError") in [result for _, result in SCENARIO]
    assert ([b"m4"], True) in [result for _, result in SCENARIO]
    starts = {step[2] for step, _ in SCENARIO if step[0] == "next"}
    assert {Oldest, Newest} <= starts


def test_blocking_face_gives_the_expected_transcript(tmp_path: Path) -> None:
    assert_matches_expected(blocking_transcript(make_directory(tmp_path, "b")), "blocking")


def test_nonblocking_face_gives_the_expected_transcript(tmp_path: Path) -> None:
    assert_matches_expected(nonblocking_transcript(make_directory(tmp_path, "n")), "nonblocking")


@pytest.mark.anyio
async def test_async_face_gives_the_expected_transcript(tmp_path: Path) -> None:
    assert_matches_expected(await async_transcript(make_directory(tmp_path, "a")), "async")


@pytest.mark.anyio
async def test_three_faces_give_identical_transcripts(tmp_path: Path) -> None:
    # Blocking and nonblocking run in a worker thread: Response.get() is
    # refused on the event loop's thread.
    from_blocking = await anyio.to_thread.run_sync(
        blocking_transcript, make_directory(tmp_path, "blocking")
    )
    from_nonblocking = await anyio.to_thread.run_sync(
        nonblocking_transcript, make_directory(tmp_path, "nonblocking")
    )
    from_async = await async_transcript(make_directory(tmp_path, "async"))
    assert from_blocking == from_nonblocking
    assert from_blocking == from_async
    # Identical, and right: the first steps are exactly what was written by hand.
    first_steps = 12
    assert from_blocking[:first_steps] == [
        ("push", None),
        ("push", None),
        ("len", 4),
        ("pop", [b"a", b"b"]),
        ("push", ("error", "QueueFullError")),
        ("len", 2),
        ("payload_size", 2),
        ("push", None),
        ("push", ("error", "QueueFullError")),
        ("push", None),
        ("len", 6),
        ("pop", ("error", "ValueError")),
    ]
    assert from_blocking == EXPECTED
