"""The nonblocking face: operations return a Response at once.

``rocksq_aio.nonblocking`` mirrors ``rocksq.nonblocking``: ``push``, ``pop``,
``add``, ``next`` and ``remove_label`` hand the operation to the queue's worker
thread and return a Response right away. A Response offers:

* ``is_ready``: has the operation finished?
* ``try_get()``: the result if finished, else ``None`` (never waits);
* ``get()``: wait for the result. It raises the operation's error: a push
  over capacity raises ``QueueFullError`` here (RocksQ drops it silently);
* ``await response``: the same, in async code, without blocking the event
  loop. (``get()`` on an event loop's thread raises ``QueueError`` instead of
  freezing the loop.)

Results come as a ``ResponseVariant`` (``data``, ``len``, ``size``) or, for the
MPMC queue, an ``MpmcResponseVariant`` (``data`` = (items, expired),
``labels``, ``removed_label``, ``len``, ``size``).

Issuing many operations before waiting for any lets the worker commit them
together: a cheap way to get high throughput from plain synchronous code.

Run it with ``python examples/nonblocking_example.py [directory]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import anyio

from rocksq_aio import QueueError, QueueFullError, StartPosition
from rocksq_aio.nonblocking import (
    MpmcQueue,
    PersistentQueueWithCapacity,
    Response,
)


def fifo_with_responses(path: str) -> None:
    # Arguments as in RocksQ: path, max_elements, max_inflight_ops. Beyond
    # max_inflight_ops unfinished operations, a call waits for a free slot.
    with PersistentQueueWithCapacity(path, 1000, 100) as queue:
        # Fire off 200 pushes without waiting: they are committed in groups.
        pushes: list[Response] = [queue.push([f"reading {n}".encode()]) for n in range(200)]
        finished = sum(response.is_ready for response in pushes)
        print(f"issued 200 pushes; {finished} finished so far")
        for response in pushes:
            response.get()  # waits; a push has no result, only maybe an error
        print("all 200 pushes done:", all(response.is_ready for response in pushes))

        # len, payload_size and disk_size are Responses too (ready at once).
        print("len:", queue.len.get().len, "| payload bytes:", queue.payload_size.get().size)
        disk_size = queue.disk_size.get().size
        print("on disk: more than 0 bytes:", disk_size is not None and disk_size > 0)

        # Poll with try_get() while doing something else.
        response = queue.pop(3)
        polls = 0
        while (variant := response.try_get()) is None:
            polls += 1
            time.sleep(0.0001)  # ... other work would go here ...
        print(f"try_get() result (after {polls} polls that returned None):", variant.data)

        # Pops issued back to back are served in order, exactly.
        pops = [queue.pop(max_elements=size) for size in (1, 2, 3)]
        print("three back-to-back pops:", [pop.get().data for pop in pops])

        # Over capacity: the error comes out of get(); nothing was written.
        refused = queue.push([b"x"] * 1000)
        try:
            refused.get()
        except QueueFullError as error:
            print("push over capacity refused:", type(error).__name__)
        print("len after the refused push:", queue.len.get().len)


def mpmc_with_responses(path: str) -> None:
    # Arguments as in RocksQ: path, ttl (seconds, 0 = forever), max_inflight_ops.
    with MpmcQueue(path, 600, 100) as stream:
        stream.add([b"frame-1", b"frame-2", b"frame-3"])  # Response ignored: that's fine
        first = stream.next("detector", StartPosition.Oldest, max_elements=2)
        second = stream.next("recorder", StartPosition.Oldest, max_elements=10)
        # Operations run in the order they were issued, so the add came first.
        items, expired = first.get().data or ([], False)
        print("detector got", items, "expired:", expired)
        print("recorder got", (second.get().data or ([], False))[0])
        print("labels:", stream.labels.get().labels)
        print("removed recorder:", stream.remove_label("recorder").get().removed_label)
        print("labels now:", stream.labels.get().labels)


async def awaiting_responses(path: str, loop_name: str) -> None:
    with PersistentQueueWithCapacity(path, 1000, 100) as queue:
        await queue.push([b"async-1", b"async-2", b"async-3"])
        variant = await queue.pop(2)  # waits without blocking the event loop
        print(f"[{loop_name}] awaited pop:", variant.data)

        response = queue.pop(5)
        try:
            response.get()  # would freeze the loop: refused
        except QueueError:
            print(f"[{loop_name}] get() inside the event loop refused, use `await`")
        print(f"[{loop_name}] awaited the same response:", (await response).data)


def main(directory: str) -> None:
    fifo_with_responses(os.path.join(directory, "readings"))
    mpmc_with_responses(os.path.join(directory, "frames"))
    anyio.run(awaiting_responses, os.path.join(directory, "async"), "asyncio")
    # The same code on trio (uvloop: anyio.run(..., backend_options={"use_uvloop": True})).
    anyio.run(awaiting_responses, os.path.join(directory, "async-trio"), "trio", backend="trio")


if __name__ == "__main__":
    # The queues go to the directory given, or to a temporary one removed at the end.
    with tempfile.TemporaryDirectory(prefix="rocksq_aio-nonblocking-") as temporary:
        main(sys.argv[1] if len(sys.argv) > 1 else temporary)
