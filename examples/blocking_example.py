"""The blocking face, written the way RocksQ programs are.

``rocksq_aio.blocking`` has RocksQ's classes and signatures: a program written
for ``rocksq.blocking`` runs after changing its import. Every call returns when
the operation is done (and on disk, unless the process crashes before RocksDB
flushes its log; pass ``sync=True`` for an fsync per write).

This example shows:

* a FIFO work queue with a capacity, fed and drained by threads;
* what happens on overflow: ``QueueFullError`` (a ``RuntimeError``, as RocksQ's
  errors are), with nothing written, where RocksQ silently drops the items;
* an MPMC stream read independently by two labels, and ``remove_label``;
* reopening: items, sizes and label positions survive.

Run it with ``python examples/blocking_example.py [directory]``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading

from rocksq_aio import QueueFullError, StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

WORKERS = 3
TASKS = 60


def fifo_work_queue(directory: str) -> None:
    path = os.path.join(directory, "tasks")
    with PersistentQueueWithCapacity(path, max_elements=TASKS) as tasks:
        # Items are bytes: serialize whatever you need (JSON here).
        tasks.push([json.dumps({"task": number}).encode() for number in range(TASKS)])
        print(f"pushed {tasks.len} tasks, {tasks.payload_size} bytes of payload")

        # The queue is at capacity: the push is refused as a whole. QueueFullError
        # derives from RuntimeError, so RocksQ-era `except RuntimeError` still works.
        try:
            tasks.push([b'{"task": "one too many"}'])
        except QueueFullError as error:
            print("queue full, push refused:", type(error).__name__, "| still", tasks.len)

        # Several threads drain the queue; each pop is atomic, so no task is
        # handed to two workers.
        done: dict[str, list[int]] = {}
        lock = threading.Lock()

        def worker(name: str) -> None:
            mine: list[int] = []
            while True:
                batch = tasks.pop(max_elements=4)
                if not batch:
                    break  # [] means empty
                mine.extend(json.loads(item)["task"] for item in batch)
            with lock:
                done[name] = mine

        threads = [threading.Thread(target=worker, args=(f"worker-{n}",)) for n in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        handled = sorted(task for mine in done.values() for task in mine)
        print(f"{WORKERS} worker threads handled {len(handled)} tasks, each once:", end=" ")
        print(handled == list(range(TASKS)))
        print("queue empty afterwards:", tasks.is_empty)

        # Leave two tasks in the queue for the next run.
        tasks.push([b"left for later 1", b"left for later 2"])

    with PersistentQueueWithCapacity(path, max_elements=TASKS) as tasks:
        print("after reopening:", tasks.len, "tasks waiting:", tasks.pop(max_elements=10))


def mpmc_stream(directory: str) -> None:
    path = os.path.join(directory, "log")
    # ttl: seconds each element is kept; 0 keeps them forever.
    with MpmcQueue(path, ttl=60) as log:
        log.add([b"boot", b"sensor ok", b"sensor warm"])
        # Every label reads the whole stream at its own pace. next() returns
        # (items, expired): expired is True once if elements this label had
        # not read yet were removed by the TTL.
        print("archiver:", log.next("archiver", StartPosition.Oldest, max_elements=10))
        print("monitor: ", log.next("monitor", StartPosition.Oldest, max_elements=1))
        # A new label at Newest skips the backlog (it starts at the last element).
        print("tail -f: ", log.next("tail", StartPosition.Newest, max_elements=10))
        log.add([b"sensor hot"])
        print("labels:", log.labels, "| elements stored:", log.len)
        print("tail was removed:", log.remove_label("tail"))

    with MpmcQueue(path, ttl=60) as log:
        print("after reopening, labels:", log.labels)
        print("monitor resumes:", log.next("monitor", StartPosition.Oldest, max_elements=10))
        print("archiver resumes:", log.next("archiver", StartPosition.Oldest, max_elements=10))


def main(directory: str) -> None:
    fifo_work_queue(directory)
    mpmc_stream(directory)


if __name__ == "__main__":
    # The queues go to the directory given, or to a temporary one removed at the end.
    with tempfile.TemporaryDirectory(prefix="rocksq_aio-blocking-") as temporary:
        main(sys.argv[1] if len(sys.argv) > 1 else temporary)
