"""Quickstart: queues that survive a restart, with the async API.

Run with ``make demo``; pass a directory to keep the queues there instead of a
temporary directory. The same program runs on asyncio, uvloop and trio.
"""

from __future__ import annotations

import os
import sys
import tempfile

import anyio

import rocksq_aio
from rocksq_aio import StartPosition


async def main(directory: str) -> None:
    jobs_path = os.path.join(directory, "jobs")
    async with rocksq_aio.PersistentQueue(jobs_path, max_elements=1000) as jobs:
        await jobs.push([b"resize frame 1", b"resize frame 2", b"resize frame 3"])
        print("pushed 3 jobs, queue length", jobs.len)
    # The process could die here: the jobs are on disk.
    async with rocksq_aio.PersistentQueue(jobs_path, max_elements=1000) as jobs:
        print("after reopening:", jobs.len, "jobs,", jobs.payload_size, "bytes")
        print("popped", await jobs.pop(max_elements=2))
        print("left", jobs.len)
        # At-least-once: the job is removed only if the block succeeds.
        async with jobs.reserve(max_elements=1) as items:
            print("processing", items)
        # A waiting consumer is woken by the producer, without polling.
        async with anyio.create_task_group() as group:

            async def consumer() -> None:
                print("consumer got", await jobs.pop_wait(timeout=5))

            group.start_soon(consumer)
            await anyio.sleep(0.01)
            await jobs.push([b"resize frame 4"])

    events_path = os.path.join(directory, "events")
    async with rocksq_aio.MpmcQueue(events_path, ttl=3600) as events:
        await events.add([b"camera-1 online", b"camera-2 online"])
        print("archiver reads", await events.next("archiver", StartPosition.Oldest, 10))
        print("alerts reads  ", await events.next("alerts", StartPosition.Oldest, 1))
    async with rocksq_aio.MpmcQueue(events_path, ttl=3600) as events:
        print("labels after reopening", events.labels)
        print("alerts resumes", await events.next("alerts", StartPosition.Oldest, 10))


if __name__ == "__main__":
    # The queues go to the directory given, or to a temporary one removed at the end.
    with tempfile.TemporaryDirectory(prefix="rocksq_aio-demo-") as temporary:
        anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else temporary)
