"""The async MPMC queue: add/next/labels/remove_label, ``next_wait`` (timeouts,
expiry reported at once, woken by hand-backs), ``consume`` handing back what
it did not yield, and concurrent adders and readers. On asyncio, uvloop and trio.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from rocksq_aio import MpmcQueue, StartPosition

from support.async_face import WAKE_UP_BOUND, collect, produce_and_consume, settle

pytestmark = [pytest.mark.anyio, pytest.mark.contract]


async def test_mpmc_add_next_labels_remove_label(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        assert queue.ttl == 0
        assert queue.is_empty
        assert queue.labels == []
        await queue.add([b"a", b"b"])
        await queue.add([b"c"])
        assert queue.len == 3
        assert len(queue) == 3
        assert await queue.next("x") == ([b"a"], False)
        assert await queue.next("x", max_elements=5) == ([b"b", b"c"], False)
        assert await queue.next("x") == ([], False)
        # A new label at Newest starts at the last stored element.
        assert await queue.next("y", StartPosition.Newest, max_elements=5) == ([b"c"], False)
        assert await queue.next("z", StartPosition.Oldest, max_elements=2) == ([b"a", b"b"], False)
        assert queue.labels == ["x", "y", "z"]
        assert queue.len == 3  # reading does not remove elements
        assert await queue.remove_label("x") is True
        assert await queue.remove_label("x") is False
        assert queue.labels == ["y", "z"]
        # A removed label starts over.
        assert await queue.next("x", max_elements=5) == ([b"a", b"b", b"c"], False)
    async with MpmcQueue(queue_path, 0) as reopened:
        assert reopened.labels == ["x", "y", "z"]
        assert await reopened.next("z", max_elements=5) == ([b"c"], False)


async def test_next_wait_times_out_and_returns_items_added_later(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        assert await queue.next_wait("L", timeout=0.05) == ([], False)
        results: list[tuple[list[bytes], bool]] = []

        async def reader() -> None:
            results.append(await queue.next_wait("L", max_elements=4))

        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            await settle(queue)
            assert results == []
            await queue.add([b"p", b"q"])
        assert results == [([b"p", b"q"], False)]
        assert await queue.next_wait("L", timeout=0) == ([], False)
        assert await queue.next("other", max_elements=5) == ([b"p", b"q"], False)


async def test_next_wait_reports_expired_elements_at_once(
    queue_path: str, clock: Callable[[], float]
) -> None:
    fake: Any = clock
    async with MpmcQueue(queue_path, 10, clock=clock) as queue:
        await queue.add([b"old-1", b"old-2"])
        assert await queue.next("L") == ([b"old-1"], False)
        fake.advance(11)
        with anyio.fail_after(10):
            assert await queue.next_wait("L") == ([], True)
        assert queue.len == 0
        assert await queue.next_wait("L", timeout=0.01) == ([], False)
        await queue.add([b"new"])
        assert await queue.next_wait("L", timeout=5) == ([b"new"], False)


async def test_consume_yields_items_added_later_and_hands_back_the_rest(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        got: list[bytes] = []

        async def reader() -> None:
            async with aclosing(queue.consume("L", batch_size=3)) as stream:
                got.extend(await collect(stream, 4))

        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            await settle(queue)
            await queue.add([b"a", b"b", b"c"])
            await settle(queue)
            await queue.add([b"d", b"e", b"f"])
        assert got == [b"a", b"b", b"c", b"d"]
        # b"e" and b"f" were read by the last batch but never yielded.
        assert await queue.next("L", max_elements=10) == ([b"e", b"f"], False)
        assert await queue.next("L") == ([], False)
        assert await queue.next("other", max_elements=10) == (
            [b"a", b"b", b"c", b"d", b"e", b"f"],
            False,
        )


async def test_consume_closed_after_one_item_redelivers_the_rest_to_next(queue_path: str) -> None:
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add([b"1", b"2", b"3", b"4"])
        async with aclosing(queue.consume("L", batch_size=3)) as stream:
            assert await collect(stream, 1) == [b"1"]
        assert await queue.next("L") == ([b"2"], False)
        assert await queue.next("L", max_elements=5) == ([b"3", b"4"], False)


async def test_next_wait_is_woken_by_items_consume_hands_back(queue_path: str) -> None:
    """Items a closed ``consume()`` hands back to its label must wake that label's waiters."""
    async with MpmcQueue(queue_path, 0) as queue:
        await queue.add([b"1", b"2", b"3"])
        results: list[tuple[list[bytes], bool]] = []

        async def waiter() -> None:
            results.append(await queue.next_wait("L", timeout=WAKE_UP_BOUND))

        async with (
            anyio.create_task_group() as group,
            aclosing(queue.consume("L", batch_size=3)) as stream,
        ):
            assert await collect(stream, 1) == [b"1"]
            group.start_soon(waiter)
            await settle(queue)
            assert results == []
        assert results == [([b"2"], False)], "a waiter slept through items handed back"
        assert await queue.next("L", max_elements=5) == ([b"3"], False)


async def test_mpmc_concurrent_adders_and_readers_deliver_each_item_once_per_label(
    queue_path: str,
) -> None:
    added = [b"m-%d" % number for number in range(60)]
    labels = ["left", "right"]
    delivered: dict[str, list[bytes]] = {label: [] for label in labels}
    all_delivered = anyio.Event()
    async with MpmcQueue(queue_path, 0) as queue:

        async def reader(label: str) -> None:
            while True:
                items, expired = await queue.next_wait(label, max_elements=2)
                assert not expired
                delivered[label].extend(items)
                if all(len(delivered[name]) >= len(added) for name in labels):
                    all_delivered.set()

        readers = [functools.partial(reader, label) for label in labels for _ in range(2)]
        adders = [functools.partial(queue.add, [item]) for item in added]
        await produce_and_consume(readers, adders, all_delivered)
        for label in labels:
            assert Counter(delivered[label]) == Counter(added)
            assert await queue.next(label) == ([], False)
        assert queue.len == len(added)
