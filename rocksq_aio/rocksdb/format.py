"""The on-disk format of RocksDB queues: column families, keys and value codecs.

Layout (column families):

* ``data``: key = 8-byte big-endian element index, so RocksDB order is queue
  order. FIFO value = the item; MPMC value = 8-byte big-endian timestamp in
  milliseconds followed by the item.
* ``meta``: ``kind`` (the format: which queue and which version), ``state``
  (the counters) and, only while a large write is half done, ``staging``
  (see ``store.Store.apply``).
* ``positions`` (MPMC): key = UTF-8 label, value = 8-byte index of the next
  element to read + 1 byte of flags.
* ``returned`` (MPMC): key = UTF-8 label, value = items given back to a label
  that had read further meanwhile, served to its next read first.
* ``leased``: reservations not yet settled. FIFO: key = 8-byte reservation
  number + 8-byte index the item had, value = the item (older directories have
  8-byte keys, the index alone, read as reservation 0).
  The index only orders a reservation's items: a nack puts items back below
  the head, under indices a later reservation may still hold leases on, so
  the index alone is no key. MPMC: key = label (length-prefixed) + reservation
  number, value = the items.

Format v2: the FIFO one-item push and pop, and the MPMC one-item add, write
only their data key, so the saved counters may lag behind the keys; they are a
starting point from which ``plan.recovered_fifo_bounds`` and
``plan.recovered_mpmc_tail`` find the true head and tail at open. Every other
write saves the counters with it, and so does a clean close.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from .._errors import QueueCorruptedError

DATA_CF = "data"
META_CF = "meta"
POSITIONS_CF = "positions"
GIVEN_BACK_CF = "returned"
RESERVED_CF = "leased"

FORMAT_KEY = b"kind"
STATE_KEY = b"state"
STAGING_KEY = b"staging"
FIFO_FORMAT = b"rocksq_aio.fifo.v2"
FIFO_FORMAT_V1 = b"rocksq_aio.fifo.v1"
"""Counters always exact; read, and upgraded to v2 at the first open."""
FIFO_FORMATS = (FIFO_FORMAT, FIFO_FORMAT_V1)
MPMC_FORMAT = b"rocksq_aio.mpmc.v2"
MPMC_FORMAT_V1 = b"rocksq_aio.mpmc.v1"
"""Counters always exact; read, and upgraded to v2 at the first open."""
MPMC_FORMATS = (MPMC_FORMAT, MPMC_FORMAT_V1)

FIFO_COLUMN_FAMILIES = (DATA_CF, META_CF, RESERVED_CF)
MPMC_COLUMN_FAMILIES = (DATA_CF, META_CF, POSITIONS_CF, GIVEN_BACK_CF, RESERVED_CF)

MAX_INDEX = 2**64 - 1

_INDEX = struct.Struct(">Q")
_FIFO_STATE = struct.Struct(">QQQ")  # head, tail, payload_size
_MPMC_STATE = struct.Struct(">QQQ")  # head, tail, timestamp of the newest element (ms)
_POSITION = struct.Struct(">QB")  # next index to read, flags
_TIMESTAMP = struct.Struct(">Q")
_STAGED_RANGE = struct.Struct(">QQ")  # start, stop
TIMESTAMP_BYTES = _TIMESTAMP.size
encode_timestamp = _TIMESTAMP.pack
_EXPIRED_UNSEEN = 1

encode_index = _INDEX.pack


def decode_index(key: bytes) -> int:
    if len(key) != _INDEX.size:
        raise QueueCorruptedError(f"data key of {len(key)} bytes, expected {_INDEX.size}")
    index: int = _INDEX.unpack(key)[0]
    return index


_FIFO_LEASE = struct.Struct(">QQ")  # reservation number, index the item had


def encode_fifo_lease_key(number: int, index: int) -> bytes:
    return _FIFO_LEASE.pack(number, index)


def decode_fifo_lease_key(key: bytes) -> tuple[int, int]:
    """(reservation number, index) of a FIFO lease key; an old 8-byte key is reservation 0."""
    if len(key) == _FIFO_LEASE.size:
        number, index = _FIFO_LEASE.unpack(key)
        return number, index
    if len(key) == _INDEX.size:
        return 0, _INDEX.unpack(key)[0]
    raise QueueCorruptedError(
        f"lease key of {len(key)} bytes, expected {_FIFO_LEASE.size} (or {_INDEX.size})"
    )


def encode_staged_range(start: int, stop: int) -> bytes:
    return _STAGED_RANGE.pack(start, stop)


def decode_staged_range(raw: bytes) -> tuple[int, int]:
    if len(raw) != _STAGED_RANGE.size:
        raise QueueCorruptedError(
            f"staging marker is {len(raw)} bytes long, expected {_STAGED_RANGE.size}"
        )
    start, stop = _STAGED_RANGE.unpack(raw)
    if start >= stop:
        raise QueueCorruptedError(f"staging marker names an empty range [{start}, {stop})")
    return start, stop


# ---------------------------------------------------------------- FIFO


PAYLOAD_UNKNOWN = 1 << 63
"""The payload size of a FIFO queue recovered after an unclean shutdown, until
someone asks for it (counting it means reading every element). Pushes and pops
go on adding and subtracting sizes, so any value from ``PAYLOAD_UNKNOWN_FLOOR``
up, in memory or in the saved counters, means "unknown"."""
PAYLOAD_UNKNOWN_FLOOR = 1 << 62


class FifoState(NamedTuple):
    # A NamedTuple: immutable and several times cheaper to build than a
    # frozen dataclass, which matters on the one-item push/pop path.
    head: int = 0
    tail: int = 0
    payload_size: int = 0

    @property
    def length(self) -> int:
        return self.tail - self.head


def encode_fifo_state(state: FifoState) -> bytes:
    return _FIFO_STATE.pack(*state)


pack_fifo_counters = _FIFO_STATE.pack
"""``pack_fifo_counters(head, tail, payload_size)``: encode_fifo_state for the hot path."""


def decode_fifo_state(raw: bytes) -> FifoState:
    if len(raw) != _FIFO_STATE.size:
        raise QueueCorruptedError(
            f"FIFO counters are {len(raw)} bytes long, expected {_FIFO_STATE.size}"
        )
    head, tail, payload_size = _FIFO_STATE.unpack(raw)
    if head > tail:
        raise QueueCorruptedError(f"FIFO counters say head {head} > tail {tail}")
    if head == tail and 0 < payload_size < PAYLOAD_UNKNOWN_FLOOR:
        raise QueueCorruptedError(f"FIFO is empty but its payload size is {payload_size}")
    return FifoState(head, tail, payload_size)


# ---------------------------------------------------------------- MPMC


@dataclass(frozen=True, slots=True)
class LabelPosition:
    index: int
    """The next element this label reads."""
    expired_unseen: bool = False
    """Elements this label had not read were removed by TTL; reported once by next()."""


_NO_POSITIONS: Mapping[str, LabelPosition] = MappingProxyType({})


class MpmcState(NamedTuple):
    # A NamedTuple for the same reason as FifoState. ``positions`` is never
    # changed in place: plans build a new mapping.
    head: int = 0
    tail: int = 0
    newest_timestamp_ms: int = 0
    """Timestamp of the newest element ever added; new stamps never go below it,
    so timestamps never decrease along the queue even if the clock steps back."""
    positions: Mapping[str, LabelPosition] = _NO_POSITIONS

    @property
    def length(self) -> int:
        return self.tail - self.head


def encode_mpmc_counters(state: MpmcState) -> bytes:
    return _MPMC_STATE.pack(state.head, state.tail, state.newest_timestamp_ms)


pack_mpmc_counters = _MPMC_STATE.pack
"""``pack_mpmc_counters(head, tail, newest_timestamp_ms)``: for the hot path."""


def decode_mpmc_counters(raw: bytes) -> tuple[int, int, int]:
    if len(raw) != _MPMC_STATE.size:
        raise QueueCorruptedError(
            f"MPMC counters are {len(raw)} bytes long, expected {_MPMC_STATE.size}"
        )
    head, tail, newest = _MPMC_STATE.unpack(raw)
    if head > tail:
        raise QueueCorruptedError(f"MPMC counters say head {head} > tail {tail}")
    return head, tail, newest


def encode_position(position: LabelPosition) -> bytes:
    return _POSITION.pack(position.index, _EXPIRED_UNSEEN if position.expired_unseen else 0)


def decode_label(label_key: bytes) -> str:
    try:
        return label_key.decode("utf-8")
    except UnicodeDecodeError:
        raise QueueCorruptedError(f"label {label_key!r} is not valid UTF-8") from None


def decode_position(
    label_key: bytes, raw: bytes, head: int, tail: int
) -> tuple[str, LabelPosition]:
    label = decode_label(label_key)
    if len(raw) != _POSITION.size:
        raise QueueCorruptedError(
            f"position of label {label!r} is {len(raw)} bytes long, expected {_POSITION.size}"
        )
    index, flags = _POSITION.unpack(raw)
    if not head <= index <= tail or flags & ~_EXPIRED_UNSEEN:
        raise QueueCorruptedError(
            f"position {index} of label {label!r} is outside the stored range "
            f"[{head}, {tail}] or has unknown flags {flags}"
        )
    return label, LabelPosition(index, bool(flags & _EXPIRED_UNSEEN))


def stamp(timestamp_ms: int, item: bytes) -> bytes:
    return _TIMESTAMP.pack(timestamp_ms) + item


def stamped_timestamp(value: bytes) -> int:
    if len(value) < TIMESTAMP_BYTES:
        raise QueueCorruptedError(f"MPMC element of {len(value)} bytes has no timestamp")
    timestamp: int = _TIMESTAMP.unpack_from(value)[0]
    return timestamp


def unstamp(value: bytes) -> bytes:
    if len(value) < TIMESTAMP_BYTES:
        raise QueueCorruptedError(f"MPMC element of {len(value)} bytes has no timestamp")
    return value[TIMESTAMP_BYTES:]


_ITEM_LENGTH = struct.Struct(">I")


def encode_items(items: list[bytes]) -> bytes:
    return b"".join(_ITEM_LENGTH.pack(len(item)) + item for item in items)


def decode_items(label_key: bytes, raw: bytes) -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + _ITEM_LENGTH.size > len(raw):
            raise QueueCorruptedError(f"items of label {label_key!r} are truncated")
        (length,) = _ITEM_LENGTH.unpack_from(raw, offset)
        offset += _ITEM_LENGTH.size
        if offset + length > len(raw):
            raise QueueCorruptedError(f"items of label {label_key!r} are truncated")
        items.append(raw[offset : offset + length])
        offset += length
    return items


_LABEL_LENGTH = struct.Struct(">H")


def mpmc_reservation_key(label: str, number: int) -> bytes:
    """Key of an MPMC reservation: the label (length-prefixed) and the reservation's number."""
    encoded = label.encode("utf-8")
    return _LABEL_LENGTH.pack(len(encoded)) + encoded + _INDEX.pack(number)


def decode_mpmc_reservation_key(key: bytes) -> str:
    """The label of an MPMC reservation key."""
    if len(key) < _LABEL_LENGTH.size + _INDEX.size:
        raise QueueCorruptedError(f"reservation key {key!r} is too short")
    (length,) = _LABEL_LENGTH.unpack_from(key)
    if len(key) != _LABEL_LENGTH.size + length + _INDEX.size:
        raise QueueCorruptedError(f"reservation key {key!r} has the wrong length")
    return decode_label(key[_LABEL_LENGTH.size : _LABEL_LENGTH.size + length])
