"""Corrupted counters, positions and leases (edited in the raw column
families): refused at open with a QueueCorruptedError naming what is wrong,
changing nothing; a hole in the middle is reported when read.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rocksq_aio import StartPosition
from rocksq_aio.blocking import MpmcQueue, PersistentQueueWithCapacity

from support.faults import BASE, index_key, open_in_child, read_in_child
from support.rocksdb import raw_database

FIFO_STATE = struct.Struct(">QQQ")
POSITION = struct.Struct(">QB")


def dump(path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    with raw_database(path) as families:
        return {name: list(family.items()) for name, family in families.items()}


def _fifo_setup(path: Path) -> None:
    """Elements 0..4 pushed, element 0 popped: head 1, tail 5."""
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push(BASE)
        assert queue.pop() == BASE[:1]


def _mpmc_setup(path: Path) -> None:
    """Elements 0..4 added, label "reader" at 2."""
    with MpmcQueue(str(path), 0) as stream:
        stream.add(BASE)
        stream.next("reader", StartPosition.Oldest, 2)


def _payload(numbers: range) -> int:
    return len(BASE[0]) * len(numbers)  # every item is the same size


Corruption = Callable[[dict[str, Any]], None]


def _put(family: str, key: bytes, value: bytes) -> Corruption:
    def corrupt(families: dict[str, Any]) -> None:
        families[family][key] = value

    return corrupt


def _delete(family: str, *keys: bytes) -> Corruption:
    def corrupt(families: dict[str, Any]) -> None:
        for key in keys:
            del families[family][key]

    return corrupt


def _both(*steps: Corruption) -> Corruption:
    def corrupt(families: dict[str, Any]) -> None:
        for step in steps:
            step(families)

    return corrupt


def _mpmc_counters(head: int, tail: int) -> bytes:
    return FIFO_STATE.pack(head, tail, 2_000_000_000_000)


def _state(value: bytes) -> Corruption:
    """The counters (meta/state) replaced by ``value``."""
    return _put("meta", b"state", value)


def _position(value: bytes, label: bytes = b"reader") -> Corruption:
    return _put("positions", label, value)


def _case(case_id: str, corrupt: Corruption, message: str) -> Any:
    """A case of COUNTER_CASES; the queue kind is the id's first word."""
    return pytest.param(case_id.split("-")[0], corrupt, message, id=case_id)


COUNTER_CASES: list[Any] = [
    # FIFO: state = head, tail, payload size (24 bytes)
    _case("fifo-state-short", _state(b"\x00" * 23), "23 bytes"),
    _case("fifo-state-long", _state(b"\x00" * 25), "25 bytes"),
    _case("fifo-state-empty", _state(b""), "0 bytes"),
    _case("fifo-head-after-tail", _state(FIFO_STATE.pack(5, 1, 0)), "head 5 > tail 1"),
    _case(
        "fifo-tail-beyond-keys",
        _state(FIFO_STATE.pack(1, 9, _payload(range(1, 9)))),
        "ends at 9, but its last element is 4",
    ),
    # One-item pushes and pops leave the counters behind by at most 1024 changes
    # (SAVE_COUNTERS_EVERY): a key much further on was not written by them.
    _case(
        "fifo-key-far-past-tail",
        _put("data", index_key(5000), b"x"),
        r"\[1, 5\).*\[1, 5001\): more changed than can have gone unsaved",
    ),
    _case(
        "fifo-tail-far-past-keys",
        _state(FIFO_STATE.pack(1, 2000, _payload(range(1, 5)))),
        "ends at 2000",
    ),
    _case("fifo-tail-at-2**64", _state(FIFO_STATE.pack(1, 2**64 - 1, 10)), "ends at"),
    _case("fifo-head-at-2**64", _state(FIFO_STATE.pack(2**64 - 1, 1, 0)), "head"),
    _case("fifo-empty-with-payload", _state(FIFO_STATE.pack(5, 5, 77)), "payload"),
    # A missing head element looks like a pop whose counters were not saved yet.
    _case(
        "fifo-tail-element-missing",
        _delete("data", index_key(4)),
        "ends at 5, but its last element is 3",
    ),
    _case(
        "fifo-all-elements-missing",
        _both(
            _state(FIFO_STATE.pack(1, 2000, 10)),
            _delete("data", *(index_key(index) for index in range(1, 5))),
        ),
        "holds 1999 elements, but it stores none",
    ),
    _case("fifo-state-missing", _delete("meta", b"state"), "counters"),
    _case("fifo-kind-missing", _delete("meta", b"kind"), "kind|counters"),
    _case("fifo-kind-and-state-missing", _delete("meta", b"kind", b"state"), "counters"),
    _case("fifo-lease-key-short", _put("leased", b"\x01\x02", b"x"), "bytes"),
    # Head 1: one item can have gone out, not two.
    _case(
        "fifo-more-leases-than-taken",
        _both(
            _put("leased", index_key(0) + index_key(3), b"x"),
            _put("leased", index_key(1) * 2, b"y"),
        ),
        "2 leased items",
    ),
    # MPMC: counters = head, tail, newest timestamp; position = index (8) + flags (1)
    _case("mpmc-state-short", _state(b"\x00" * 16), "16 bytes"),
    _case("mpmc-head-after-tail", _state(_mpmc_counters(4, 2)), "head 4 > tail 2"),
    _case("mpmc-tail-beyond-keys", _state(_mpmc_counters(0, 9)), r"\[0, 9\)"),
    # One-item adds leave the saved tail behind by at most 1024 elements.
    _case(
        "mpmc-key-far-past-tail",
        _put("data", index_key(5000), b"\x00" * 8 + b"x"),
        "ends at 5, but it stores element 5000",
    ),
    _case(
        "mpmc-gap-before-a-key-past-tail",
        _put("data", index_key(7), b"\x00" * 8 + b"x"),
        "element 5 is missing",
    ),
    _case("mpmc-position-short", _position(index_key(2)), "8 bytes"),
    _case("mpmc-position-long", _position(index_key(2) + b"\x00\x00"), "10 bytes"),
    _case("mpmc-position-beyond-tail", _position(POSITION.pack(6, 0)), "position 6"),
    _case("mpmc-position-at-2**64", _position(POSITION.pack(2**64 - 1, 0)), "outside"),
    _case(
        "mpmc-position-before-head",
        _both(
            _state(_mpmc_counters(2, 5)),
            _delete("data", index_key(0), index_key(1)),
            _position(POSITION.pack(1, 0)),
        ),
        "position 1",
    ),
    _case("mpmc-position-unknown-flags", _position(POSITION.pack(2, 0x80)), "flags"),
    _case("mpmc-label-not-utf8", _position(POSITION.pack(2, 0), label=b"\xff\xfe"), "UTF-8"),
    _case(
        "mpmc-returned-truncated", _put("returned", b"reader", b"\x00\x00\x00\x09abc"), "truncated"
    ),
    _case(
        "mpmc-head-element-without-timestamp", _put("data", index_key(0), b"\x01\x02"), "timestamp"
    ),
]


@pytest.mark.parametrize(("kind", "corrupt", "message"), COUNTER_CASES)
def test_corrupted_counters_are_refused_at_open(
    tmp_path: Path, kind: str, corrupt: Corruption, message: str
) -> None:
    path = tmp_path / "queue"
    (_fifo_setup if kind == "fifo" else _mpmc_setup)(path)
    with raw_database(path) as families:
        corrupt(families)
    before = dump(path)
    result = open_in_child(kind, path)
    assert result.get("error") == "QueueCorruptedError", result
    assert re.search(message, result["message"]), result
    # A refused open changes nothing: the evidence stays for whoever investigates.
    assert dump(path) == before


def test_a_hole_in_the_middle_is_reported_when_read(tmp_path: Path) -> None:
    """Only the head and the tail are checked at open; a missing middle element must
    still never be skipped silently."""
    path = tmp_path / "queue"
    _fifo_setup(path)
    with raw_database(path) as families:
        del families["data"][index_key(3)]
    result = read_in_child("fifo", path)
    assert result["stage"] in ("open", "read"), result
    assert result.get("len") in (None, 4), result  # never a length made up or wrapped
    assert result["error"] == "QueueCorruptedError", result
    assert "3" in result["message"]
    assert result["items"] == BASE[1 : 1 + len(result["items"])]
