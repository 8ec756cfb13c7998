"""The FIFO lease plans of ``rocksq_aio.rocksdb.plan``, replayed against a dict store."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocksq_aio import QueueCorruptedError
from rocksq_aio.rocksdb.format import (
    DATA_CF,
    META_CF,
    RESERVED_CF,
    STATE_KEY,
    FifoState,
    decode_fifo_lease_key,
    decode_fifo_state,
    encode_fifo_lease_key,
    encode_index,
)
from rocksq_aio.rocksdb.plan import (
    WritePlan,
    plan_fifo_ack,
    plan_fifo_create,
    plan_fifo_nack,
    plan_fifo_push,
    plan_fifo_release_dead,
    plan_fifo_reserve,
)

from support.plan import DictStore
from support.plan import apply as apply_plan


def apply(store: DictStore, plan: WritePlan) -> None:
    """``support.plan.apply``, checking that leases are neither overwritten nor missing."""
    for key, record in plan.reserved_writes:
        assert (key in store[RESERVED_CF]) == (record is None), "a lease overwritten or missing"
    apply_plan(store, plan)


def fresh() -> tuple[DictStore, FifoState]:
    store: DictStore = {DATA_CF: {}, META_CF: {}, RESERVED_CF: {}}
    state, plan = plan_fifo_create()
    apply(store, plan)
    return store, state


def stored_queue(store: DictStore) -> list[bytes]:
    state = decode_fifo_state(store[META_CF][STATE_KEY])
    assert sorted(store[DATA_CF]) == [encode_index(i) for i in range(state.head, state.tail)]
    return [store[DATA_CF][encode_index(i)] for i in range(state.head, state.tail)]


def test_lease_keys_round_trip_and_old_keys_are_reservation_zero() -> None:
    assert decode_fifo_lease_key(encode_fifo_lease_key(7, 2**64 - 1)) == (7, 2**64 - 1)
    assert decode_fifo_lease_key(encode_index(5)) == (0, 5)
    # Key order is reservation order, then index order.
    assert encode_fifo_lease_key(1, 9) < encode_fifo_lease_key(2, 0)
    with pytest.raises(QueueCorruptedError, match="lease key of 3 bytes"):
        decode_fifo_lease_key(b"abc")


def test_a_nack_under_a_later_lease_keeps_both_leases() -> None:
    store, state = fresh()
    plan = WritePlan()
    state = plan_fifo_push(state, [b"a", b"b", b"c", b"d"], 10, plan)
    apply(store, plan)
    for number, items in ((0, [b"a", b"b"]), (1, [b"c", b"d"])):
        plan = WritePlan()
        first = state.head
        state = plan_fifo_reserve(state, number, items, plan)
        apply(store, plan)
        assert first == 2 * number
    plan = WritePlan()
    state = plan_fifo_nack(state, 0, 0, [b"a", b"b"], plan)
    apply(store, plan)
    # a and b are back under the indices reservation 1 had: its leases stay.
    assert stored_queue(store) == [b"a", b"b"]
    assert state.head == 2
    assert sorted(store[RESERVED_CF]) == [encode_fifo_lease_key(1, 2), encode_fifo_lease_key(1, 3)]
    plan = WritePlan()
    state = plan_fifo_release_dead(state, sorted(store[RESERVED_CF].items()), plan)
    apply(store, plan)
    assert stored_queue(store) == [b"c", b"d", b"a", b"b"]
    assert store[RESERVED_CF] == {}


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 5)),
        st.tuples(st.just("reserve"), st.integers(1, 3)),
        st.tuples(st.just("reserve"), st.integers(1, 3)),
        st.tuples(st.just("ack"), st.integers(0, 5)),
        st.tuples(st.just("nack"), st.integers(0, 5) | st.just(0)),
        st.tuples(st.just("nack"), st.integers(0, 5) | st.just(0)),
        st.tuples(st.just("release_dead"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps=STEPS)
def test_lease_plans_match_a_model(steps: list[tuple[str, Any]]) -> None:
    """The queue and the leases on disk are what the model says after every plan."""
    store, state = fresh()
    model: deque[bytes] = deque()
    leases: dict[int, tuple[int, list[bytes]]] = {}  # number -> (first index, items)
    numbers = iter(range(10**6))
    pushed = 0
    for action, argument in steps:
        plan = WritePlan()
        if action == "push":
            items = [b"%d" % (pushed + offset) for offset in range(argument)]
            pushed += argument
            state = plan_fifo_push(state, items, 10**6, plan)
            model.extend(items)
        elif action == "reserve":
            items = [model.popleft() for _ in range(min(argument, len(model)))]
            if not items:
                continue
            head = [store[DATA_CF][encode_index(state.head + i)] for i in range(len(items))]
            assert head == items
            number = next(numbers)
            leases[number] = (state.head, items)
            state = plan_fifo_reserve(state, number, items, plan)
        elif action in ("ack", "nack"):
            if not leases:
                continue
            number = sorted(leases)[argument % len(leases)]
            first, items = leases.pop(number)
            if action == "ack":
                plan_fifo_ack(number, first, len(items), plan)
            else:
                state = plan_fifo_nack(state, number, first, items, plan)
                model.extendleft(reversed(items))
        else:
            state = plan_fifo_release_dead(state, sorted(store[RESERVED_CF].items()), plan)
            for number in sorted(leases, reverse=True):
                model.extendleft(reversed(leases[number][1]))
            leases.clear()
        apply(store, plan)
        assert decode_fifo_state(store[META_CF][STATE_KEY]) == state
        assert stored_queue(store) == list(model)
        expected = {
            encode_fifo_lease_key(number, first + offset): item
            for number, (first, items) in leases.items()
            for offset, item in enumerate(items)
        }
        assert store[RESERVED_CF] == expected
