"""Child process of tests/rocksdb/test_power_loss.py: works on a queue until it is SIGKILLed.

Not a test module. Usage: ``python power_loss_child.py '<json config>'`` with
``mode`` (``push``, ``add``, ``pop`` or ``next``), ``path``, ``sync``,
``batch_bytes``, ``item_size``, ``max_batch`` (items per append, or the
largest read), ``base`` (first number to append) and ``seed``.

It reports on stdout, one line per event, each written with one ``os.write``::

    READY                  the queue is open
    B <first> <count>      an append of numbers first..first+count-1 is called
    P <first> <count>      ... and returned
    b                      a read is called
    p <n> <n> ...          ... and returned these numbers (a line "p" alone: empty)
    BAD <n> <n> ...        ... but an item was not what was pushed as that number

A ``P``/``p`` line is written only after the call returned, so the parent
knows which operations completed. When a read finds nothing the child writes
``EMPTY`` and waits to be killed; it never exits on its own.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

# Run as a script, this file's folder is on sys.path, not tests/ (support's parent).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.items import make_item


def report(line: str) -> None:
    os.write(1, line.encode() + b"\n")


def main() -> None:
    config = json.loads(sys.argv[1])
    # Imported here so that the parent can import make_item without the package.
    from rocksq_aio import StartPosition
    from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

    mode = config["mode"]
    rng = random.Random(config["seed"])
    size = config["item_size"]
    max_batch = config["max_batch"]
    queue: PersistentQueueWithCapacity | MpmcQueue
    if mode in ("push", "pop"):
        queue = PersistentQueueWithCapacity(
            config["path"], sync=config["sync"], batch_bytes=config["batch_bytes"]
        )
    else:
        queue = MpmcQueue(config["path"], 0, sync=config["sync"], batch_bytes=config["batch_bytes"])
    report("READY")
    number = config["base"]
    while True:
        count = rng.randint(1, max_batch)
        if mode in ("push", "add"):
            items = [make_item(n, size) for n in range(number, number + count)]
            report(f"B {number} {count}")
            if isinstance(queue, PersistentQueueWithCapacity):
                queue.push(items)
            else:
                queue.add(items)
            report(f"P {number} {count}")
            number += count
            continue
        report("b")
        if isinstance(queue, PersistentQueueWithCapacity):
            got = queue.pop(max_elements=count)
        else:
            got, _expired = queue.next("reader", StartPosition.Oldest, count)
        numbers = [int(item[:8]) for item in got]
        if any(item != make_item(n, size) for n, item in zip(numbers, got, strict=True)):
            report("BAD " + " ".join(map(str, numbers)))
        report(" ".join(["p", *map(str, numbers)]))
        if not got:
            report("EMPTY")
            while True:
                time.sleep(60)


if __name__ == "__main__":
    main()
