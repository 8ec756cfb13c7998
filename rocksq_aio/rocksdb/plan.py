"""Planning of every RocksDB write batch as pure functions of the queue state.

Nothing here touches RocksDB: a function takes the current state and the values
already read, and returns the new state together with a :class:`WritePlan` (the
keys to put and delete), which ``store.Store.apply`` writes as one atomic
WriteBatch. The tests replay plans against a dict and compare with a model.

Rules every plan keeps (the engine relies on them):

1. A plan is all or nothing: a call that cannot be done whole (a push that
   does not fit, say) raises before anything is planned for it.
2. Element puts only target indices outside the committed ``[head, tail)``
   (at or past the tail, or below the head for a give-back), so a large plan
   can be staged in several writes, invisible until its last one lands.
3. Every plan that moves a counter carries the new counters (``meta/state``);
   only the one-item fast paths of format v2 skip them (see ``format``).
4. Deleted data ranges in one plan are contiguous.
5. A label's saved position never moves back past an element another read
   of that label already got; items that cannot be given back by moving the
   position are saved in ``returned`` and served first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._errors import QueueCorruptedError, QueueFullError
from .._types import StartPosition
from .format import (
    FIFO_FORMAT,
    FORMAT_KEY,
    MAX_INDEX,
    MPMC_FORMAT,
    STATE_KEY,
    TIMESTAMP_BYTES,
    FifoState,
    LabelPosition,
    MpmcState,
    encode_fifo_lease_key,
    encode_fifo_state,
    encode_items,
    encode_mpmc_counters,
    encode_position,
    encode_timestamp,
)


@dataclass(slots=True)
class WritePlan:
    """What one atomic batch writes.

    ``data_puts`` only ever target indices at or beyond the committed tail, so
    they may be staged in several smaller writes before the batch that carries
    the counters (see ``store.Store.apply``).
    """

    data_puts: list[tuple[int, bytes]] = field(default_factory=list)
    data_bytes: int = 0
    """Total size of the values in ``data_puts``."""
    data_delete_start: int = 0
    data_delete_stop: int = 0
    meta_puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    position_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """Applied in order; a None value deletes the label."""
    given_back_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """Items given back to a label that had read further (see plan_mpmc_given_back)."""
    reserved_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """Reservations not yet settled (see plan_fifo_reserve, plan_mpmc_reserve)."""

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
            or self.given_back_writes
            or self.reserved_writes
        )


# ---------------------------------------------------------------- FIFO


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


def plan_fifo_give_back(state: FifoState, items: list[bytes], plan: WritePlan) -> FifoState:
    """Put items popped earlier back in front of the head, keeping their order.

    Every item given back was popped first, so the head is always >= their count.
    """
    count = len(items)
    if count > state.head:
        raise AssertionError("cannot give back more elements than were popped")
    head = state.head - count
    size = sum(map(len, items))
    new_state = FifoState(head, state.tail, state.payload_size + size)
    plan.data_puts.extend(zip(range(head, state.head), items, strict=True))
    plan.data_bytes += size
    _with_fifo_counters(plan, new_state)
    return new_state


def plan_fifo_reserve(
    state: FifoState, number: int, items: list[bytes], plan: WritePlan
) -> FifoState:
    """Move ``items`` (the values read at the head) into the leases of reservation ``number``.

    Each stays on disk under (``number``, the index it had) until settled; a
    lease still there at the next open was never settled and goes back to
    the head. The number is part of the key because a nack puts items back
    under indices that a later reservation may still hold leases on.
    """
    new_state = plan_fifo_pop(state, items, plan)
    plan.reserved_writes.extend(
        (encode_fifo_lease_key(number, index), item) for index, item in enumerate(items, state.head)
    )
    return new_state


def plan_fifo_ack(number: int, first: int, count: int, plan: WritePlan) -> None:
    """Forget the leases of reservation ``number`` for good: its items were processed."""
    plan.reserved_writes.extend(
        (encode_fifo_lease_key(number, index), None) for index in range(first, first + count)
    )


def plan_fifo_nack(
    state: FifoState, number: int, first: int, items: list[bytes], plan: WritePlan
) -> FifoState:
    """Return the items of reservation ``number`` (nack) to the head of the queue, in order."""
    plan_fifo_ack(number, first, len(items), plan)
    return plan_fifo_give_back(state, items, plan)


def plan_fifo_release_dead(
    state: FifoState, leases: list[tuple[bytes, bytes]], plan: WritePlan
) -> FifoState:
    """Return the leases (key, item) found at open, in their key order, to the head.

    They belong to a process that died before settling them: oldest
    reservation first, each in its items' order, all in front of the head.
    """
    plan.reserved_writes.extend((key, None) for key, _item in leases)
    return plan_fifo_give_back(state, [item for _key, item in leases], plan)


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
    so that its head never goes back (a give-back puts items below the head).
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
    plan = WritePlan(meta_puts=[(FORMAT_KEY, FIFO_FORMAT), (STATE_KEY, encode_fifo_state(state))])
    return state, plan


# ---------------------------------------------------------------- MPMC


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


def plan_mpmc_create() -> tuple[MpmcState, WritePlan]:
    state = MpmcState()
    plan = WritePlan(
        meta_puts=[(FORMAT_KEY, MPMC_FORMAT), (STATE_KEY, encode_mpmc_counters(state))]
    )
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
    prefix = encode_timestamp(timestamp)
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


def plan_mpmc_given_back(label: str, waiting: list[bytes], plan: WritePlan) -> None:
    """Save the items waiting to be redelivered to ``label`` (none: forget them).

    They are items of a next() that were never delivered while the label read
    further meanwhile, so its position cannot move back; next() serves them
    first. Saved, so that a restart does not lose them.
    """
    key = label.encode("utf-8")
    plan.given_back_writes.append((key, encode_items(waiting) if waiting else None))


def plan_mpmc_reserve(key: bytes, items: list[bytes], plan: WritePlan) -> None:
    """Keep the items a label reserved until they are acked or nacked.

    The label's position moves past them at once, as with next(); a reservation
    found at the next open was never acked: its items are given back
    to the label (plan_mpmc_given_back) and delivered first.
    """
    plan.reserved_writes.append((key, encode_items(items)))


def plan_mpmc_settle(key: bytes, plan: WritePlan) -> None:
    plan.reserved_writes.append((key, None))


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
