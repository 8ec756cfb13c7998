"""The pure planning functions of ``rocksq_aio.rocksdb.plan``, replayed against a
dict store (support/plan.py): WritePlan, the FIFO plans, the decoders and
codecs, and the FIFO's recovery at open. The MPMC plans are in test_plan_mpmc.py.
"""

from __future__ import annotations

import copy
import struct
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocksq_aio import QueueCorruptedError, QueueFullError
from rocksq_aio.rocksdb.format import (
    DATA_CF,
    FIFO_FORMAT,
    FORMAT_KEY,
    MAX_INDEX,
    META_CF,
    STATE_KEY,
    TIMESTAMP_BYTES,
    FifoState,
    LabelPosition,
    MpmcState,
    decode_fifo_state,
    decode_index,
    decode_mpmc_counters,
    decode_position,
    decode_staged_range,
    encode_fifo_state,
    encode_index,
    encode_mpmc_counters,
    encode_position,
    encode_staged_range,
    stamp,
    stamped_timestamp,
    unstamp,
)
from rocksq_aio.rocksdb.plan import (
    WritePlan,
    plan_fifo_create,
    plan_fifo_give_back,
    plan_fifo_pop,
    plan_fifo_push,
    plan_fifo_pushes,
    recovered_fifo_bounds,
)

from support.plan import DictStore, apply, check_fifo, new_store

# ---------------------------------------------------------------- WritePlan


def test_delete_data_merges_contiguous_ranges() -> None:
    plan = WritePlan()
    assert plan.is_empty
    plan.delete_data(5, 5)  # empty range: nothing
    assert plan.is_empty
    plan.delete_data(2, 5)
    plan.delete_data(5, 9)
    assert (plan.data_delete_start, plan.data_delete_stop) == (2, 9)
    assert not plan.is_empty
    with pytest.raises(AssertionError):
        plan.delete_data(12, 14)


@pytest.mark.parametrize(
    "plan",
    [
        WritePlan(data_puts=[(0, b"x")]),
        WritePlan(meta_puts=[(STATE_KEY, b"")]),
        WritePlan(position_writes=[(b"a", None)]),
        WritePlan(data_delete_start=1, data_delete_stop=2),
    ],
)
def test_write_plan_is_not_empty(plan: WritePlan) -> None:
    assert not plan.is_empty


# ---------------------------------------------------------------- FIFO


def fresh_fifo() -> tuple[DictStore, FifoState]:
    store = new_store()
    state, plan = plan_fifo_create()
    apply(store, plan)
    assert store[META_CF][FORMAT_KEY] == FIFO_FORMAT
    assert check_fifo(store, []) == state
    return store, state


def test_fifo_push_pop_unpop_by_hand() -> None:
    store, state = fresh_fifo()
    plan = WritePlan()
    state = plan_fifo_push(state, [b"a", b"bb", b"ccc"], 10, plan)
    apply(store, plan)
    assert check_fifo(store, [b"a", b"bb", b"ccc"]) == state == FifoState(0, 3, 6)

    plan = WritePlan()
    state = plan_fifo_pop(state, [b"a", b"bb"], plan)
    apply(store, plan)
    assert check_fifo(store, [b"ccc"]) == state == FifoState(2, 3, 3)

    plan = WritePlan()
    state = plan_fifo_give_back(state, [b"a", b"bb"], plan)
    apply(store, plan)
    assert check_fifo(store, [b"a", b"bb", b"ccc"]) == state == FifoState(0, 3, 6)

    plan = WritePlan()
    state = plan_fifo_pop(state, [b"a", b"bb", b"ccc"], plan)
    apply(store, plan)
    assert check_fifo(store, []) == state == FifoState(3, 3, 0)


def test_fifo_pop_of_nothing_keeps_the_counters() -> None:
    store, state = fresh_fifo()
    plan = WritePlan()
    new_state = plan_fifo_pop(state, [], plan)
    assert new_state == state
    apply(store, plan)
    check_fifo(store, [])


def test_fifo_push_over_capacity_plans_nothing() -> None:
    store, state = fresh_fifo()
    plan = WritePlan()
    state = plan_fifo_push(state, [b"a", b"b"], 3, plan)
    apply(store, plan)

    plan = WritePlan()
    snapshot = copy.deepcopy(plan)
    with pytest.raises(QueueFullError, match="max_elements=3"):
        plan_fifo_push(state, [b"c", b"d"], 3, plan)
    assert plan == snapshot, "a refused push must not touch the plan"

    # In a plan shared with earlier operations, too.
    plan = WritePlan()
    state2 = plan_fifo_push(state, [b"c"], 3, plan)
    snapshot = copy.deepcopy(plan)
    with pytest.raises(QueueFullError):
        plan_fifo_push(state2, [b"d"], 3, plan)
    assert plan == snapshot
    apply(store, plan)
    assert check_fifo(store, [b"a", b"b", b"c"]) == state2


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(st.lists(st.binary(max_size=4), max_size=4), max_size=8),
    capacity=st.integers(min_value=1, max_value=10),
    stored=st.integers(min_value=0, max_value=10),
)
def test_fifo_pushes_plan_like_pushes_one_by_one(
    calls: list[list[bytes]], capacity: int, stored: int
) -> None:
    """A run of pushes planned together: each call accepted or refused on its own, in order."""
    _store, state = fresh_fifo()
    state = plan_fifo_push(state, [b"s"] * min(stored, capacity), capacity, WritePlan())

    one_by_one = WritePlan()
    expected_state, expected_refused = state, []
    for items in calls:
        try:
            expected_state = plan_fifo_push(expected_state, items, capacity, one_by_one)
        except QueueFullError:
            expected_refused.append(True)
        else:
            expected_refused.append(False)

    together = WritePlan()
    new_state, refusals = plan_fifo_pushes(state, calls, capacity, together)
    assert new_state == expected_state
    assert [refusal is not None for refusal in refusals] == expected_refused
    assert all(isinstance(refusal, QueueFullError) for refusal in refusals if refusal is not None)
    assert together.data_puts == one_by_one.data_puts
    assert together.data_bytes == one_by_one.data_bytes
    if together.data_puts:
        assert together.meta_puts == one_by_one.meta_puts
    else:
        assert together.is_empty, "pushes of nothing (or all refused) write nothing"


def test_fifo_exact_fit_is_allowed() -> None:
    _store, state = fresh_fifo()
    state = plan_fifo_push(state, [b"x"] * 5, 5, WritePlan())
    assert state.length == 5
    with pytest.raises(QueueFullError):
        plan_fifo_push(state, [b"y"], 5, WritePlan())


def test_fifo_unpop_more_than_popped_is_refused() -> None:
    _store, state = fresh_fifo()
    state = plan_fifo_push(state, [b"x"], 5, WritePlan())
    with pytest.raises(AssertionError):
        plan_fifo_give_back(state, [b"x"], WritePlan())
    with pytest.raises(AssertionError):
        plan_fifo_pop(state, [b"x", b"y"], WritePlan())


_items = st.lists(st.binary(max_size=12), max_size=6)
_fifo_steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), _items),
        st.tuples(st.just("pop"), st.integers(min_value=1, max_value=8)),
        st.tuples(st.just("unpop"), st.none()),
        st.tuples(st.just("commit"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=_fifo_steps, capacity=st.integers(min_value=1, max_value=15), merge=st.booleans())
def test_fifo_plans_keep_counters_and_data_in_agreement(
    steps: list[tuple[str, Any]], capacity: int, merge: bool
) -> None:
    """Each step as its own batch, or (merge) pushes and pops grouped into one plan."""
    store, state = fresh_fifo()
    model: deque[bytes] = deque()
    popped_batches: list[list[bytes]] = []
    plan = WritePlan()

    def commit() -> None:
        nonlocal plan
        apply(store, plan)
        plan = WritePlan()
        assert check_fifo(store, list(model)) == state

    for action, argument in steps:
        if action == "push":
            snapshot = copy.deepcopy(plan)
            if len(model) + len(argument) > capacity:
                with pytest.raises(QueueFullError):
                    plan_fifo_push(state, argument, capacity, plan)
                assert plan == snapshot
            else:
                state = plan_fifo_push(state, argument, capacity, plan)
                model.extend(argument)
        elif action == "pop":
            count = min(argument, len(model))
            values = [model.popleft() for _ in range(count)]
            if not merge:
                # Read what the store holds at the head: it must be the model's items.
                stored = [store[DATA_CF][encode_index(state.head + i)] for i in range(count)]
                assert stored == values
            state = plan_fifo_pop(state, values, plan)
            if values:
                popped_batches.append(values)
        elif action == "unpop":
            if merge or not popped_batches:
                continue  # give-backs are their own batch in the core
            values = popped_batches.pop()
            state = plan_fifo_give_back(state, values, plan)
            model.extendleft(reversed(values))
        if not merge or action == "commit":
            commit()
        assert state.length == len(model)
        assert state.payload_size == sum(len(item) for item in model)
    commit()


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("size", [0, 8, 23, 25, 48])
def test_decode_fifo_state_rejects_wrong_length(size: int) -> None:
    with pytest.raises(QueueCorruptedError, match="bytes"):
        decode_fifo_state(b"\x00" * size)


def test_decode_fifo_state() -> None:
    state = FifoState(3, 7, 42)
    assert decode_fifo_state(encode_fifo_state(state)) == state
    assert decode_fifo_state(struct.pack(">QQQ", 5, 5, 0)) == FifoState(5, 5, 0)
    with pytest.raises(QueueCorruptedError, match="head"):
        decode_fifo_state(struct.pack(">QQQ", 8, 7, 0))
    with pytest.raises(QueueCorruptedError, match="payload"):
        decode_fifo_state(struct.pack(">QQQ", 7, 7, 1))


@pytest.mark.parametrize("size", [0, 16, 23, 25])
def test_decode_mpmc_counters_rejects_wrong_length(size: int) -> None:
    with pytest.raises(QueueCorruptedError, match="bytes"):
        decode_mpmc_counters(b"\x01" * size)


def test_decode_mpmc_counters() -> None:
    state = MpmcState(2, 9, 123_456)
    assert decode_mpmc_counters(encode_mpmc_counters(state)) == (2, 9, 123_456)
    assert decode_mpmc_counters(struct.pack(">QQQ", 4, 4, 0)) == (4, 4, 0)
    with pytest.raises(QueueCorruptedError, match="head"):
        decode_mpmc_counters(struct.pack(">QQQ", 10, 9, 0))


def test_decode_position() -> None:
    for position in (LabelPosition(3), LabelPosition(5, True), LabelPosition(7)):
        label, decoded = decode_position(b"r", encode_position(position), 3, 7)
        assert (label, decoded) == ("r", position)
    label, _ = decode_position("ключ".encode(), encode_position(LabelPosition(0)), 0, 0)
    assert label == "ключ"


@pytest.mark.parametrize(
    ("key", "raw", "match"),
    [
        pytest.param(b"r", b"\x00" * 8, "bytes", id="too-short"),
        pytest.param(b"r", b"\x00" * 10, "bytes", id="too-long"),
        pytest.param(b"r", b"", "bytes", id="empty"),
        pytest.param(b"\xff\xfe", struct.pack(">QB", 4, 0), "UTF-8", id="bad-utf8"),
        pytest.param(b"r", struct.pack(">QB", 2, 0), "outside", id="before-head"),
        pytest.param(b"r", struct.pack(">QB", 8, 0), "outside", id="after-tail"),
        pytest.param(b"r", struct.pack(">QB", 4, 2), "flags", id="unknown-flag"),
        pytest.param(b"r", struct.pack(">QB", 4, 0xFF), "flags", id="all-flags"),
    ],
)
def test_decode_position_rejects(key: bytes, raw: bytes, match: str) -> None:
    with pytest.raises(QueueCorruptedError, match=match):
        decode_position(key, raw, 3, 7)


def test_index_and_stamp_codecs() -> None:
    for index in (0, 1, 255, 256, MAX_INDEX):
        assert decode_index(encode_index(index)) == index
    assert encode_index(1) < encode_index(256) < encode_index(2**40), "byte order = queue order"
    for bad in (b"", b"\x00" * 7, b"\x00" * 9):
        with pytest.raises(QueueCorruptedError):
            decode_index(bad)
    value = stamp(987_654_321, b"payload")
    assert len(value) == TIMESTAMP_BYTES + len(b"payload")
    assert stamped_timestamp(value) == 987_654_321
    assert unstamp(value) == b"payload"
    assert unstamp(stamp(1, b"")) == b""
    for short in (b"", b"\x00" * (TIMESTAMP_BYTES - 1)):
        with pytest.raises(QueueCorruptedError):
            stamped_timestamp(short)
        with pytest.raises(QueueCorruptedError):
            unstamp(short)


# ---------------------------------------------------------------- FIFO recovery at open


@given(
    saved_head=st.integers(min_value=0, max_value=40),
    saved_length=st.integers(min_value=0, max_value=10),
    pushes=st.lists(st.booleans(), max_size=40),
)
def test_recovered_fifo_bounds_after_unsaved_one_item_pushes_and_pops(
    saved_head: int, saved_length: int, pushes: list[bool]
) -> None:
    """Keys as one-item pushes (True) and pops (False) leave them after the last save."""
    saved = FifoState(saved_head, saved_head + saved_length, 0)
    head, tail = saved.head, saved.tail
    keys = set(range(head, tail))
    for push in pushes:
        if push:
            keys.add(tail)
            tail += 1
        elif head < tail:
            keys.discard(head)
            head += 1
    changes = (head - saved.head) + (tail - saved.tail)
    first = min((key for key in keys if key >= saved.head), default=None)
    last = max(keys, default=None)
    found = recovered_fifo_bounds(saved, first, last, max_unsaved=changes)
    if head < tail:
        assert found == (head, tail)
    else:
        # An empty queue restarts past every index it can have used: its head
        # never goes back, whatever happened since the save.
        assert found == (saved.tail + changes, saved.tail + changes)
        assert found[0] >= tail
    if changes and head < tail:
        with pytest.raises(QueueCorruptedError, match="more changed than can have gone unsaved"):
            recovered_fifo_bounds(saved, first, last, max_unsaved=changes - 1)


def test_recovered_fifo_bounds_refuses_keys_that_end_before_the_saved_tail() -> None:
    with pytest.raises(QueueCorruptedError, match="ends at 9, but its last element is 4"):
        recovered_fifo_bounds(FifoState(1, 9, 0), 1, 4, max_unsaved=1024)
    with pytest.raises(QueueCorruptedError, match="holds 2000 elements, but it stores none"):
        recovered_fifo_bounds(FifoState(0, 2000, 0), None, None, max_unsaved=1024)


def test_staged_range_round_trips_and_refuses_nonsense() -> None:
    assert decode_staged_range(encode_staged_range(3, 9)) == (3, 9)
    with pytest.raises(QueueCorruptedError, match="empty range"):
        decode_staged_range(encode_staged_range(9, 9))
    with pytest.raises(QueueCorruptedError, match="15 bytes"):
        decode_staged_range(b"\x00" * 15)
