"""The pure MPMC planning functions of ``rocksq_aio.rocksdb.plan``, replayed
against a dict store (support/plan.py): adds and their timestamps, expiry,
reads, label starts, rewinds, label removal, and a model-based test.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocksq_aio import QueueFullError, StartPosition
from rocksq_aio.rocksdb.format import (
    DATA_CF,
    FORMAT_KEY,
    MAX_INDEX,
    META_CF,
    MPMC_FORMAT,
    LabelPosition,
    MpmcState,
    encode_index,
    stamped_timestamp,
    unstamp,
)
from rocksq_aio.rocksdb.plan import (
    WritePlan,
    expiry_cutoff_ms,
    label_start,
    plan_mpmc_add,
    plan_mpmc_create,
    plan_mpmc_expire,
    plan_mpmc_next,
    plan_mpmc_remove_label,
    plan_mpmc_rewind,
    readable_count,
)

from support.plan import DictStore, Newest, Oldest, apply, check_mpmc, new_store


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


def expire(store: DictStore, state: MpmcState, new_head: int) -> tuple[MpmcState, WritePlan]:
    """Expire the elements before ``new_head`` (the plan is checked as ``add`` does)."""
    plan = WritePlan()
    state = plan_mpmc_expire(state, new_head, plan)
    apply(store, plan)
    check_mpmc(store, state)
    return state, plan


def rewind(
    store: DictStore,
    state: MpmcState,
    label: str,
    start: int,
    count: int,
    *,
    expired_unseen: bool = False,
) -> MpmcState:
    """A rewind that must be accepted, applied and checked."""
    plan = WritePlan()
    state, rewound = plan_mpmc_rewind(
        state, label, start, count, plan, expired_unseen=expired_unseen
    )
    assert rewound is True
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
    state, plan = expire(store, state, 4)
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
    state, _plan = expire(store, state, 6)
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
    state, _plan = expire(store, state, 3)
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
    state, _plan = expire(store, state, 6)
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
    state = rewind(store, state, "at2", 4, 1)
    assert state.positions["at2"] == LabelPosition(4, False)
    # Unknown labels cannot be rewound.
    plan = WritePlan()
    assert plan_mpmc_rewind(state, "nobody", 0, 1, plan) == (state, False)
    assert plan.is_empty


def test_rewind_over_expired_elements_restarts_at_the_head_flagged() -> None:
    store, state = _queue_with_labels()
    state, items, _, _ = read(store, state, "at2", Oldest, 2)
    assert items == [b"2", b"3"]
    state, _plan = expire(store, state, 3)  # "at2" is at 4: not moved
    state = rewind(store, state, "at2", 2, 2)
    assert state.positions["at2"] == LabelPosition(3, True)


def test_rewind_of_a_read_that_reported_expiry_restores_the_flag() -> None:
    """The expired=True of an undelivered next() must not be lost by the rewind."""
    store, state = _queue_with_labels()
    state, _plan = expire(store, state, 3)  # "at2" moves to 3, flagged
    state, items, expired, _ = read(store, state, "at2", Oldest, 2)
    assert (items, expired) == ([b"3", b"4"], True)
    # The caller never saw the result: its expiry report goes back with it.
    state = rewind(store, state, "at2", 3, 2, expired_unseen=expired)
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
