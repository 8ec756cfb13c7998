"""The JetStream MPMC engine: TTL in real time (the server's clock), labels, kinds."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from rocksq_aio import MpmcQueue, PersistentQueue, QueueError, StartPosition
from rocksq_aio.blocking import MpmcQueue as BlockingMpmc

pytest.importorskip("nats")

TIMEOUT = 30


@pytest.fixture
def path(nats_server: str) -> str:
    return f"{nats_server}/mpmc-{time.monotonic_ns()}"


def test_expiry_in_real_time_is_reported_once_per_label(path: str) -> None:
    with BlockingMpmc(path, 1) as queue:  # ttl 1 s, stamped by the server
        assert queue.next("unread") == ([], False)
        queue.add([b"a", b"b"])
        assert queue.next("partial") == ([b"a"], False)
        assert queue.next("all", max_elements=10) == ([b"a", b"b"], False)
        time.sleep(1.5)
        queue.add([b"c"])
        assert queue.next("unread", max_elements=10) == ([b"c"], True)
        assert queue.next("unread", max_elements=10) == ([], False)
        assert queue.next("partial", max_elements=10) == ([b"c"], True)
        assert queue.next("all", max_elements=10) == ([b"c"], False)
        time.sleep(1.5)
        # Nothing to hand on: the flag comes alone, once.
        assert queue.next("partial") == ([], False)
        assert queue.next("late-newest", StartPosition.Newest) == ([], False)
    with BlockingMpmc(path, 1) as queue:
        assert queue.next("unread") == ([], False)  # reported before: not again


def test_newest_starts_at_the_last_element_and_labels_persist(path: str) -> None:
    with BlockingMpmc(path, 0) as queue:
        queue.add([b"1", b"2", b"3"])
        assert queue.next("new", StartPosition.Newest, 10) == ([b"3"], False)
        assert queue.next("old", StartPosition.Oldest, 1) == ([b"1"], False)
        assert queue.labels == ["new", "old"]
    with BlockingMpmc(path, 0) as queue:
        assert queue.labels == ["new", "old"]
        assert queue.next("old", StartPosition.Newest, 10) == ([b"2", b"3"], False)
        assert queue.remove_label("new") is True
        assert queue.remove_label("new") is False
        assert queue.labels == ["old"]


def test_a_fifo_stream_is_not_opened_as_mpmc_and_is_left_alone(path: str) -> None:
    async def scenario() -> None:
        async with PersistentQueue(path) as fifo:
            await fifo.push([b"job"])
        with pytest.raises(QueueError, match="FIFO"):
            MpmcQueue(path, 0)
        async with PersistentQueue(path) as fifo:
            assert await fifo.pop() == [b"job"]

    asyncio.run(scenario())


@pytest.mark.anyio
async def test_next_wait_is_woken_by_an_add_from_another_handle(path: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with MpmcQueue(path, 0) as reader, MpmcQueue(path, 0) as writer:
            results: list[tuple[list[bytes], bool]] = []

            async def wait() -> None:
                results.append(await reader.next_wait("L", timeout=10))

            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await anyio.sleep(0.2)
                await writer.add([b"hello"])
            assert results == [([b"hello"], False)]
