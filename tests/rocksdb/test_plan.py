"""The pure planning functions of ``rocksq_aio.rocksdb.plan``, replayed against a dict store."""

from __future__ import annotations

import copy
import struct
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocksq_aio import QueueCorruptedError, QueueFullError, StartPosition
from rocksq_aio.rocksdb.format import (
    DATA_CF,
    FIFO_FORMAT,
    FORMAT_KEY,
    MAX_INDEX,
    META_CF,
    MPMC_FORMAT,
    POSITIONS_CF,
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
    expiry_cutoff_ms,
    label_start,
    plan_fifo_create,
    plan_fifo_give_back,
    plan_fifo_pop,
    plan_fifo_push,
    plan_fifo_pushes,
    plan_mpmc_add,
    plan_mpmc_create,
    plan_mpmc_expire,
    plan_mpmc_next,
    plan_mpmc_remove_label,
    plan_mpmc_rewind,
    readable_count,
    recovered_fifo_bounds,
)

from support.plan_store import apply

DictStore = dict[str, dict[bytes, bytes]]

Oldest = StartPosition.Oldest
Newest = StartPosition.Newest


def new_store() -> DictStore:
    return {DATA_CF: {}, META_CF: {}, POSITIONS_CF: {}}


def data_indices(store: DictStore) -> list[int]:
    return sorted(decode_index(key) for key in store[DATA_CF])


def check_fifo(store: DictStore, expected: list[bytes]) -> FifoState:
    """The counters in meta agree with the data family, which holds ``expected``."""
    state = decode_fifo_state(store[META_CF][STATE_KEY])
    indices = data_indices(store)
    if indices:
        assert state.head == indices[0]
        assert state.tail == indices[-1] + 1
        assert indices == list(range(state.head, state.tail)), "data keys must be contiguous"
    else:
        assert state.head == state.tail
    assert state.payload_size == sum(len(value) for value in store[DATA_CF].values())
    assert state.length == len(expected)
    assert [store[DATA_CF][encode_index(i)] for i in range(state.head, state.tail)] == expected
    return state


def load_mpmc(store: DictStore) -> MpmcState:
    head, tail, newest = decode_mpmc_counters(store[META_CF][STATE_KEY])
    positions = dict(
        decode_position(key, value, head, tail) for key, value in store[POSITIONS_CF].items()
    )
    return MpmcState(head, tail, newest, positions)


def check_mpmc(store: DictStore, state: MpmcState) -> None:
    """What a reopen would load equals the state the planner returned."""
    loaded = load_mpmc(store)
    assert (loaded.head, loaded.tail, loaded.newest_timestamp_ms) == (
        state.head,
        state.tail,
        state.newest_timestamp_ms,
    )
    assert loaded.positions == state.positions
    assert data_indices(store) == list(range(state.head, state.tail))
    stamps = [
        stamped_timestamp(store[DATA_CF][encode_index(i)]) for i in range(state.head, state.tail)
    ]
    assert stamps == sorted(stamps), "timestamps must never decrease along the queue"
    if stamps:
        assert stamps[-1] == state.newest_timestamp_ms


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


# ---------------------------------------------------------------- MPMC


def fresh_mpmc() -> tuple[DictStore, MpmcState]:
    store = new_store()
    state, plan = plan_mpmc_create()
    apply(store, plan)
    assert store[META_CF][FORMAT_KEY] == MPMC_FORMAT
    check_mpmc(store, state)
    return store, state


def add(store: DictStore, state: MpmcState, items: list[bytes], now_ms: int) -> MpmcState:
    plan = WritePlan()
    state = plan_mpmc_add(state, items, now_ms, plan)
    apply(store, plan)
    check_mpmc(store, state)
    return state


def read(
    store: DictStore, state: MpmcState, label: str, start_position: StartPosition, limit: int
) -> tuple[MpmcState, list[bytes], bool, WritePlan]:
    """What MpmcCore.next does, against the dict store."""
    plan = WritePlan()
    start = label_start(state, label, start_position)
    count = readable_count(state, start, limit)
    items = [
        unstamp(store[DATA_CF][encode_index(index)])
        for index in range(start.index, start.index + count)
    ]
    state, expired = plan_mpmc_next(state, label, start, count, plan)
    apply(store, plan)
    check_mpmc(store, state)
    return state, items, expired, plan


def test_mpmc_add_stamps_monotonic_timestamps() -> None:
    store, state = fresh_mpmc()
    state = add(store, state, [b"a", b"b"], 5_000)
    assert state.newest_timestamp_ms == 5_000
    state = add(store, state, [b"c"], 3_000)  # the clock stepped back
    assert state.newest_timestamp_ms == 5_000
    assert stamped_timestamp(store[DATA_CF][encode_index(2)]) == 5_000
    state = add(store, state, [b"d"], 9_000)
    assert state.newest_timestamp_ms == 9_000
    assert [stamped_timestamp(store[DATA_CF][encode_index(i)]) for i in range(4)] == [
        5_000,
        5_000,
        5_000,
        9_000,
    ]
    assert [unstamp(store[DATA_CF][encode_index(i)]) for i in range(4)] == [
        b"a",
        b"b",
        b"c",
        b"d",
    ]
    assert (state.head, state.tail) == (0, 4)


def test_mpmc_add_nothing_plans_nothing() -> None:
    _store, state = fresh_mpmc()
    plan = WritePlan()
    assert plan_mpmc_add(state, [], 1_000, plan) == state
    assert plan.is_empty


def test_mpmc_add_beyond_the_index_space_is_refused() -> None:
    state = MpmcState(MAX_INDEX - 2, MAX_INDEX - 1, 0)
    plan = WritePlan()
    with pytest.raises(QueueFullError):
        plan_mpmc_add(state, [b"a", b"b"], 1, plan)
    assert plan.is_empty


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.lists(st.binary(max_size=4), min_size=1, max_size=4),
            st.integers(min_value=0, max_value=10**13),
        ),
        max_size=20,
    )
)
def test_mpmc_timestamps_never_decrease(batches: list[tuple[list[bytes], int]]) -> None:
    store, state = fresh_mpmc()
    for items, now_ms in batches:
        state = add(store, state, items, now_ms)  # check_mpmc asserts monotonic stamps
    assert state.tail == sum(len(items) for items, _ in batches)
    assert state.newest_timestamp_ms == max((now for _, now in batches), default=0)


def _queue_with_labels() -> tuple[DictStore, MpmcState]:
    """Six elements [0, 6) and labels at 0, 2, 4 and 6 (the tail)."""
    store, state = fresh_mpmc()
    state = add(store, state, [b"0", b"1", b"2", b"3", b"4", b"5"], 1_000)
    for label, count in (("at0", 0), ("at2", 2), ("at4", 4), ("at6", 6)):
        state, items, expired, _ = read(store, state, label, Oldest, max(count, 1))
        if count == 0:
            # Put "at0" back to the head: it has read nothing.
            plan = WritePlan()
            state, rewound = plan_mpmc_rewind(state, label, 0, 1, plan)
            assert rewound
            apply(store, plan)
        else:
            assert items == [str(i).encode() for i in range(count)]
            assert expired is False
    assert {label: p.index for label, p in state.positions.items()} == {
        "at0": 0,
        "at2": 2,
        "at4": 4,
        "at6": 6,
    }
    check_mpmc(store, state)
    return store, state


def test_mpmc_expire_moves_only_labels_behind_the_new_head() -> None:
    store, state = _queue_with_labels()
    plan = WritePlan()
    state = plan_mpmc_expire(state, 4, plan)
    apply(store, plan)
    check_mpmc(store, state)
    assert (state.head, state.tail) == (4, 6)
    assert state.positions == {
        "at0": LabelPosition(4, True),
        "at2": LabelPosition(4, True),
        "at4": LabelPosition(4, False),
        "at6": LabelPosition(6, False),
    }
    written = {key.decode() for key, _ in plan.position_writes}
    assert written == {"at0", "at2"}, "labels not behind the head are not rewritten"
    assert (plan.data_delete_start, plan.data_delete_stop) == (0, 4)


def test_mpmc_expire_everything() -> None:
    store, state = _queue_with_labels()
    plan = WritePlan()
    state = plan_mpmc_expire(state, 6, plan)
    apply(store, plan)
    check_mpmc(store, state)
    assert state.length == 0
    assert state.positions["at6"] == LabelPosition(6, False)
    assert all(state.positions[label].expired_unseen for label in ("at0", "at2", "at4"))


def test_mpmc_expire_not_past_the_head_plans_nothing() -> None:
    _store, state = _queue_with_labels()
    plan = WritePlan()
    assert plan_mpmc_expire(state, 0, plan) == state
    assert plan.is_empty
    with pytest.raises(AssertionError):
        plan_mpmc_expire(state, 7, WritePlan())


def test_mpmc_next_advances_and_reports_the_flag_once() -> None:
    store, state = _queue_with_labels()
    plan = WritePlan()
    state = plan_mpmc_expire(state, 3, plan)
    apply(store, plan)
    state, items, expired, _ = read(store, state, "at0", Oldest, 2)
    assert (items, expired) == ([b"3", b"4"], True)
    assert state.positions["at0"] == LabelPosition(5, False)
    state, items, expired, _ = read(store, state, "at0", Oldest, 2)
    assert (items, expired) == ([b"5"], False)
    # at4 had read the expired elements: no flag.
    state, items, expired, _ = read(store, state, "at4", Oldest, 10)
    assert (items, expired) == ([b"4", b"5"], False)


def test_mpmc_next_with_nothing_to_read_writes_nothing() -> None:
    store, state = _queue_with_labels()
    state, items, expired, plan = read(store, state, "at6", Oldest, 5)
    assert (items, expired) == ([], False)
    assert plan.is_empty
    # ... unless it must clear the flag, or create the label.
    plan = WritePlan()
    state = plan_mpmc_expire(state, 6, plan)
    apply(store, plan)
    state, items, expired, plan = read(store, state, "at2", Oldest, 5)
    assert (items, expired) == ([], True)
    assert state.positions["at2"] == LabelPosition(6, False)
    assert not plan.is_empty
    state, items, expired, plan = read(store, state, "new", Newest, 5)
    assert (items, expired) == ([], False)
    assert state.positions["new"] == LabelPosition(6, False)
    assert not plan.is_empty


def test_label_start_rules() -> None:
    empty = MpmcState(4, 4, 0)
    assert label_start(empty, "x", Oldest) == LabelPosition(4)
    assert label_start(empty, "x", Newest) == LabelPosition(4)
    stored = MpmcState(4, 9, 0, {"known": LabelPosition(6, True)})
    assert label_start(stored, "x", Oldest) == LabelPosition(4)
    assert label_start(stored, "x", Newest) == LabelPosition(8), "Newest starts AT the last one"
    assert label_start(stored, "known", Oldest) == LabelPosition(6, True)
    assert label_start(stored, "known", Newest) == LabelPosition(6, True)


def test_readable_count() -> None:
    state = MpmcState(2, 7, 0)
    assert readable_count(state, LabelPosition(2), 1) == 1
    assert readable_count(state, LabelPosition(2), 100) == 5
    assert readable_count(state, LabelPosition(6), 2**64) == 1
    assert readable_count(state, LabelPosition(7), 10) == 0


def test_plan_mpmc_next_beyond_the_tail_is_refused() -> None:
    state = MpmcState(0, 3, 0)
    with pytest.raises(AssertionError):
        plan_mpmc_next(state, "x", LabelPosition(2), 2, WritePlan())


def test_rewind_applies_only_when_the_label_has_not_moved() -> None:
    store, state = _queue_with_labels()
    state, items, _, _ = read(store, state, "at2", Oldest, 2)
    assert items == [b"2", b"3"]
    # The label read further since: the rewind is refused and writes nothing.
    state, more, _, _ = read(store, state, "at2", Oldest, 1)
    assert more == [b"4"]
    plan = WritePlan()
    same, rewound = plan_mpmc_rewind(state, "at2", 2, 2, plan)
    assert rewound is False
    assert same == state
    assert plan.is_empty
    # Rewinding the last read is accepted.
    plan = WritePlan()
    state, rewound = plan_mpmc_rewind(state, "at2", 4, 1, plan)
    assert rewound is True
    apply(store, plan)
    check_mpmc(store, state)
    assert state.positions["at2"] == LabelPosition(4, False)
    # Unknown labels cannot be rewound.
    plan = WritePlan()
    assert plan_mpmc_rewind(state, "nobody", 0, 1, plan) == (state, False)
    assert plan.is_empty


def test_rewind_over_expired_elements_restarts_at_the_head_flagged() -> None:
    store, state = _queue_with_labels()
    state, items, _, _ = read(store, state, "at2", Oldest, 2)
    assert items == [b"2", b"3"]
    plan = WritePlan()
    state = plan_mpmc_expire(state, 3, plan)  # "at2" is at 4: not moved
    apply(store, plan)
    plan = WritePlan()
    state, rewound = plan_mpmc_rewind(state, "at2", 2, 2, plan)
    assert rewound is True
    apply(store, plan)
    check_mpmc(store, state)
    assert state.positions["at2"] == LabelPosition(3, True)


def test_rewind_of_a_read_that_reported_expiry_restores_the_flag() -> None:
    """The expired=True of an undelivered next() must not be lost by the rewind."""
    store, state = _queue_with_labels()
    plan = WritePlan()
    state = plan_mpmc_expire(state, 3, plan)  # "at2" moves to 3, flagged
    apply(store, plan)
    state, items, expired, _ = read(store, state, "at2", Oldest, 2)
    assert (items, expired) == ([b"3", b"4"], True)
    plan = WritePlan()
    # The caller never saw the result: its expiry report goes back with it.
    state, rewound = plan_mpmc_rewind(state, "at2", 3, 2, plan, expired_unseen=expired)
    assert rewound is True
    apply(store, plan)
    check_mpmc(store, state)
    assert state.positions["at2"].index == 3
    _state, items, expired, _ = read(store, state, "at2", Oldest, 2)
    assert (items, expired) == ([b"3", b"4"], True)


def test_remove_label_plan() -> None:
    store, state = _queue_with_labels()
    plan = WritePlan()
    state, removed = plan_mpmc_remove_label(state, "at2", plan)
    assert removed is True
    assert plan.position_writes == [(b"at2", None)]
    apply(store, plan)
    check_mpmc(store, state)
    assert sorted(state.positions) == ["at0", "at4", "at6"]
    plan = WritePlan()
    again, removed = plan_mpmc_remove_label(state, "at2", plan)
    assert removed is False
    assert again == state
    assert plan.is_empty
    # A removed label starts over.
    state, items, expired, _ = read(store, state, "at2", Newest, 10)
    assert (items, expired) == ([b"5"], False)


def test_expiry_cutoff() -> None:
    assert expiry_cutoff_ms(10_000, 0) is None
    assert expiry_cutoff_ms(10_000, 1_500) == 8_500


_labels = st.sampled_from(["a", "b", "c", "é"])
_mpmc_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.lists(st.binary(max_size=4), max_size=4),
            st.integers(min_value=-3_000, max_value=3_000),
        ),
        st.tuples(
            st.just("next"),
            _labels,
            st.sampled_from([Oldest, Newest]),
            st.integers(min_value=1, max_value=5),
        ),
        st.tuples(st.just("expire"), st.integers(min_value=0, max_value=5_000)),
        st.tuples(st.just("remove"), _labels),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=_mpmc_steps)
def test_mpmc_plans_against_a_model(steps: list[tuple[Any, ...]]) -> None:
    store, state = fresh_mpmc()
    now_ms = 1_000_000
    elements: dict[int, bytes] = {}
    head = tail = 0
    positions: dict[str, tuple[int, bool]] = {}
    for step in steps:
        if step[0] == "add":
            _, items, delta = step
            now_ms += delta
            state = add(store, state, items, now_ms)
            for item in items:
                elements[tail] = item
                tail += 1
        elif step[0] == "next":
            _, label, start_position, limit = step
            if label in positions:
                index, flag = positions[label]
            elif start_position is Oldest or head == tail:
                index, flag = (head if start_position is Oldest else tail), False
            else:
                index, flag = tail - 1, False
            count = min(limit, tail - index)
            state, items, expired, _ = read(store, state, label, start_position, limit)
            assert items == [elements[i] for i in range(index, index + count)]
            assert expired is flag
            positions[label] = (index + count, False)
        elif step[0] == "expire":
            # Expire everything stamped at or before a cutoff, as MpmcCore does.
            cutoff = expiry_cutoff_ms(now_ms, step[1])
            new_head = head
            while (
                cutoff is not None
                and new_head < tail
                and stamped_timestamp(store[DATA_CF][encode_index(new_head)]) <= cutoff
            ):
                new_head += 1
            plan = WritePlan()
            state = plan_mpmc_expire(state, new_head, plan)
            apply(store, plan)
            for label, (index, _flag) in positions.items():
                if index < new_head:
                    positions[label] = (new_head, True)
            head = max(head, new_head)
        else:
            plan = WritePlan()
            state, removed = plan_mpmc_remove_label(state, step[1], plan)
            assert removed is (step[1] in positions)
            positions.pop(step[1], None)
            apply(store, plan)
        check_mpmc(store, state)
        assert (state.head, state.tail) == (head, tail)
        assert {label: (p.index, p.expired_unseen) for label, p in state.positions.items()} == (
            positions
        )


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
