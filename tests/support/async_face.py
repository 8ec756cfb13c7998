"""Helpers of the async face's tests (tests/contract/test_async*.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from rocksq_aio import MpmcQueue, PersistentQueue
from rocksq_aio._dispatch import Operation

ALL = 2**20  # more than any test ever stores
WAKE_UP_BOUND = 1.0
"""How long a waiter is given to notice items that are already there.

Never reached when the library works (the waiter is woken at once); it only
turns a lost wake-up into a failed assertion instead of a hang."""


async def settle(queue: PersistentQueue | MpmcQueue) -> None:
    """Return once no operation is in flight, so waiting tasks are parked on their event."""
    for _ in range(5):
        await anyio.sleep(0)
    with anyio.fail_after(10):
        while queue.inflight_ops:
            await anyio.sleep(0.001)
    for _ in range(5):
        await anyio.sleep(0)


def record_submits(
    queue: PersistentQueue | MpmcQueue, monkeypatch: pytest.MonkeyPatch
) -> list[Operation]:
    """Record every operation the async face hands to the queue's core from now on."""
    core: Any = queue._engine
    submitted: list[Operation] = []
    real_submit: Callable[[Operation], None] = core.submit

    def submit(operation: Operation) -> None:
        submitted.append(operation)
        real_submit(operation)

    monkeypatch.setattr(core, "submit", submit)
    return submitted


def kinds(operations: list[Operation]) -> list[str]:
    return [operation.kind.value for operation in operations]


async def collect(iterator: AsyncIterator[bytes], count: int) -> list[bytes]:
    got: list[bytes] = []
    async for item in iterator:
        got.append(item)
        if len(got) == count:
            break
    return got


async def produce_and_consume(
    consumers: list[Callable[[], Awaitable[object]]],
    producers: list[Callable[[], Awaitable[object]]],
    delivered: anyio.Event,
) -> None:
    """Start the consumers, run every producer to its end, wait until ``delivered``
    is set (20 s at most: a lost item fails the caller's assertions, not a hang),
    then cancel the consumers."""
    async with anyio.create_task_group() as consuming:
        for consumer in consumers:
            consuming.start_soon(consumer)
        async with anyio.create_task_group() as producing:
            for producer in producers:
                producing.start_soon(producer)
        with anyio.move_on_after(20):
            await delivered.wait()
        consuming.cancel_scope.cancel()
