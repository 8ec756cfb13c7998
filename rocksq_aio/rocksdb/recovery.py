"""Opening a RocksDB queue: its format, its true state, and what a dead process left.

Every function runs at open, before the queue serves anything, and leaves the
directory in the state the rest of the engine assumes: the format checked and
current (v1 upgraded to v2), counters that match the keys, no staged orphans,
and no reservation of a dead process left unreleased.

The functions that only read (``check_format``, ``check_keys``, ``true_*``,
``stored_*``, ``redelivered``) also serve ``view``, which works out the state
of a queue open elsewhere the same way without writing anything.
"""

from __future__ import annotations

from collections import deque

from .._errors import QueueCorruptedError, QueueError
from . import format as _format
from . import plan as _plan
from .format import (
    DATA_CF,
    FIFO_FORMAT,
    FIFO_FORMAT_V1,
    FIFO_FORMATS,
    FORMAT_KEY,
    META_CF,
    MPMC_FORMAT,
    MPMC_FORMAT_V1,
    MPMC_FORMATS,
    STATE_KEY,
    FifoState,
    LabelPosition,
    MpmcState,
)
from .plan import WritePlan
from .store import Store, StoredReads


def check_format(store: StoredReads, expected: tuple[bytes, ...]) -> tuple[bytes, bytes] | None:
    """Return the stored format and counters, or None for a queue that was never initialised."""
    stored_format = store.get(META_CF, FORMAT_KEY)
    state = store.get(META_CF, STATE_KEY)
    if stored_format is None and state is None:
        if store.data_key_bounds() is not None:
            raise QueueCorruptedError(f"queue at {store.path!r} holds elements but no counters")
        return None
    if stored_format is None:
        raise QueueCorruptedError(f"queue at {store.path!r} has counters but lost its kind")
    if stored_format not in expected:
        names = {tag: "a FIFO queue" for tag in FIFO_FORMATS} | {
            tag: "an MPMC queue" for tag in MPMC_FORMATS
        }
        found = names.get(stored_format, f"an unknown kind {stored_format!r}")
        raise QueueError(f"path {store.path!r} holds {found}, not {names[expected[0]]}")
    if state is None:
        raise QueueCorruptedError(f"queue at {store.path!r} has lost its counters")
    return stored_format, state


def check_keys(store: StoredReads, head: int, tail: int) -> bool:
    """Cross-check the counters with the stored keys; True when keys lie outside [head, tail)."""
    bounds = store.data_key_bounds()
    if bounds is None:
        if head != tail:
            raise QueueCorruptedError(
                f"queue at {store.path!r} counts {tail - head} elements but stores none"
            )
        return False
    first, last = bounds
    if head < tail:
        if first > head or last < tail - 1:
            raise QueueCorruptedError(
                f"queue at {store.path!r} counts elements [{head}, {tail}) but stores "
                f"keys from {first} to {last}"
            )
        if store.get(DATA_CF, _format.encode_index(head)) is None or (
            store.get(DATA_CF, _format.encode_index(tail - 1)) is None
        ):
            raise QueueCorruptedError(
                f"queue at {store.path!r} is missing the element at its head or tail"
            )
    return first < head or last >= tail


def check_data_matches(store: Store, head: int, tail: int) -> None:
    """Cross-check the counters with the stored keys and drop staged orphans."""
    if check_keys(store, head, tail):
        store.discard_outside(head, tail)


# ---------------------------------------------------------------- FIFO


def open_fifo(store: Store, max_unsaved: int) -> tuple[FifoState, dict[int, int]]:
    """The FIFO queue's state at open (created if new), its dead reservations released,
    and the deliveries of its stored elements (by index; those handed out before)."""
    stored = check_format(store, FIFO_FORMATS)
    if stored is None:
        state, plan = _plan.plan_fifo_create()
        store.apply(plan, sync=True)
        return state, {}
    stored_format, raw_counters = stored
    reserved = store.family_items(_format.RESERVED_CF)
    # An older format stays until the batch that gives its leases back, the
    # last to read values in its layout.
    state = _recover_fifo(store, stored_format, raw_counters, max_unsaved, upgrade=not reserved)
    deliveries = _stored_deliveries(store, state)
    if reserved:
        state = _release_dead_fifo_reservations(
            store, state, stored_format == FIFO_FORMAT, deliveries
        )
    return state, deliveries


def _recover_fifo(
    store: Store, stored_format: bytes, raw_counters: bytes, max_unsaved: int, *, upgrade: bool
) -> FifoState:
    """The queue's state at open, from its counters and its keys."""
    saved = _format.decode_fifo_state(raw_counters)
    store.discard_staged()
    if stored_format == FIFO_FORMAT_V1:
        # v1 counters are exact, and keys beyond them are orphans.
        check_data_matches(store, saved.head, saved.tail)
        state = saved
    else:
        bounds = store.data_key_bounds()
        first = last = None
        if bounds is not None:
            lowest, last = bounds
            first = lowest if lowest >= saved.head else store.first_data_index_from(saved.head)
        state = true_fifo_state(saved, first, last, max_unsaved)
        if bounds is not None and (bounds[0] < state.head or bounds[1] >= state.tail):
            store.discard_outside(state.head, state.tail)
    kind = FIFO_FORMAT if upgrade else stored_format
    if state != saved or kind != stored_format:
        counters = _format.encode_fifo_state(state)
        plan = WritePlan(meta_puts=[(FORMAT_KEY, kind), (STATE_KEY, counters)])
        store.apply(plan, sync=True)
    return state


def true_fifo_state(
    saved: FifoState, first: int | None, last: int | None, max_unsaved: int
) -> FifoState:
    """The state of a v2 FIFO queue from its saved counters and its keys
    (``plan.recovered_fifo_bounds``); the payload is unknown if they differ."""
    head, tail = _plan.recovered_fifo_bounds(saved, first, last, max_unsaved)
    if (head, tail) == (saved.head, saved.tail):
        return saved
    if head == tail:
        return FifoState(head, tail, 0)
    # Only a process that died with unsaved counters gets here (or a queue
    # open elsewhere): the payload is counted when first asked for.
    return FifoState(head, tail, _format.PAYLOAD_UNKNOWN)


def stored_fifo_leases(store: StoredReads, head: int) -> list[tuple[bytes, bytes]]:
    """The FIFO leases stored, as (key, value), oldest reservation first.

    A lease's index may be at or past the head (a nack put items back under
    it), which says nothing wrong: the index only orders a reservation's items.
    """
    reserved = store.family_items(_format.RESERVED_CF)
    # In key order already, unless a directory mixed old 8-byte keys with new ones.
    leases = sorted(reserved, key=lambda lease: _format.decode_fifo_lease_key(lease[0]))
    if len(leases) > head:
        # Every leased item was taken from the head, which moved past it.
        raise QueueCorruptedError(
            f"queue at {store.path!r} has {len(leases)} leased items, but only "
            f"{head} can have been taken from it"
        )
    return leases


def _stored_deliveries(store: Store, state: FifoState) -> dict[int, int]:
    """Deliveries of the stored elements; keys outside [head, tail) are dropped (orphans).

    Every batch that moves an element with deliveries moves its key with it,
    so an orphan is only what a head moved on at open leaves behind.
    """
    deliveries: dict[int, int] = {}
    orphans = WritePlan()
    for key, value in store.family_items(_format.DELIVERIES_CF):
        index = _format.decode_index(key)
        if state.head <= index < state.tail:
            deliveries[index] = _format.decode_count(value)
        else:
            orphans.deliveries_writes.append((key, None))
    if not orphans.is_empty:
        store.apply(orphans, sync=True)
    return deliveries


def _release_dead_fifo_reservations(
    store: Store,
    state: FifoState,
    counted: bool,
    deliveries: dict[int, int],
) -> FifoState:
    """Reservations found at open belong to a process that died before settling them.

    Their items go back in front of the head, oldest reservation first, with
    their deliveries (``counted``: values of format v3).
    """
    ordered = stored_fifo_leases(store, state.head)
    leases = []
    for key, value in ordered:
        times, _reserved_ms, item = _format.decode_fifo_lease(value, counted)
        leases.append((key, item, times))
    plan = WritePlan()
    released = _plan.plan_fifo_release_dead(state, leases, plan)
    plan.meta_puts.append((FORMAT_KEY, FIFO_FORMAT))
    store.apply(plan, sync=True)
    for index, (_key, _item, times) in enumerate(leases, released.head):
        if times:
            deliveries[index] = times
    return released


# ---------------------------------------------------------------- MPMC


Waiting = dict[str, deque[tuple[bytes, int]]]
"""Items given back per label, each with its deliveries, served to the label first."""


def open_mpmc(store: Store, max_unsaved: int) -> tuple[MpmcState, Waiting]:
    """The MPMC queue's state at open (created if new) and the items given back per label.

    Reservations of a dead process are given back to their labels, first.
    """
    stored = check_format(store, MPMC_FORMATS)
    if stored is None:
        state, plan = _plan.plan_mpmc_create()
        store.apply(plan, sync=True)
        return state, {}
    stored_format, raw_counters = stored
    head, saved_tail, saved_newest = _format.decode_mpmc_counters(raw_counters)
    store.discard_staged()
    tail, newest = saved_tail, saved_newest
    if stored_format != MPMC_FORMAT_V1:  # v1 counters are exact, keys beyond them orphans
        bounds = store.data_key_bounds()
        last = None if bounds is None else bounds[1]
        tail, newest = true_mpmc_tail(store, saved_tail, saved_newest, last, max_unsaved)
    check_data_matches(store, head, tail)
    if (tail, newest) != (saved_tail, saved_newest):
        # The kind stays: an older one is upgraded by _finish_mpmc_open, with the
        # values it re-encodes.
        counters = _format.pack_mpmc_counters(head, tail, newest)
        plan = WritePlan(meta_puts=[(FORMAT_KEY, stored_format), (STATE_KEY, counters)])
        store.apply(plan, sync=True)
    positions = stored_positions(store, head, tail)
    counted = stored_format == MPMC_FORMAT
    given_back = stored_given_back(store, counted)
    _finish_mpmc_open(store, given_back, counted)
    return MpmcState(head, tail, newest, positions), given_back


def _finish_mpmc_open(store: Store, given_back: Waiting, counted: bool) -> None:
    """Give the reservations found at open (never acked) to their label first, and
    upgrade an older format (``counted`` False), in one batch."""
    if counted and not store.family_items(_format.RESERVED_CF):
        return
    plan = WritePlan()
    leases = stored_mpmc_reservations(store, counted)
    for key, _label, _items in leases:
        _plan.plan_mpmc_settle(key, plan)
    by_label = dict.fromkeys(redelivered(given_back, leases))
    # Every label's items, re-encoded if the format was older.
    for label, waiting in given_back.items():
        if label in by_label or not counted:
            _plan.plan_mpmc_given_back(label, list(waiting), plan)
    plan.meta_puts.append((FORMAT_KEY, MPMC_FORMAT))
    store.apply(plan, sync=True)


def true_mpmc_tail(
    store: StoredReads, saved_tail: int, saved_newest: int, last: int | None, max_unsaved: int
) -> tuple[int, int]:
    """The tail and newest timestamp of a v2+ MPMC queue from its counters and last key."""
    tail = _plan.recovered_mpmc_tail(saved_tail, last, max_unsaved)
    if tail == saved_tail:
        return tail, saved_newest
    # Only a process that died with unsaved counters gets here (or a queue
    # open elsewhere).
    store.payload_of(saved_tail, tail)  # all there, or corrupted
    newest_added = _format.stamped_timestamp(store.read_elements(tail - 1, 1)[0])
    return tail, max(saved_newest, newest_added)


def stored_positions(store: StoredReads, head: int, tail: int) -> dict[str, LabelPosition]:
    """Every label's saved position, each checked to lie in [head, tail]."""
    return dict(
        _format.decode_position(key, value, head, tail)
        for key, value in store.family_items(_format.POSITIONS_CF)
    )


def stored_given_back(store: StoredReads, counted: bool) -> Waiting:
    """The items given back to each label, with their deliveries (``counted``: format v3)."""
    return {
        _format.decode_label(key): deque(_format.decode_given_back(key, value, counted))
        for key, value in store.family_items(_format.GIVEN_BACK_CF)
    }


def stored_mpmc_reservations(
    store: StoredReads, counted: bool
) -> list[tuple[bytes, str, list[tuple[bytes, int]]]]:
    """(key, label, items with deliveries) of every MPMC reservation, by label then number."""
    leases = []
    for key, value in store.family_items(_format.RESERVED_CF):
        _reserved_ms, items = _format.decode_mpmc_lease(key, value, counted)
        leases.append((key, _format.decode_mpmc_reservation_key(key), items))
    return leases


def redelivered(
    given_back: Waiting, reserved: list[tuple[bytes, str, list[tuple[bytes, int]]]]
) -> list[str]:
    """Put reserved items in front of their label's given-back items; the labels changed."""
    by_label: dict[str, list[tuple[bytes, int]]] = {}
    for _key, label, items in reserved:
        by_label.setdefault(label, []).extend(items)
    for label, items in by_label.items():
        given_back.setdefault(label, deque()).extendleft(reversed(items))
    return list(by_label)
