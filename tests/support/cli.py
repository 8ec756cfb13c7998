"""Running the command-line tool in this process, for the CLI tests, and the
queues they inspect (tests/rocksdb/conftest.py makes fixtures of them).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity
from rocksq_aio.cli import EXIT_OK, main

from support.clock import FakeClock

Oldest = StartPosition.Oldest


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """``main([...])``: its exit code, stdout and stderr."""
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: object) -> Any:
    """The JSON a successful command printed."""
    code, out, err = run(capsys, *args)
    assert code == EXIT_OK, err
    return json.loads(out)


def build_fifo(path: str) -> None:
    """A FIFO queue: items b'a' (popped), b'line\\nbreak', b'', 0..255."""
    with PersistentQueueWithCapacity(path) as queue:
        queue.push([b"a", b"line\nbreak", b"", bytes(range(256))])
        queue.pop()


def build_mpmc(path: str, clock: FakeClock) -> None:
    """An MPMC queue with expired elements, labels, an expiry report and a hand-back."""
    with MpmcQueue(path, 10, clock=clock) as queue:
        queue.add([b"old-0", b"old-1", b"old-2"])
        queue.next("slow", Oldest, 1)
        queue.next("done", Oldest, 3)
        clock.advance(20)  # the old elements expire at the next add
        queue.add([b"new-0", b"", b"new\n2"])
        clock.advance(1.5)
        queue.add([bytes(range(256)), b"last"])
        queue.next("mid", Oldest, 2)
        queue.reserve_batch("mid", max_elements=1).nack()  # handed back: read first
        queue.next("fresh", Oldest, 1)


def drain_labels(path: str, labels: list[str]) -> dict[str, tuple[list[bytes], bool]]:
    """Everything each label reads from now on (items handed back come first, in a
    read of their own), and whether it was told that elements expired."""
    result = {}
    with MpmcQueue(path, 0) as queue:
        for label in labels:
            everything: list[bytes] = []
            told = False
            while True:
                items, expired = queue.next(label, Oldest, 1000)
                everything += items
                told = told or expired
                if not items:
                    break
            result[label] = (everything, told)
    return result
