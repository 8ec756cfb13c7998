"""Child process of tests/rocksdb/test_cli_live.py: a service that keeps a queue busy.

Not a test module (pytest collects only ``test_*.py``). Usage::

    python live_writer.py fifo|mpmc PATH

``fifo`` runs a blocking ``PersistentQueueWithCapacity``, ``mpmc`` an async
``MpmcQueue`` (asyncio, TTL 2 s) with labels ``a``, ``b`` and ``c``. Both keep
appending, reading and reserving (acking or nacking later), in one-item calls
(format v2 leaves their counters unsaved), batches, and batches large enough
to be staged in several writes; now and then the memtables are flushed and the
data compacted, so that RocksDB replaces files under a reader.

Every item is the decimal number of the index it was appended at, padded with
``.``: the FIFO keeps a reservation only while nothing pops, so a nack puts
items back at their own indices, and in both queues the item at index ``i``
is always ``i``. The child checks everything it reads against that and exits
with status 1 at the first surprise.

Stdout: ``READY`` once the queue holds items and a reservation was made, ``OPS
<n>`` every 200 operations, and at the end one JSON line ``{"appended": N,
"head": H}`` (H, FIFO only: the next number a pop returns). A line on stdin
(or its end) stops the child; it settles what it holds and closes the queue.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
from typing import Any

BIG = 600 * 1024
"""Three such items make a write over the 1 MiB batch limit: it is staged."""
PAUSE = 0.001
"""Seconds between two operations: a busy service, not a benchmark."""


def item(number: int, size: int = 0) -> bytes:
    text = b"%d" % number
    return text + b"." * max(0, size - len(text))


def number_of(value: bytes) -> int:
    return int(value.split(b".", 1)[0])


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    say(f"FAILED {message}")
    sys.exit(1)


def watch_stdin() -> threading.Event:
    stop = threading.Event()

    def wait() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait, daemon=True).start()
    return stop


def churn_files(engine: Any) -> None:
    """Flush every memtable and compact the data: files come and go under readers.

    Reaches into the engine: only a test may (the library has no such call).
    """
    families = engine._store._families
    for family in families.values():
        family.flush()
    families["data"].compact_range(None, None)


def run_fifo(path: str, stop: threading.Event) -> dict[str, int]:
    from rocksq_aio.blocking import PersistentQueueWithCapacity

    rng = random.Random(1)
    queue = PersistentQueueWithCapacity(path, 1_000_000)
    appended = 0  # == the tail: the next index, and so the next number
    head = 0  # the number the next pop returns
    reservation = None
    ops = 0

    def push(count: int, size: int = 0) -> None:
        nonlocal appended
        queue.push([item(appended + offset, size) for offset in range(count)])
        appended += count

    def check(values: list[bytes], first: int) -> None:
        numbers = [number_of(value) for value in values]
        if numbers != list(range(first, first + len(values))):
            fail(f"read {numbers[:5]}..., expected from {first}")

    push(50)
    reservation = queue.reserve_batch(3)
    check(reservation.items, head)
    head += 3
    say("READY")
    while not stop.is_set():
        ops += 1
        choice = rng.random()
        if ops % 250 == 0:
            push(3, BIG)
        elif choice < 0.4:
            push(1)
        elif choice < 0.55:
            push(rng.randint(2, 20))
        elif reservation is not None:
            # Pops would move the head under the reservation: settle it first,
            # some time later.
            if rng.random() < 0.2:
                if rng.random() < 0.5:
                    reservation.ack()
                else:
                    reservation.nack()
                    head -= len(reservation.items)
                reservation = None
        elif choice < 0.85:
            count = 1 if rng.random() < 0.6 else rng.randint(2, 10)
            values = queue.pop(count)
            check(values, head)
            head += len(values)
        else:
            reservation = queue.reserve_batch(rng.randint(1, 5))
            check(reservation.items, head)
            head += len(reservation.items)
        if ops % 300 == 0:
            churn_files(queue._engine)
        if ops % 200 == 0:
            say(f"OPS {ops}")
        time.sleep(PAUSE)
    if reservation is not None:
        reservation.ack()
    queue.close()
    return {"appended": appended, "head": head}


async def run_mpmc(path: str, stop: threading.Event) -> dict[str, int]:
    import rocksq_aio

    rng = random.Random(2)
    appended = 0
    seen = {"a": -1, "b": -1}
    ops = 0
    async with rocksq_aio.MpmcQueue(path, 2.0) as queue:

        async def add(count: int, size: int = 0) -> None:
            nonlocal appended
            await queue.add([item(appended + offset, size) for offset in range(count)])
            appended += count

        def check(label: str, values: list[bytes], expired: bool) -> None:
            numbers = [number_of(value) for value in values]
            if any(number >= appended for number in numbers):
                fail(f"{label} read {numbers[:5]}..., never appended")
            if label not in seen:
                return  # items nacked in any order come back first, in any order
            if numbers != sorted(set(numbers)):
                fail(f"{label} read {numbers[:5]}... out of order")
            # A label's first read starts at the head, wherever expiry left it.
            last = seen[label]
            skipped = numbers and last >= 0 and numbers[0] != last + 1
            if skipped and (numbers[0] <= last or not expired):
                fail(f"{label} read {numbers[0]} after {last} (expired: {expired})")
            if numbers:
                seen[label] = numbers[-1]

        await add(50)
        reserved = [await queue.reserve_batch("c", max_elements=3)]
        say("READY")
        while not stop.is_set():
            ops += 1
            choice = rng.random()
            if ops % 250 == 0:
                await add(3, BIG)
            elif choice < 0.35:
                await add(1)
            elif choice < 0.5:
                await add(rng.randint(2, 20))
            elif choice < 0.8:
                label = rng.choice(["a", "b"])
                values, expired = await queue.next(label, max_elements=rng.choice([1, 1, 7]))
                check(label, values, expired)
            elif choice < 0.9 or not reserved:
                batch = await queue.reserve_batch("c", max_elements=rng.randint(1, 5))
                check("c", batch.items, False)
                reserved.append(batch)
            else:
                batch = reserved.pop(rng.randrange(len(reserved)))
                await (batch.ack() if rng.random() < 0.5 else batch.nack())
            if ops % 300 == 0:
                churn_files(queue._engine)
            if ops % 200 == 0:
                say(f"OPS {ops}")
            await asyncio.sleep(PAUSE)
        for batch in reserved:
            await batch.ack()
    return {"appended": appended}


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    stop = watch_stdin()
    result = run_fifo(path, stop) if kind == "fifo" else asyncio.run(run_mpmc(path, stop))
    say(json.dumps(result))


if __name__ == "__main__":
    main()
