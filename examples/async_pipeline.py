"""An async producer/consumer pipeline on a persistent FIFO queue.

Three producers ``await queue.push(...)`` jobs into one queue while two
consumers take them out: one with ``async for job in queue`` (one at a time),
the other with ``await queue.pop_wait(...)`` (in batches). Neither consumer
polls: they sleep until a push commits new jobs. Everything runs in anyio task
groups, so the same program works on asyncio, uvloop and trio.

The queue has a small capacity to show backpressure: a push that does not fit
raises ``QueueFullError`` (writing nothing) and the producer retries a moment
later, once the consumers have made room.

Run it with ``python examples/async_pipeline.py [directory]``; without a
directory the queue lives in a temporary directory.
"""

from __future__ import annotations

import os
import sys
import tempfile

import anyio

from rocksq_aio import PersistentQueue, QueueFullError

PRODUCERS = 3
JOBS_PER_PRODUCER = 100
BATCH = 5  # jobs per push
CAPACITY = 40  # small on purpose: producers will meet a full queue


class Finish:
    """Sets an event once ``expected`` jobs have been processed."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.processed = 0
        self.event = anyio.Event()

    def count(self, jobs: int = 1) -> None:
        self.processed += jobs
        if self.processed >= self.expected:
            self.event.set()


async def producer(queue: PersistentQueue, name: str, stats: dict[str, int]) -> None:
    """Push this producer's jobs in batches of BATCH, retrying while the queue is full."""
    for first in range(0, JOBS_PER_PRODUCER, BATCH):
        batch = [f"{name}:job-{number:03d}".encode() for number in range(first, first + BATCH)]
        while True:
            try:
                # Atomic: either the whole batch is stored, or nothing is.
                await queue.push(batch)
                break
            except QueueFullError:
                stats["full"] += 1
                await anyio.sleep(0.001)  # let the consumers make room


async def iterating_consumer(queue: PersistentQueue, done: list[bytes], finished: Finish) -> None:
    """Takes one job at a time; the loop waits (without polling) when the queue is empty."""
    async for job in queue:
        done.append(job)
        finished.count()


async def batch_consumer(queue: PersistentQueue, done: list[bytes], finished: Finish) -> None:
    """Takes up to 10 jobs per call; pop_wait returns as soon as at least one is there."""
    while True:
        jobs = await queue.pop_wait(max_elements=10)
        done.extend(jobs)
        finished.count(len(jobs))
        await anyio.sleep(0)  # be fair to the other consumer


async def main(directory: str) -> None:
    path = os.path.join(directory, "pipeline")
    total = PRODUCERS * JOBS_PER_PRODUCER
    by_iterator: list[bytes] = []
    by_batches: list[bytes] = []
    stats = {"full": 0}
    finished = Finish(total)

    async with PersistentQueue(path, max_elements=CAPACITY) as queue:
        async with anyio.create_task_group() as consumers:
            consumers.start_soon(iterating_consumer, queue, by_iterator, finished)
            consumers.start_soon(batch_consumer, queue, by_batches, finished)

            async with anyio.create_task_group() as producers:
                for number in range(PRODUCERS):
                    producers.start_soon(producer, queue, f"producer-{number}", stats)
            print(f"producers done: {total} jobs pushed in batches of {BATCH}")

            # The consumers loop forever: stop them once every job was processed.
            await finished.event.wait()
            consumers.cancel_scope.cancel()

        processed = by_iterator + by_batches
        print(f"async-for consumer processed {len(by_iterator)} jobs")
        print(f"pop_wait consumer processed {len(by_batches)} jobs")
        print(f"the queue was full {stats['full']} times (capacity {CAPACITY}); pushes retried")

        # Every job exactly once...
        expected = {
            f"producer-{p}:job-{n:03d}".encode()
            for p in range(PRODUCERS)
            for n in range(JOBS_PER_PRODUCER)
        }
        exactly_once = len(processed) == total and set(processed) == expected
        print(f"pipeline processed {len(processed)} of {total} jobs, each exactly once:", end=" ")
        print(exactly_once)
        # ...and, the queue being FIFO, each consumer saw every producer's jobs in order.
        in_order = all(in_push_order(jobs) for jobs in (by_iterator, by_batches))
        print("each consumer got each producer's jobs in push order:", in_order)
        print("jobs left in the queue:", queue.len)
        if not exactly_once or not in_order or queue.len != 0:
            raise SystemExit("the pipeline lost, duplicated or reordered jobs")


def in_push_order(jobs: list[bytes]) -> bool:
    """True if, for every producer, its jobs appear in increasing job number."""
    last: dict[bytes, bytes] = {}
    for job in jobs:
        name, number = job.split(b":")
        if name in last and last[name] >= number:
            return False
        last[name] = number
    return True


if __name__ == "__main__":
    # The queues go to the directory given, or to a temporary one removed at the end.
    with tempfile.TemporaryDirectory(prefix="rocksq_aio-pipeline-") as temporary:
        anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else temporary)
