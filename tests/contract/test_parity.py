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

import contextvars
import inspect
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import rocksq_aio
from rocksq_aio import StartPosition, blocking, nonblocking

from support.clock import FakeClock
from support.differences import NO_CLOCK
from support.paths import sibling_path

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
    (("disk_size_as_engine_keeps",), True),  # > 0 if durable, 0 in memory
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


# ---------------------------------------------------------------- the faces

# How each step reads on a queue: the call, the field of a nonblocking
# Response's variant that holds its result ("nothing": every field empty),
# and what the transcript keeps of the result.
Call = Callable[..., Any]
STEPS: dict[str, tuple[Call, str, Callable[[Any], Any]]] = {
    "push": (lambda fifo, mpmc, *a: fifo.push(*a), "nothing", lambda r: r),
    "pop": (lambda fifo, mpmc, *a: fifo.pop(*a), "data", lambda r: r),
    "len": (lambda fifo, mpmc: fifo.len, "len", lambda r: r),
    "payload_size": (lambda fifo, mpmc: fifo.payload_size, "size", lambda r: r),
    "disk_size_as_engine_keeps": (
        lambda fifo, mpmc: fifo.disk_size,
        "size",
        lambda r: r > 0 if fifo_is_durable.get() else r == 0,
    ),
    "add": (lambda fifo, mpmc, *a: mpmc.add(*a), "nothing", lambda r: r),
    "next": (lambda fifo, mpmc, *a: mpmc.next(*a), "data", lambda r: r),
    "remove_label": (lambda fifo, mpmc, *a: mpmc.remove_label(*a), "removed_label", lambda r: r),
    "labels": (lambda fifo, mpmc: mpmc.labels, "labels", lambda r: r),
    "mpmc_len": (lambda fifo, mpmc: mpmc.len, "len", lambda r: r),
}


# An engine that is not durable (in memory) keeps nothing on disk: its disk_size is 0.
fifo_is_durable: contextvars.ContextVar[bool] = contextvars.ContextVar("fifo_is_durable")


def read_variant(response: Any, field: str) -> Any:
    variant = response.get()
    if field == "nothing":
        # Operations without a result give an empty variant.
        assert (variant.data, variant.len, variant.size) == (None, None, None)
        return None
    return getattr(variant, field)


def sync_transcript(
    face: Any, paths: tuple[str, str], resolve: Callable[[Any, str], Any]
) -> list[Entry]:
    """The transcript of a face whose calls return at once: blocking or nonblocking."""
    clock = FakeClock(START_TIME)
    extra = (10,) if face is nonblocking else ()  # nonblocking takes max_inflight_ops

    def open_queues() -> tuple[Any, Any]:
        return (
            face.PersistentQueueWithCapacity(paths[0], CAPACITY, *extra),
            face.MpmcQueue(paths[1], TTL, *extra, clock=clock),
        )

    fifo, mpmc = open_queues()
    fifo_is_durable.set(fifo.capabilities.durable)
    transcript: list[Entry] = []
    try:
        for step, _expected in SCENARIO:
            kind, *arguments = step
            try:
                if kind == "advance":
                    result = clock.advance(*arguments)
                elif kind == "reopen":
                    fifo.close()
                    mpmc.close()
                    fifo, mpmc = open_queues()
                    result = None
                else:
                    call, field, keep = STEPS[kind]
                    result = keep(resolve(call(fifo, mpmc, *arguments), field))
            except Exception as exception:
                result = error_entry(exception)
            transcript.append((kind, result))
    finally:
        fifo.close()
        mpmc.close()
    return transcript


def blocking_transcript(paths: tuple[str, str]) -> list[Entry]:
    return sync_transcript(blocking, paths, lambda result, _field: result)


def nonblocking_transcript(paths: tuple[str, str]) -> list[Entry]:
    return sync_transcript(nonblocking, paths, read_variant)


async def async_transcript(paths: tuple[str, str]) -> list[Entry]:
    clock = FakeClock(START_TIME)

    def open_queues() -> tuple[rocksq_aio.PersistentQueue, rocksq_aio.MpmcQueue]:
        return (
            rocksq_aio.PersistentQueue(paths[0], CAPACITY),
            rocksq_aio.MpmcQueue(paths[1], TTL, clock=clock),
        )

    fifo, mpmc = open_queues()
    fifo_is_durable.set(fifo.capabilities.durable)
    transcript: list[Entry] = []
    try:
        for step, _expected in SCENARIO:
            kind, *arguments = step
            try:
                if kind == "advance":
                    result = clock.advance(*arguments)
                elif kind == "reopen":
                    await fifo.aclose()
                    await mpmc.aclose()
                    fifo, mpmc = open_queues()
                    result = None
                else:
                    call, _field, keep = STEPS[kind]
                    value = call(fifo, mpmc, *arguments)
                    result = keep(await value if inspect.isawaitable(value) else value)
            except Exception as exception:
                result = error_entry(exception)
            transcript.append((kind, result))
    finally:
        await fifo.aclose()
        await mpmc.aclose()
    return transcript


# ---------------------------------------------------------------- the tests


def queue_paths(queue_path: str, face: str) -> tuple[str, str]:
    return (sibling_path(queue_path, f"{face}-fifo"), sibling_path(queue_path, f"{face}-mpmc"))


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


@NO_CLOCK
def test_blocking_face_gives_the_expected_transcript(queue_path: str) -> None:
    paths = queue_paths(queue_path, "b")
    assert_matches_expected(blocking_transcript(paths), "blocking")


@NO_CLOCK
def test_nonblocking_face_gives_the_expected_transcript(queue_path: str) -> None:
    paths = queue_paths(queue_path, "n")
    assert_matches_expected(nonblocking_transcript(paths), "nonblocking")


@pytest.mark.anyio
@NO_CLOCK
async def test_async_face_gives_the_expected_transcript(queue_path: str) -> None:
    assert_matches_expected(await async_transcript(queue_paths(queue_path, "a")), "async")


@pytest.mark.anyio
@NO_CLOCK
async def test_three_faces_give_identical_transcripts(queue_path: str) -> None:
    # Blocking and nonblocking run in a worker thread: Response.get() is
    # refused on the event loop's thread.
    from_blocking = await anyio.to_thread.run_sync(
        blocking_transcript, queue_paths(queue_path, "blocking")
    )
    from_nonblocking = await anyio.to_thread.run_sync(
        nonblocking_transcript, queue_paths(queue_path, "nonblocking")
    )
    from_async = await async_transcript(queue_paths(queue_path, "async"))
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


def test_every_face_shows_the_capabilities_of_the_engine_its_path_names(queue_path: str) -> None:
    scheme = queue_path.partition("://")[0] if "://" in queue_path else ""
    expected = {"memory": "memory", "nats": "jetstream", "tls": "jetstream"}.get(scheme, "rocksdb")
    opened = [
        blocking.PersistentQueueWithCapacity(sibling_path(queue_path, "b"), CAPACITY),
        nonblocking.PersistentQueueWithCapacity(sibling_path(queue_path, "n"), CAPACITY),
        rocksq_aio.PersistentQueue(sibling_path(queue_path, "a"), CAPACITY),
        blocking.MpmcQueue(sibling_path(queue_path, "bm"), TTL),
        nonblocking.MpmcQueue(sibling_path(queue_path, "nm"), TTL),
        rocksq_aio.MpmcQueue(sibling_path(queue_path, "am"), TTL),
    ]
    try:
        names = {queue.capabilities.name for queue in opened}
        durable = {queue.capabilities.durable for queue in opened}
    finally:
        for queue in opened:
            queue.close()
    assert names == {expected}
    assert durable == {expected != "memory"}
