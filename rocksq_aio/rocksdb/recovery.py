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


def open_fifo(store: Store, max_unsaved: int) -> FifoState:
    """The FIFO queue's state at open (created if new), its dead reservations released."""
    stored = check_format(store, FIFO_FORMATS)
    if stored is None:
        state, plan = _plan.plan_fifo_create()
        store.apply(plan, sync=True)
        return state
    state = _recover_fifo(store, *stored, max_unsaved)
    return _release_dead_fifo_reservations(store, state)


def _recover_fifo(
    store: Store, stored_format: bytes, raw_counters: bytes, max_unsaved: int
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
    if state != saved or stored_format != FIFO_FORMAT:
        plan = WritePlan(
            meta_puts=[(FORMAT_KEY, FIFO_FORMAT), (STATE_KEY, _format.encode_fifo_state(state))]
        )
        store.apply(plan, sync=True)
    return state


def stored_fifo_reservations(store: StoredReads, head: int) -> list[tuple[bytes, bytes]]:
    """The FIFO leases stored, as (key, item), oldest reservation first.

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


def _release_dead_fifo_reservations(store: Store, state: FifoState) -> FifoState:
    """Reservations found at open belong to a process that died before settling them.

    Their items go back in front of the head, oldest reservation first.
    """
    leases = stored_fifo_reservations(store, state.head)
    if not leases:
        return state
    plan = WritePlan()
    state = _plan.plan_fifo_release_dead(state, leases, plan)
    store.apply(plan, sync=True)
    return state


# ---------------------------------------------------------------- MPMC


def open_mpmc(store: Store, max_unsaved: int) -> tuple[MpmcState, dict[str, deque[bytes]]]:
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
    if (tail, newest) != (saved_tail, saved_newest) or stored_format != MPMC_FORMAT:
        counters = _format.pack_mpmc_counters(head, tail, newest)
        plan = WritePlan(meta_puts=[(FORMAT_KEY, MPMC_FORMAT), (STATE_KEY, counters)])
        store.apply(plan, sync=True)
    positions = stored_positions(store, head, tail)
    given_back = stored_given_back(store)
    _redeliver_dead_mpmc_reservations(store, given_back)
    return MpmcState(head, tail, newest, positions), given_back


def true_mpmc_tail(
    store: StoredReads, saved_tail: int, saved_newest: int, last: int | None, max_unsaved: int
) -> tuple[int, int]:
    """The tail and newest timestamp of a v2 MPMC queue from its counters and last key."""
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


def stored_given_back(store: StoredReads) -> dict[str, deque[bytes]]:
    """The items given back to each label, served to its next read first."""
    return {
        _format.decode_label(key): deque(_format.decode_items(key, value))
        for key, value in store.family_items(_format.GIVEN_BACK_CF)
    }


def stored_mpmc_reservations(store: StoredReads) -> list[tuple[bytes, str, list[bytes]]]:
    """(key, label, items) of every MPMC reservation stored, by label then number."""
    return [
        (key, _format.decode_mpmc_reservation_key(key), _format.decode_items(key, value))
        for key, value in store.family_items(_format.RESERVED_CF)
    ]


def redelivered(
    given_back: dict[str, deque[bytes]], reserved: list[tuple[bytes, str, list[bytes]]]
) -> list[str]:
    """Put reserved items in front of their label's given-back items; the labels changed."""
    by_label: dict[str, list[bytes]] = {}
    for _key, label, items in reserved:
        by_label.setdefault(label, []).extend(items)
    for label, items in by_label.items():
        given_back.setdefault(label, deque()).extendleft(reversed(items))
    return list(by_label)


def _redeliver_dead_mpmc_reservations(store: Store, given_back: dict[str, deque[bytes]]) -> None:
    """Reservations found at open were never acked: their items go to their label first."""
    reserved = stored_mpmc_reservations(store)
    if not reserved:
        return
    plan = WritePlan()
    for key, _label, _items in reserved:
        _plan.plan_mpmc_settle(key, plan)
    for label in redelivered(given_back, reserved):
        _plan.plan_mpmc_given_back(label, list(given_back[label]), plan)
    store.apply(plan, sync=True)
