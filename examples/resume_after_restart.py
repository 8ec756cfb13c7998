"""A consumer that stops, restarts, and resumes exactly where it stopped.

An MPMC queue is a persistent stream: each consumer has a *label* whose read
position is stored on disk with the items. Here the "indexer" consumer reads
the stream with ``async for item in events.consume("indexer", ...)``, handles
a few events, and stops, as a service would on a deploy. The queue is closed
(the process could exit here). While the indexer is down, more events arrive.
After the "restart" the queue is reopened and the same loop picks up at the
first event it had not handled: none skipped, none handled twice.

``consume`` reads in batches (``batch_size=3``): when the loop stops in the
middle of a batch, the events read but not yet handled are handed back to the
label. That happens when the iterator is closed, so wrap it in
``contextlib.aclosing`` to close it right at the ``break``, before the queue.

Run it with ``python examples/resume_after_restart.py [directory]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

import anyio

from rocksq_aio import MpmcQueue, StartPosition

LABEL = "indexer"
TTL = 3600.0  # seconds an event is kept (0 would keep them forever)


async def handle(processed: list[str], event: bytes) -> None:
    """Stand-in for real work (index a document, call a service, ...)."""
    processed.append(event.decode())
    await anyio.sleep(0)


async def run_consumer(path: str, how_many: int) -> list[str]:
    """Open the stream, handle ``how_many`` events for LABEL, then stop and close it."""
    processed: list[str] = []
    async with MpmcQueue(path, TTL) as events:
        # consume() is an async generator; its annotation says AsyncIterator,
        # which has no aclose(), hence the cast for the type checker.
        stream = cast(
            "AsyncGenerator[bytes, None]",
            events.consume(LABEL, StartPosition.Oldest, batch_size=3),
        )
        async with aclosing(stream):
            async for event in stream:
                await handle(processed, event)
                if len(processed) == how_many:
                    break  # aclosing hands the rest of the batch back to the label
    # Leaving the `async with` closed the queue: this is the "restart".
    return processed


async def main(directory: str) -> None:
    path = os.path.join(directory, "events")

    async with MpmcQueue(path, TTL) as events:
        await events.add([f"event-{number:02d}".encode() for number in range(1, 8)])
        print("added event-01 .. event-07")

    before = await run_consumer(path, how_many=4)
    print("before restart, processed:", before)

    # While the consumer is down, the producer keeps adding.
    async with MpmcQueue(path, TTL) as events:
        await events.add([f"event-{number:02d}".encode() for number in range(8, 11)])
        print("while the consumer was down, added event-08 .. event-10")
        print("labels stored on disk:", events.labels)

    after = await run_consumer(path, how_many=6)
    print("after restart, processed:", after)

    everything = [f"event-{number:02d}" for number in range(1, 11)]
    resumed_exactly = before + after == everything
    print("resumed exactly where it stopped (nothing skipped, nothing twice):", resumed_exactly)
    if not resumed_exactly:
        raise SystemExit("the consumer did not resume where it stopped")

    # The stream itself is untouched by reading: another label starts from the oldest.
    async with MpmcQueue(path, TTL) as events:
        items, _expired = await events.next("auditor", StartPosition.Oldest, max_elements=100)
        print(f"a new label 'auditor' still reads all {len(items)} events")


if __name__ == "__main__":
    # The queues go to the directory given, or to a temporary one removed at the end.
    with tempfile.TemporaryDirectory(prefix="rocksq_aio-resume-") as temporary:
        anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else temporary)
