"""Planning of every write batch as plain functions of the queue state.

Nothing here touches RocksDB: a function takes the current state and the values
already read, and returns the new state together with a :class:`WritePlan` (the
keys to put and delete). ``_storage`` turns a plan into one atomic WriteBatch.
Keeping the two apart lets the tests replay plans against a dict and compare
with an in-memory model.

Layout on disk (column families):

* ``data``: key = 8-byte big-endian element index, so RocksDB order is queue
  order. FIFO value = the item; MPMC value = 8-byte big-endian timestamp in
  milliseconds followed by the item.
* ``meta``: ``kind`` (which queue and format), ``state`` (the counters) and,
  only while a large write is half done, ``staging`` (see ``_storage.Store.apply``).

Format v2: the FIFO one-item push and pop, and the MPMC one-item add, write
only their data key, so the saved counters may lag behind the keys; they are a
starting point from which ``recovered_fifo_bounds`` and ``recovered_mpmc_tail``
find the true head and tail at open. Every other write saves the counters with
it, and so does a clean close.
* ``positions`` (MPMC only): key = UTF-8 label, value = 8-byte index of the next
  element to read + 1 byte of flags.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from ._errors import QueueCorruptedError, QueueFullError
from ._types import StartPosition

DATA_CF = "data"
META_CF = "meta"
POSITIONS_CF = "positions"
RETURNED_CF = "returned"
LEASED_CF = "leased"

KIND_KEY = b"kind"
STATE_KEY = b"state"
STAGING_KEY = b"staging"
FIFO_KIND = b"rocksq_aio.fifo.v2"
FIFO_KIND_V1 = b"rocksq_aio.fifo.v1"
"""Counters always exact; read, and upgraded to v2 at the first open."""
FIFO_KINDS = (FIFO_KIND, FIFO_KIND_V1)
MPMC_KIND = b"rocksq_aio.mpmc.v2"
MPMC_KIND_V1 = b"rocksq_aio.mpmc.v1"
"""Counters always exact; read, and upgraded to v2 at the first open."""
MPMC_KINDS = (MPMC_KIND, MPMC_KIND_V1)

FIFO_COLUMN_FAMILIES = (DATA_CF, META_CF, LEASED_CF)
MPMC_COLUMN_FAMILIES = (DATA_CF, META_CF, POSITIONS_CF, RETURNED_CF, LEASED_CF)

MAX_INDEX = 2**64 - 1

_INDEX = struct.Struct(">Q")
_FIFO_STATE = struct.Struct(">QQQ")  # head, tail, payload_size
_MPMC_STATE = struct.Struct(">QQQ")  # head, tail, timestamp of the newest element (ms)
_POSITION = struct.Struct(">QB")  # next index to read, flags
_TIMESTAMP = struct.Struct(">Q")
_STAGED_RANGE = struct.Struct(">QQ")  # start, stop
TIMESTAMP_BYTES = _TIMESTAMP.size
_EXPIRED_UNSEEN = 1

encode_index = _INDEX.pack


def decode_index(key: bytes) -> int:
    if len(key) != _INDEX.size:
        raise QueueCorruptedError(f"data key of {len(key)} bytes, expected {_INDEX.size}")
    index: int = _INDEX.unpack(key)[0]
    return index


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


@dataclass(slots=True)
class WritePlan:
    """What one atomic batch writes.

    ``data_puts`` only ever target indices at or beyond the committed tail, so
    they may be staged in several smaller writes before the batch that carries
    the counters (see ``_storage.Store.apply``).
    """

    data_puts: list[tuple[int, bytes]] = field(default_factory=list)
    data_bytes: int = 0
    """Total size of the values in ``data_puts``."""
    data_delete_start: int = 0
    data_delete_stop: int = 0
    meta_puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    position_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """Applied in order; a None value deletes the label."""
    returned_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """Items handed back to a label that had read further (see plan_mpmc_hand_back)."""
    leased_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """FIFO items reserved and not yet acknowledged (see plan_fifo_reserve)."""

    def delete_data(self, start: int, stop: int) -> None:
        """Delete indices [start, stop); ranges planned in one batch are contiguous."""
        if start >= stop:
            return
        if self.data_delete_start == self.data_delete_stop:
            self.data_delete_start, self.data_delete_stop = start, stop
        elif start == self.data_delete_stop:
            self.data_delete_stop = stop
        else:
            raise AssertionError("deleted ranges in one batch must be contiguous")

    @property
    def is_empty(self) -> bool:
        return not (
            self.data_puts
            or self.data_delete_start != self.data_delete_stop
            or self.meta_puts
            or self.position_writes
            or self.returned_writes
            or self.leased_writes
        )


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


def _with_fifo_counters(plan: WritePlan, state: FifoState) -> None:
    plan.meta_puts = [(STATE_KEY, encode_fifo_state(state))]


def fifo_pushed(state: FifoState, count: int, size: int, capacity: int) -> FifoState:
    """The counters after pushing ``count`` items of ``size`` bytes in all.

    Raises QueueFullError when they do not all fit: a push is all or nothing.
    """
    head, tail, payload_size = state
    if tail - head + count > capacity:
        raise queue_full(tail - head, count, capacity)
    return FifoState(head, tail + count, payload_size + size)


def queue_full(length: int, count: int, capacity: int) -> QueueFullError:
    return QueueFullError(
        f"Queue is full: {length} elements stored, pushing {count} would exceed "
        f"max_elements={capacity}; nothing was written"
    )


def fifo_popped(state: FifoState, count: int, size: int) -> FifoState:
    """The counters after popping ``count`` items of ``size`` bytes in all from the head."""
    head, tail, payload_size = state
    if count > tail - head:
        raise AssertionError("cannot pop more elements than the queue holds")
    if size > payload_size:
        raise QueueCorruptedError("payload size counter went negative")
    return FifoState(head + count, tail, payload_size - size)


def plan_fifo_push(
    state: FifoState, items: list[bytes], capacity: int, plan: WritePlan
) -> FifoState:
    """Append items at the tail; the whole call is refused if it does not fit."""
    size = sum(map(len, items))
    new_state = fifo_pushed(state, len(items), size, capacity)
    plan.data_puts.extend(zip(range(state.tail, new_state.tail), items, strict=True))
    plan.data_bytes += size
    plan.meta_puts = [(STATE_KEY, encode_fifo_state(new_state))]
    return new_state


def plan_fifo_pushes(
    state: FifoState, calls: list[list[bytes]], capacity: int, plan: WritePlan
) -> tuple[FifoState, list[QueueFullError | None]]:
    """Plan consecutive push calls as one append, each call all or nothing on its own.

    Returns the new state and, per call, None or the error that refused it.
    """
    refusals: list[QueueFullError | None] = []
    accepted: list[bytes] = []
    length = state.tail - state.head
    for items in calls:
        if length + len(items) > capacity:
            refusals.append(queue_full(length, len(items), capacity))
            continue
        length += len(items)
        accepted.extend(items)
        refusals.append(None)
    if accepted:
        state = plan_fifo_push(state, accepted, capacity, plan)
    return state, refusals


def plan_fifo_pop(state: FifoState, popped: list[bytes], plan: WritePlan) -> FifoState:
    """Remove ``popped`` (the values read at the head, in order) from the queue."""
    new_state = fifo_popped(state, len(popped), sum(map(len, popped)))
    plan.delete_data(state.head, new_state.head)
    plan.meta_puts = [(STATE_KEY, encode_fifo_state(new_state))]
    return new_state


def plan_fifo_unpop(state: FifoState, items: list[bytes], plan: WritePlan) -> FifoState:
    """Put items popped earlier back in front of the head, keeping their order.

    Every unpopped item was popped first, so the head is always >= their count.
    """
    count = len(items)
    if count > state.head:
        raise AssertionError("cannot unpop more elements than were popped")
    head = state.head - count
    size = sum(map(len, items))
    new_state = FifoState(head, state.tail, state.payload_size + size)
    plan.data_puts.extend(zip(range(head, state.head), items, strict=True))
    plan.data_bytes += size
    _with_fifo_counters(plan, new_state)
    return new_state


def plan_fifo_reserve(state: FifoState, items: list[bytes], plan: WritePlan) -> FifoState:
    """Move ``items`` (the values read at the head) out of the queue into the lease area.

    They stay on disk, under their index, until acknowledged; a lease still
    there at the next open was never acknowledged and goes back to the head.
    """
    new_state = plan_fifo_pop(state, items, plan)
    plan.leased_writes.extend(
        (encode_index(index), item) for index, item in enumerate(items, state.head)
    )
    return new_state


def plan_fifo_acknowledge(indices: Iterable[int], plan: WritePlan) -> None:
    """Forget leased items for good: they were processed."""
    plan.leased_writes.extend((encode_index(index), None) for index in indices)


def plan_fifo_release(
    state: FifoState, indices: Iterable[int], items: list[bytes], plan: WritePlan
) -> FifoState:
    """Return leased items to the head of the queue, in their order, for the next reader."""
    plan_fifo_acknowledge(indices, plan)
    return plan_fifo_unpop(state, items, plan)


def recovered_fifo_bounds(
    saved: FifoState, first: int | None, last: int | None, max_unsaved: int
) -> tuple[int, int]:
    """The true head and tail of a v2 FIFO queue, from its saved counters and its keys.

    ``first`` is the lowest data index stored at or past ``saved.head`` and
    ``last`` the highest stored (None when there are none). Since the counters
    were saved, at most ``max_unsaved`` one-item pushes (a key at the tail) and
    pops (the key at the head deleted) can have happened, so the keys still
    form one run that starts at most that far past the saved head and ends
    at most that far past the saved tail. An empty queue does not say where
    its head got to: it restarts at the furthest its tail can have reached,
    so that its head never goes back (unpop puts items below the head).
    """
    if first is None or last is None:
        if saved.length > max_unsaved:
            raise QueueCorruptedError(
                f"the counters say the queue holds {saved.length} elements, but it stores none"
            )
        furthest = min(saved.tail + max_unsaved, MAX_INDEX)
        return furthest, furthest
    if last < first:
        raise AssertionError("the last key cannot precede the first")
    if last + 1 < saved.tail:
        raise QueueCorruptedError(
            f"the counters say the queue ends at {saved.tail}, but its last element is {last}"
        )
    if (first - saved.head) + (last + 1 - saved.tail) > max_unsaved:
        raise QueueCorruptedError(
            f"the counters say the queue holds [{saved.head}, {saved.tail}), but it stores "
            f"[{first}, {last + 1}): more changed than can have gone unsaved"
        )
    return first, last + 1


def plan_fifo_create() -> tuple[FifoState, WritePlan]:
    state = FifoState()
    plan = WritePlan(meta_puts=[(KIND_KEY, FIFO_KIND), (STATE_KEY, encode_fifo_state(state))])
    return state, plan


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


def recovered_mpmc_tail(saved_tail: int, last: int | None, max_unsaved: int) -> int:
    """The true tail of a v2 MPMC queue, from its saved tail and its last data index.

    Since the counters were saved, only one-item adds (a key at the tail) can
    have happened, at most ``max_unsaved`` of them. A last key before the
    saved tail is left for the open's cross-check of counters and keys.
    """
    if last is None or last < saved_tail:
        return saved_tail
    if last + 1 - saved_tail > max_unsaved:
        raise QueueCorruptedError(
            f"the counters say the queue ends at {saved_tail}, but it stores element {last}: "
            "more was added than can have gone unsaved"
        )
    return last + 1


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


def plan_mpmc_create() -> tuple[MpmcState, WritePlan]:
    state = MpmcState()
    plan = WritePlan(meta_puts=[(KIND_KEY, MPMC_KIND), (STATE_KEY, encode_mpmc_counters(state))])
    return state, plan


def _with_counters(plan: WritePlan, state: MpmcState) -> None:
    plan.meta_puts = [(STATE_KEY, encode_mpmc_counters(state))]


def plan_mpmc_expire(state: MpmcState, new_head: int, plan: WritePlan) -> MpmcState:
    """Drop elements [head, new_head) and move every label that had not read them."""
    if new_head <= state.head:
        return state
    if new_head > state.tail:
        raise AssertionError("cannot expire beyond the tail")
    plan.delete_data(state.head, new_head)
    positions = dict(state.positions)
    for label, position in state.positions.items():
        if position.index < new_head:
            moved = LabelPosition(new_head, expired_unseen=True)
            positions[label] = moved
            plan.position_writes.append((label.encode("utf-8"), encode_position(moved)))
    new_state = state._replace(head=new_head, positions=positions)
    _with_counters(plan, new_state)
    return new_state


def plan_mpmc_add(state: MpmcState, items: list[bytes], now_ms: int, plan: WritePlan) -> MpmcState:
    """Append items stamped with ``now_ms`` (never below the newest stamp)."""
    if not items:
        return state
    timestamp = max(now_ms, state.newest_timestamp_ms)
    tail = state.tail
    if tail + len(items) > MAX_INDEX:
        raise QueueFullError("MPMC queue index space exhausted")
    prefix = _TIMESTAMP.pack(timestamp)
    plan.data_puts.extend((tail + offset, prefix + item) for offset, item in enumerate(items))
    plan.data_bytes += sum(map(len, items)) + len(items) * TIMESTAMP_BYTES
    new_state = state._replace(tail=tail + len(items), newest_timestamp_ms=timestamp)
    _with_counters(plan, new_state)
    return new_state


def label_start(state: MpmcState, label: str, start_position: StartPosition) -> LabelPosition:
    """Where ``label`` reads next: its saved position, or where a new label starts."""
    saved = state.positions.get(label)
    if saved is not None:
        return saved
    if start_position is StartPosition.Oldest or state.head == state.tail:
        index = state.head if start_position is StartPosition.Oldest else state.tail
        return LabelPosition(index)
    # RocksQ's rule: a new label at Newest starts at the last stored element.
    return LabelPosition(state.tail - 1)


def readable_count(state: MpmcState, position: LabelPosition, max_elements: int) -> int:
    return max(0, min(max_elements, state.tail - position.index))


def plan_mpmc_next(
    state: MpmcState, label: str, start: LabelPosition, read_count: int, plan: WritePlan
) -> tuple[MpmcState, bool]:
    """Advance ``label`` past ``read_count`` elements from ``start``.

    Returns the new state and whether the caller must be told that unread
    elements expired (reported once, then cleared).
    """
    if start.index + read_count > state.tail:
        raise AssertionError("cannot read beyond the tail")
    moved = LabelPosition(start.index + read_count)
    if state.positions.get(label) == moved:
        return state, start.expired_unseen
    positions = dict(state.positions)
    positions[label] = moved
    plan.position_writes.append((label.encode("utf-8"), encode_position(moved)))
    return state._replace(positions=positions), start.expired_unseen


def plan_mpmc_rewind(
    state: MpmcState,
    label: str,
    start: int,
    count: int,
    plan: WritePlan,
    *,
    expired_unseen: bool = False,
) -> tuple[MpmcState, bool]:
    """Move ``label`` back to ``start`` if nothing read past its last next() since.

    Elements that expired in the meantime cannot come back: the label then
    restarts at the head and is told once that it missed elements. Pass the
    undone next()'s ``expired_unseen`` report so that it is made again.
    """
    saved = state.positions.get(label)
    if saved is None or saved.index != start + count:
        return state, False
    # The undone next() may have been the one to report expired elements:
    # the report must come again with the redelivery.
    rewound = LabelPosition(max(start, state.head), expired_unseen or start < state.head)
    positions = dict(state.positions)
    positions[label] = rewound
    plan.position_writes.append((label.encode("utf-8"), encode_position(rewound)))
    return state._replace(positions=positions), True


_ITEM_LENGTH = struct.Struct(">I")


def encode_returned(items: list[bytes]) -> bytes:
    return b"".join(_ITEM_LENGTH.pack(len(item)) + item for item in items)


def decode_returned(label_key: bytes, raw: bytes) -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + _ITEM_LENGTH.size > len(raw):
            raise QueueCorruptedError(f"items handed back to label {label_key!r} are truncated")
        (length,) = _ITEM_LENGTH.unpack_from(raw, offset)
        offset += _ITEM_LENGTH.size
        if offset + length > len(raw):
            raise QueueCorruptedError(f"items handed back to label {label_key!r} are truncated")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def plan_mpmc_hand_back(label: str, waiting: list[bytes], plan: WritePlan) -> None:
    """Save the items waiting to be redelivered to ``label`` (none: forget them).

    They are items of a next() that were never delivered while the label read
    further meanwhile, so its position cannot move back; next() serves them
    first. Saved, so that a restart does not lose them.
    """
    key = label.encode("utf-8")
    plan.returned_writes.append((key, encode_returned(waiting) if waiting else None))


_LABEL_LENGTH = struct.Struct(">H")


def mpmc_lease_key(label: str, number: int) -> bytes:
    """Key of an MPMC lease: the label (length-prefixed) and the lease's number."""
    encoded = label.encode("utf-8")
    return _LABEL_LENGTH.pack(len(encoded)) + encoded + _INDEX.pack(number)


def decode_mpmc_lease_key(key: bytes) -> str:
    """The label of an MPMC lease key."""
    if len(key) < _LABEL_LENGTH.size + _INDEX.size:
        raise QueueCorruptedError(f"lease key {key!r} is too short")
    (length,) = _LABEL_LENGTH.unpack_from(key)
    if len(key) != _LABEL_LENGTH.size + length + _INDEX.size:
        raise QueueCorruptedError(f"lease key {key!r} has the wrong length")
    return decode_label(key[_LABEL_LENGTH.size : _LABEL_LENGTH.size + length])


def plan_mpmc_lease(key: bytes, items: list[bytes], plan: WritePlan) -> None:
    """Keep the items a label reserved until they are acknowledged or released.

    The label's position moves past them at once, as with next(); a lease
    found at the next open was never acknowledged: its items are handed back
    to the label (plan_mpmc_hand_back) and delivered first.
    """
    plan.leased_writes.append((key, encode_returned(items)))


def plan_mpmc_unlease(key: bytes, plan: WritePlan) -> None:
    plan.leased_writes.append((key, None))


def plan_mpmc_remove_label(state: MpmcState, label: str, plan: WritePlan) -> tuple[MpmcState, bool]:
    if label not in state.positions:
        return state, False
    positions = dict(state.positions)
    del positions[label]
    plan.position_writes.append((label.encode("utf-8"), None))
    return state._replace(positions=positions), True


def expiry_cutoff_ms(now_ms: int, ttl_ms: int) -> int | None:
    """Elements stamped at or before the cutoff have expired; None when TTL is off."""
    if ttl_ms <= 0:
        return None
    return now_ms - ttl_ms
