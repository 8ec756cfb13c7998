"""The queues as asyncio users test their code: pytest-asyncio fixtures and loops.

Async fixtures open queues; tests run on a loop of their own (function scope)
or share one loop across the module; and a queue made under one loop is used
under the next, which works (each loop gets the queue's primitives anew, see
``Worker.follow_event_loop``). Every asyncio-marked test runs on asyncio's loop
and on uvloop's (the ``pytest_asyncio_loop_factories`` hook in conftest).

anyio's plugin keeps running the anyio-marked tests (trio included) beside
these: ``asyncio_mode = "strict"`` leaves unmarked tests to it, and the last
test here is one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from rocksq_aio import MpmcQueue, PersistentQueue, QueueClosedError, QueueLockedError

from support.paths import ENGINES, new_queue_path

pytestmark = pytest.mark.contract

WAIT = 10.0
"""Seconds a test waits for what must happen: a hang fails the test instead."""


async def wake_a_waiting_consumer(queue: PersistentQueue, item: bytes) -> None:
    """A task waiting in pop_wait gets what this one pushes."""
    consumer = asyncio.create_task(queue.pop_wait(1, timeout=WAIT))
    await asyncio.sleep(0.01)
    assert not consumer.done()
    await queue.push([item])
    assert await asyncio.wait_for(consumer, WAIT) == [item]


@pytest_asyncio.fixture
async def queue(queue_path: str) -> AsyncIterator[PersistentQueue]:
    async with PersistentQueue(queue_path) as queue:
        yield queue


@pytest_asyncio.fixture
async def mpmc(queue_path: str) -> AsyncIterator[MpmcQueue]:
    async with MpmcQueue(queue_path, ttl=0) as queue:
        yield queue


# ---------------------------------------------------------------- function-scoped loops


@pytest.mark.asyncio
async def test_an_async_fixture_hands_over_an_open_queue(queue: PersistentQueue) -> None:
    assert not queue.closed
    await queue.push([b"a", b"b"])
    assert await queue.pop(2) == [b"a", b"b"]


@pytest.mark.asyncio
async def test_a_producer_task_wakes_a_consumer_waiting_in_pop_wait(
    queue: PersistentQueue,
) -> None:
    await wake_a_waiting_consumer(queue, b"x")


@pytest.mark.asyncio
async def test_async_for_reads_what_other_tasks_push(queue: PersistentQueue) -> None:
    async def produce(first: int) -> None:
        for number in range(first, first + 5):
            await queue.push([b"%d" % number])

    async def consume() -> list[bytes]:
        got: list[bytes] = []
        async for item in queue:
            got.append(item)
            if len(got) == 10:
                break
        return got

    consumer = asyncio.create_task(consume())
    await asyncio.gather(produce(0), produce(100))
    got = await asyncio.wait_for(consumer, WAIT)
    assert sorted(got) == sorted([b"%d" % n for n in (*range(5), *range(100, 105))])


@pytest.mark.asyncio
async def test_wait_for_giving_up_on_pop_wait_loses_nothing(queue: PersistentQueue) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(queue.pop_wait(1), 0.05)
    await queue.push([b"late"])
    assert await queue.pop() == [b"late"]


@pytest.mark.asyncio
async def test_labels_read_concurrently_from_an_mpmc_fixture(mpmc: MpmcQueue) -> None:
    await mpmc.add([b"one", b"two"])
    first, second = await asyncio.gather(
        mpmc.next("a", max_elements=2), mpmc.next("b", max_elements=2)
    )
    assert first == second == ([b"one", b"two"], False)
    assert sorted(mpmc.labels) == ["a", "b"]


@pytest.mark.asyncio
async def test_a_second_open_of_a_fixtures_queue_fails_at_its_first_await(
    queue: PersistentQueue,
) -> None:
    second = PersistentQueue(queue.path)  # opens nothing yet
    with pytest.raises(QueueLockedError):
        await second.push([b"x"])
    await queue.push([b"kept"])  # the failed open did not disturb the open queue
    assert await queue.pop() == [b"kept"]


# ---------------------------------------------------------------- a module-scoped loop


@pytest.fixture(scope="module", params=ENGINES)
def module_queue_path(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with new_queue_path(request.param, str(tmp_path_factory.mktemp("module"))) as path:
        yield path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    module_queue_path: str,
) -> AsyncIterator[tuple[PersistentQueue, asyncio.AbstractEventLoop]]:
    """A queue opened once for the module, and the module's loop it was opened under."""
    async with PersistentQueue(module_queue_path) as queue:
        yield queue, asyncio.get_running_loop()
    assert queue.closed


@pytest.mark.asyncio(loop_scope="module")
async def test_a_module_scoped_loop_shares_the_fixtures_queue(
    shared: tuple[PersistentQueue, asyncio.AbstractEventLoop],
) -> None:
    queue, loop = shared
    assert asyncio.get_running_loop() is loop
    await queue.push([b"module"])
    assert await queue.pop_wait(1, timeout=WAIT) == [b"module"]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_module_scoped_loop_keeps_the_queues_waiters_working(
    shared: tuple[PersistentQueue, asyncio.AbstractEventLoop],
) -> None:
    queue, loop = shared
    assert asyncio.get_running_loop() is loop
    await wake_a_waiting_consumer(queue, b"woken")


@pytest.mark.asyncio  # a loop of its own, not the module's
async def test_a_queue_opened_under_the_module_loop_works_under_a_test_loop(
    shared: tuple[PersistentQueue, asyncio.AbstractEventLoop],
) -> None:
    queue, loop = shared
    assert asyncio.get_running_loop() is not loop
    await wake_a_waiting_consumer(queue, b"crossed")
    # The module's teardown closes it under the module's loop again.


# ---------------------------------------------------------------- one loop after another


def test_a_queue_made_under_one_loop_is_used_under_the_next(queue_path: str) -> None:
    queue = PersistentQueue(queue_path)

    async def leave_a_waiter_behind() -> None:
        await queue.push([b"first"])
        assert await queue.pop() == [b"first"]
        # Still waiting when the loop ends: asyncio.run cancels it.
        waiter = asyncio.create_task(queue.pop_wait(1))
        await asyncio.sleep(0.01)
        assert not waiter.done()

    async def use_it_again() -> None:
        await wake_a_waiting_consumer(queue, b"second")
        await queue.push([b"kept"])

    asyncio.run(leave_a_waiter_behind())
    asyncio.run(asyncio.wait_for(use_it_again(), WAIT))
    asyncio.run(asyncio.wait_for(queue.aclose(), WAIT))
    assert queue.closed
    with pytest.raises(QueueClosedError):
        asyncio.run(queue.pop())

    async def reopen() -> list[bytes]:
        async with PersistentQueue(queue_path) as again:
            return await again.pop()

    assert asyncio.run(reopen()) == [b"kept"]  # the cancelled waiter took nothing


# ---------------------------------------------------------------- anyio's plugin beside


@pytest.mark.anyio
async def test_anyio_marked_tests_still_run_on_each_backend(
    queue_path: str, anyio_backend_name: str
) -> None:
    try:
        asyncio.get_running_loop()
        running = "asyncio"
    except RuntimeError:
        running = "trio"
    assert running == anyio_backend_name
    async with PersistentQueue(queue_path) as queue:
        await queue.push([b"x"])
        assert await queue.pop() == [b"x"]
