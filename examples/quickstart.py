"""Quickstart: a FIFO queue and an MPMC stream that survive a restart.

Run with ``make demo``; pass a directory to keep the queues there instead of a
temporary directory.
"""

from __future__ import annotations

import os
import sys
import tempfile

from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity


def main(directory: str) -> None:
    fifo_path = os.path.join(directory, "jobs")
    with PersistentQueueWithCapacity(fifo_path, max_elements=1000) as jobs:
        jobs.push([b"resize frame 1", b"resize frame 2", b"resize frame 3"])
        print("pushed 3 jobs, queue length", jobs.len)
    # The process could die here: the jobs are on disk.
    with PersistentQueueWithCapacity(fifo_path, max_elements=1000) as jobs:
        print("after reopening:", jobs.len, "jobs,", jobs.payload_size, "bytes")
        print("popped", jobs.pop(max_elements=2))
        print("left", jobs.len)

    stream_path = os.path.join(directory, "events")
    with MpmcQueue(stream_path, ttl=3600) as events:
        events.add([b"camera-1 online", b"camera-2 online"])
        print("archiver reads", events.next("archiver", StartPosition.Oldest, max_elements=10))
        print("alerts reads  ", events.next("alerts", StartPosition.Oldest, max_elements=1))
    with MpmcQueue(stream_path, ttl=3600) as events:
        print("labels after reopening", events.labels)
        print("alerts resumes", events.next("alerts", StartPosition.Oldest, max_elements=10))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="rocksq_aio-demo-") as temporary:
            main(temporary)
