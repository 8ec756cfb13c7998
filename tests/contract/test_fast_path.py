"""The worker's fast paths keep every rule of the slow ones.

Nonblocking: ``Response.get()`` runs an operation the worker's thread has not
taken in the calling thread, with every task submitted before it, in order;
answers read from memory (``len``, ``labels``, ``payload_size``) are ready at
once when nothing is in flight. Async: operations awaited at once commit in
submission order, and none is accepted once ``aclose()`` began.

To make "the worker has not taken it" certain, ``parked`` holds the worker's
only thread in another job: whatever runs then runs in the caller's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from rocksq_aio import (
    PersistentQueue,
    QueueClosedError,
    QueueFullError,
    StartPosition,
    nonblocking,
)

from support.differences import LOCAL_WORKER_THREAD

pytestmark = [pytest.mark.contract, LOCAL_WORKER_THREAD]

WAIT = 30.0  # seconds; only reached when a test is broken


@contextmanager
def parked(queue: Any) -> Iterator[None]:
    """Hold the worker's thread (its executor's only thread) until the block ends."""
    queue.disk_size.get()  # a first task starts the worker, and its executor
    executor = queue._worker._executor
    assert executor is not None
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(WAIT)

    executor.submit(hold)
    assert entered.wait(WAIT), "the worker's thread never became free"
    try:
        yield
    finally:
        release.set()


def executing_threads(queue: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The idents of the threads that execute the engine's groups, in order."""
    engine = queue._engine
    real = engine._execute
    seen: list[int] = []

    def execute(group: list[Any]) -> None:
        seen.append(threading.get_ident())
        real(group)

    monkeypatch.setattr(engine, "_execute", execute)
    return seen


class Held:
    """Holds the engine's ``_execute`` (in whichever thread runs it) until released."""

    def __init__(self, queue: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        real = queue._engine._execute

        def execute(group: list[Any]) -> None:
            self.entered.set()
            self.release.wait(WAIT)
            real(group)

        monkeypatch.setattr(queue._engine, "_execute", execute)

    async def wait_entered(self) -> None:
        assert await anyio.to_thread.run_sync(self.entered.wait, WAIT)


def fifo(path: str, max_elements: int = 1000, max_inflight_ops: int = 100) -> Any:
    return nonblocking.PersistentQueueWithCapacity(path, max_elements, max_inflight_ops)


# ---------------------------------------------------------------- nonblocking get()


def test_get_runs_an_operation_the_worker_has_not_taken_in_the_calling_thread(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fifo(queue_path) as queue, parked(queue):
        threads = executing_threads(queue, monkeypatch)
        pushed = queue.push([b"a"])
        assert not pushed.is_ready  # nobody runs it: the worker's thread is held
        assert pushed.get().data is None
        assert queue.pop().get().data == [b"a"]
        assert threads and set(threads) == {threading.get_ident()}
        assert queue.inflight_ops == 0


def test_get_runs_everything_submitted_before_it_first_in_order(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fifo(queue_path) as queue, parked(queue):
        threads = executing_threads(queue, monkeypatch)
        first = queue.push([b"a", b"b"])
        length = queue.len  # after the push and before the pop, not at once: one is in flight
        popped = queue.pop(1)
        assert not length.is_ready
        assert popped.get().data == [b"a"]
        assert first.is_ready
        assert length.is_ready
        assert length.get().len == 2
        later = queue.push([b"c"])
        assert queue.pop(10).get().data == [b"b", b"c"]
        assert later.is_ready
        assert set(threads) == {threading.get_ident()}


def test_a_task_submitted_after_the_one_got_is_left_to_the_worker(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        with parked(queue):
            queue.push([b"a"])
            popped = queue.pop()
            after = queue.len  # submitted after the pop: get() on the pop leaves it
            assert popped.get().data == [b"a"]
            assert not after.is_ready
        assert after.get().len == 0  # the worker's thread, free again, answers it
        assert queue.inflight_ops == 0


def test_get_waits_for_another_caller_running_tasks_then_runs_its_own(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fifo(queue_path) as queue, parked(queue):
        held = Held(queue, monkeypatch)
        first = queue.push([b"a"])
        getter = threading.Thread(target=first.get)
        getter.start()  # runs the first push, held in _execute
        assert held.entered.wait(WAIT)
        second = queue.push([b"b"])
        threads = executing_threads(queue, monkeypatch)
        opener = threading.Timer(0.05, held.release.set)
        opener.start()
        # Waits for the getter (one thread executes at a time), then runs the
        # second push here: the worker's thread is still held.
        assert second.get().data is None
        assert first.is_ready
        assert threads == [threading.get_ident()]
        getter.join(WAIT)
        opener.join(WAIT)
        assert queue.pop(10).get().data == [b"a", b"b"]


def test_mpmc_get_runs_add_and_next_in_the_calling_thread(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with nonblocking.MpmcQueue(queue_path, 3600) as queue, parked(queue):
        threads = executing_threads(queue, monkeypatch)
        queue.add([b"a"])
        queue.add([b"b"])
        labels = queue.labels
        read = queue.next("L", StartPosition.Oldest, 1)
        assert read.get().data == ([b"a"], False)
        assert labels.get().labels == []  # answered after the adds, before the next
        assert queue.labels.get().labels == ["L"]
        assert queue.next("L", StartPosition.Oldest, 5).get().data == ([b"b"], False)
        assert set(threads) == {threading.get_ident()}


def test_get_in_the_calling_thread_reports_queue_full_for_that_push_only(
    queue_path: str,
) -> None:
    with fifo(queue_path, max_elements=1) as queue, parked(queue):
        kept = queue.push([b"kept"])
        refused = queue.push([b"refused"])
        with pytest.raises(QueueFullError):
            refused.get()
        assert kept.get().data is None
        assert queue.pop(10).get().data == [b"kept"]


def test_an_error_reaching_the_engine_is_reported_by_get_and_nothing_runs(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operation reaches the engine's dispatcher when a thread takes it;
    # whatever fails there is that operation's error, reported by get().
    with fifo(queue_path) as queue, parked(queue):
        engine = queue._engine
        real_submit = engine.submit

        def failing_submit(operation: Any) -> None:
            monkeypatch.setattr(engine, "submit", real_submit)
            raise ZeroDivisionError("a bug")

        monkeypatch.setattr(engine, "submit", failing_submit)
        failed = queue.push([b"never stored"])
        later = queue.push([b"kept"])
        with pytest.raises(ZeroDivisionError, match="a bug"):
            failed.get()
        assert later.get().data is None
        assert queue.pop(10).get().data == [b"kept"]
        assert queue.inflight_ops == 0


def test_a_caller_beyond_max_inflight_ops_runs_the_queued_operations_itself(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fifo(queue_path, max_inflight_ops=2) as queue, parked(queue):
        threads = executing_threads(queue, monkeypatch)
        first, second = queue.push([b"1"]), queue.push([b"2"])
        third = queue.push([b"3"])  # blocked anyway: runs the two before it, here
        assert first.is_ready and second.is_ready
        assert not third.is_ready
        assert queue.inflight_ops == 1
        assert set(threads) == {threading.get_ident()}
        assert queue.pop(10).get().data == [b"1", b"2", b"3"]


def test_a_caller_beyond_max_inflight_ops_waits_while_another_thread_runs_them(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fifo(queue_path, max_inflight_ops=2) as queue, parked(queue):
        held = Held(queue, monkeypatch)
        first = queue.push([b"1"])
        length = queue.len  # in flight too: answered after the first push
        getter = threading.Thread(target=first.get)
        getter.start()  # runs the first push, held in _execute
        assert held.entered.wait(WAIT)
        third: list[Any] = []
        caller = threading.Thread(target=lambda: third.append(queue.push([b"3"])))
        caller.start()
        caller.join(0.1)
        assert caller.is_alive(), "a third operation was accepted beyond max_inflight_ops=2"
        held.release.set()
        caller.join(WAIT)
        getter.join(WAIT)
        assert not caller.is_alive() and not getter.is_alive()
        assert length.get().len == 1
        assert queue.pop(10).get().data == [b"1", b"3"]
        assert third[0].is_ready
        assert queue.inflight_ops == 0


def test_close_waits_for_the_tasks_a_caller_is_running(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = fifo(queue_path)
    entered, release = threading.Event(), threading.Event()
    real_disk_size = queue._read_disk_size

    def slow_disk_size() -> int:
        entered.set()
        release.wait(WAIT)
        return int(real_disk_size())

    with parked(queue):
        monkeypatch.setattr(queue, "_read_disk_size", slow_disk_size)
        queue.push([b"a"])
        queue.disk_size  # noqa: B018 (a call, held between the two pushes)
        last = queue.push([b"b"])
        getter = threading.Thread(target=last.get)
        getter.start()  # runs all three, here; held in the second
        assert entered.wait(WAIT)
    # The worker's thread is free again: only the getter holds close() back.
    closer = threading.Thread(target=queue.close)
    closer.start()
    closer.join(0.1)
    assert closer.is_alive(), "close() returned while a caller was still running tasks"
    release.set()
    closer.join(WAIT)
    getter.join(WAIT)
    assert not closer.is_alive() and not getter.is_alive()
    assert last.get().data is None  # it ran before the close
    with fifo(queue_path) as reopened:
        assert reopened.pop(10).get().data == [b"a", b"b"]


def test_an_awaited_response_is_woken_when_another_thread_runs_it(queue_path: str) -> None:
    with fifo(queue_path) as queue, parked(queue):
        pushed = queue.push([b"a"])
        awaited: list[Any] = []

        async def wait() -> None:
            awaited.append(await pushed)

        def in_a_loop() -> None:
            anyio.run(wait)

        waiter = threading.Thread(target=in_a_loop)
        waiter.start()
        assert queue.pop().get().data == [b"a"]  # runs the push, here, before the pop
        waiter.join(WAIT)
        assert not waiter.is_alive()
        assert awaited and awaited[0].data is None


# ---------------------------------------------------------------- answers from memory


def test_answers_from_memory_are_ready_at_once_when_nothing_is_in_flight(
    queue_path: str,
) -> None:
    with fifo(queue_path) as queue, parked(queue):
        queue.push([b"abc"]).get()
        length, payload = queue.len, queue.payload_size
        assert length.is_ready and payload.is_ready  # nobody could have answered them
        assert length.get().len == 1
        assert payload.get().size == 3


def test_mpmc_answers_from_memory_are_ready_at_once_when_nothing_is_in_flight(
    queue_path: str,
) -> None:
    with nonblocking.MpmcQueue(queue_path, 3600) as queue, parked(queue):
        queue.add([b"x"]).get()
        queue.next("L").get()
        labels, length = queue.labels, queue.len
        assert labels.is_ready and length.is_ready
        assert labels.get().labels == ["L"]
        assert length.get().len == 1


def test_answers_from_memory_after_close_raise(queue_path: str) -> None:
    queue = fifo(queue_path)
    queue.push([b"a"]).get()
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.len.get()
    with pytest.raises(QueueClosedError):
        queue.payload_size.get()


# ---------------------------------------------------------------- async callers


@pytest.mark.anyio
async def test_tasks_awaiting_at_once_are_committed_in_submission_order(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PersistentQueue(queue_path, max_elements=5) as queue:
        held = Held(queue, monkeypatch)
        results: dict[int, Any] = {}

        async def push(number: int) -> None:
            try:
                await queue.push([b"%d" % number, b"x"])
                results[number] = "pushed"
            except QueueFullError:
                results[number] = "full"

        async with anyio.create_task_group() as group:
            group.start_soon(push, 0)
            await held.wait_entered()  # the first push holds the worker's thread
            for number in range(1, 4):
                group.start_soon(push, number)
                await anyio.wait_all_tasks_blocked()  # it submitted: the order is 1, 2, 3
            held.release.set()
        # Capacity 5: the first two pushes fit, in order; then no more.
        assert results == {0: "pushed", 1: "pushed", 2: "full", 3: "full"}
        assert await queue.pop(10) == [b"0", b"x", b"1", b"x"]


@pytest.mark.anyio
async def test_an_operation_submitted_after_aclose_began_is_refused(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = PersistentQueue(queue_path)
    await queue.push([b"a"])
    closing, release = threading.Event(), threading.Event()
    real_close = queue._engine.close

    def slow_close() -> None:
        closing.set()
        release.wait(WAIT)
        real_close()

    monkeypatch.setattr(queue._engine, "close", slow_close)
    outcomes: list[str] = []

    async def late_pop() -> None:
        try:
            outcomes.append(repr(await queue.pop()))
        except QueueClosedError:
            outcomes.append("closed")

    async with anyio.create_task_group() as group:
        group.start_soon(queue.aclose)
        assert await anyio.to_thread.run_sync(closing.wait, WAIT)
        group.start_soon(late_pop)  # the engine is still open, but aclose() began
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert outcomes == ["closed"]
    async with PersistentQueue(queue_path) as reopened:
        assert await reopened.pop() == [b"a"]
