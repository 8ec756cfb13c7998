"""Child process of tests/rocksdb/test_crash.py: works on a queue until it is killed with SIGKILL.

Not a test module (pytest collects only ``test_*.py``). Usage::

    python crash_child.py '<json config>'

The config names the ``mode`` (``push``, ``pop``, ``mpmc``, or ``create``: just
create a new queue of ``kind`` ``fifo`` or ``mpmc``, reporting ``OPENING`` first), the ``face``
(``blocking`` or ``async``, with an anyio ``backend``), the queue ``path``, the
first number to append (``base``), a random ``seed``, the largest batch
(``max_batch``), the size of every item (``item_size``), ``fixed_batch``
(always ``max_batch`` items), the queue's ``batch_bytes`` and, for the async
face, how many concurrent ``writers`` and ``readers`` to run.

The child reports on stdout, one line per event, each written with a single
``os.write`` (so a line is in the pipe entirely or not at all)::

    READY                      the queue is open
    B <first> <count>          an append (push/add) of numbers first..first+count-1 is called
    P <first> <count>          ... and returned
    b <reader> <max>           a read (pop/next) of at most <max> items is called by <reader>
    p <reader> <n> <n> ...     ... and returned these numbers

An ``B``/``b`` line is written before the call is made and the ``P``/``p`` line
only after it returned, so the parent knows exactly which operations completed
and which one(s) were in flight when the child died. The child never exits on
its own.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

# Run as a script, this file's folder is on sys.path, not tests/ (support's parent).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.items import item_number, make_item


def report(line: str) -> None:
    os.write(1, line.encode() + b"\n")


class Numbers:
    """Hands out consecutive item numbers, in call order."""

    def __init__(self, base: int) -> None:
        self.next = base

    def take(self, count: int) -> int:
        first = self.next
        self.next += count
        return first


def batch_size(config: dict[str, Any], rng: random.Random) -> int:
    maximum: int = config["max_batch"]
    return maximum if config["fixed_batch"] else rng.randint(1, maximum)


def queue_options(config: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if config.get("batch_bytes"):
        options["batch_bytes"] = config["batch_bytes"]
    return options


# ---------------------------------------------------------------- blocking face


def run_blocking(config: dict[str, Any]) -> None:
    from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

    rng = random.Random(config["seed"])
    numbers = Numbers(config["base"])
    size = config["item_size"]
    mode = config["mode"]
    queue: Any
    append: Callable[[list[bytes]], None]
    read: Callable[[int], list[bytes]]
    if mode == "mpmc":
        queue = MpmcQueue(config["path"], 0, **queue_options(config))
        append = queue.add

        def read(count: int) -> list[bytes]:
            items: list[bytes] = queue.next("reader", max_elements=count)[0]
            return items

    else:
        queue = PersistentQueueWithCapacity(config["path"], **queue_options(config))
        append, read = queue.push, queue.pop
    report("READY")
    while True:
        if mode == "push" or (mode == "mpmc" and rng.random() < 0.5):
            count = batch_size(config, rng)
            first = numbers.take(count)
            items = [make_item(number, size) for number in range(first, first + count)]
            report(f"B {first} {count}")
            append(items)
            report(f"P {first} {count}")
        else:
            count = rng.randint(1, config["max_batch"])
            report(f"b 0 {count}")
            got = read(count)
            report(" ".join(["p", "0", *(str(item_number(item)) for item in got)]))
            if not got:
                time.sleep(0.002)


# ---------------------------------------------------------------- async face


def run_async(config: dict[str, Any]) -> None:
    import anyio

    import rocksq_aio

    mode = config["mode"]
    size = config["item_size"]
    numbers = Numbers(config["base"])

    async def writer(queue: Any, seed: float) -> None:
        rng = random.Random(seed)
        append = queue.add if mode == "mpmc" else queue.push
        while True:
            count = batch_size(config, rng)
            # Numbers are taken and the call is submitted with no await in
            # between: the queue sees the appends in number order.
            first = numbers.take(count)
            items = [make_item(number, size) for number in range(first, first + count)]
            report(f"B {first} {count}")
            await append(items)
            report(f"P {first} {count}")
            if mode == "mpmc":
                await anyio.sleep(0.0005)

    async def reader(queue: Any, seed: float, index: int) -> None:
        rng = random.Random(seed)
        while True:
            count = rng.randint(1, config["max_batch"])
            report(f"b {index} {count}")
            if mode == "mpmc":
                got, _expired = await queue.next("reader", max_elements=count)
            else:
                got = await queue.pop(count)
            report(" ".join(["p", str(index), *(str(item_number(item)) for item in got)]))
            if not got:
                await anyio.sleep(0.002)

    async def main() -> None:
        queue: Any
        if mode == "mpmc":
            queue = rocksq_aio.MpmcQueue(config["path"], 0, **queue_options(config))
        else:
            queue = rocksq_aio.PersistentQueue(config["path"], **queue_options(config))
        rng = random.Random(config["seed"])
        async with queue, anyio.create_task_group() as tasks:
            if mode in ("push", "mpmc"):
                for _ in range(config["writers"]):
                    tasks.start_soon(writer, queue, rng.random())
            if mode in ("pop", "mpmc"):
                for index in range(config["readers"]):
                    tasks.start_soon(reader, queue, rng.random(), index)
            report("READY")

    anyio.run(main, backend=config["backend"])


def run_create(config: dict[str, Any]) -> None:
    """Create a new queue (the parent kills the child while it does)."""
    from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

    report("OPENING")
    if config["kind"] == "mpmc":
        MpmcQueue(config["path"], 0)
    else:
        PersistentQueueWithCapacity(config["path"])
    report("READY")
    while True:
        time.sleep(1)


def main() -> None:
    config = json.loads(sys.argv[1])
    if config["mode"] == "create":
        run_create(config)
    elif config["face"] == "blocking":
        run_blocking(config)
    else:
        run_async(config)


if __name__ == "__main__":
    main()
