"""The FIFO lease and deliveries plans of ``rocksq_aio.rocksdb.plan``, replayed on a dict."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocksq_aio import QueueCorruptedError
from rocksq_aio.rocksdb.format import (
    DATA_CF,
    DELIVERIES_CF,
    META_CF,
    RESERVED_CF,
    STATE_KEY,
    FifoState,
    decode_count,
    decode_fifo_lease,
    decode_fifo_lease_key,
    decode_fifo_state,
    decode_index,
    encode_fifo_lease,
    encode_fifo_lease_key,
    encode_index,
)
from rocksq_aio.rocksdb.plan import (
    Released,
    WritePlan,
    plan_fifo_ack,
    plan_fifo_create,
    plan_fifo_pop,
    plan_fifo_push,
    plan_fifo_release,
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
    store: DictStore = {DATA_CF: {}, META_CF: {}, RESERVED_CF: {}, DELIVERIES_CF: {}}
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


def stored_deliveries(store: DictStore) -> dict[int, int]:
    return {decode_index(key): decode_count(value) for key, value in store[DELIVERIES_CF].items()}


def test_a_nack_under_a_later_lease_keeps_both_leases() -> None:
    store, state = fresh()
    plan = WritePlan()
    state = plan_fifo_push(state, [b"a", b"b", b"c", b"d"], 10, plan)
    apply(store, plan)
    for number, items in ((0, [b"a", b"b"]), (1, [b"c", b"d"])):
        plan = WritePlan()
        first = state.head
        state = plan_fifo_reserve(state, number, items, [1, 1], 5, plan)
        apply(store, plan)
        assert first == 2 * number
    plan = WritePlan()
    state = plan_fifo_release(state, [Released(0, 0, [b"a", b"b"], [1, 1])], plan)
    apply(store, plan)
    # a and b are back under the indices reservation 1 had: its leases stay.
    assert stored_queue(store) == [b"a", b"b"]
    assert state.head == 2
    assert sorted(store[RESERVED_CF]) == [encode_fifo_lease_key(1, 2), encode_fifo_lease_key(1, 3)]
    assert stored_deliveries(store) == {2: 1, 3: 1}
    plan = WritePlan()
    leases = [
        (key, decode_fifo_lease(value)[2], decode_fifo_lease(value)[0])
        for key, value in sorted(store[RESERVED_CF].items())
    ]
    state = plan_fifo_release_dead(state, leases, plan)
    apply(store, plan)
    assert stored_queue(store) == [b"c", b"d", b"a", b"b"]
    assert stored_deliveries(store) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert store[RESERVED_CF] == {}


def test_lease_values_carry_deliveries_and_the_reservation_time() -> None:
    value = encode_fifo_lease(7, 123, b"item")
    assert decode_fifo_lease(value) == (7, 123, b"item")
    assert decode_fifo_lease(b"item", counted=False) == (1, 0, b"item")  # v1, v2
    with pytest.raises(QueueCorruptedError, match="no header"):
        decode_fifo_lease(b"short")


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 5)),
        st.tuples(st.just("pop"), st.integers(1, 3)),
        st.tuples(st.just("reserve"), st.integers(1, 3)),
        st.tuples(st.just("reserve"), st.integers(1, 3)),
        st.tuples(st.just("ack"), st.integers(0, 5)),
        st.tuples(st.just("nack"), st.integers(0, 5) | st.just(0)),
        st.tuples(st.just("nack"), st.integers(0, 5) | st.just(0)),
        st.tuples(st.just("expire"), st.integers(1, 3)),
        st.tuples(st.just("release_dead"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps=STEPS)
def test_lease_plans_match_a_model(steps: list[tuple[str, Any]]) -> None:
    """The queue, its deliveries and the leases on disk are what the model says after every plan.

    The model: each item has a count of deliveries; a reserve counts one more
    and moves it into its lease; a release (nack, expiry of several, a dead
    process at open) puts them back in front, oldest reservation first.
    """
    store, state = fresh()
    model: deque[tuple[bytes, int]] = deque()
    leases: dict[int, tuple[int, list[tuple[bytes, int]]]] = {}  # number -> (first, items)
    numbers = iter(range(10**6))
    pushed = 0

    def release(numbers_released: list[int]) -> list[Released]:
        released = []
        back: list[tuple[bytes, int]] = []
        for number in numbers_released:
            first, items = leases.pop(number)
            released.append(Released(number, first, [i for i, _ in items], [n for _, n in items]))
            back.extend(items)
        model.extendleft(reversed(back))
        return released

    for action, argument in steps:
        plan = WritePlan()
        counts = stored_deliveries(store)
        if action == "push":
            items = [b"%d" % (pushed + offset) for offset in range(argument)]
            pushed += argument
            state = plan_fifo_push(state, items, 10**6, plan)
            model.extend((item, 0) for item in items)
        elif action in ("pop", "reserve"):
            taken = [model.popleft() for _ in range(min(argument, len(model)))]
            if not taken:
                continue
            indices = range(state.head, state.head + len(taken))
            head = [store[DATA_CF][encode_index(i)] for i in indices]
            assert head == [item for item, _n in taken]
            assert [counts.get(i, 0) for i in indices] == [n for _item, n in taken]
            counted = [i for i in indices if i in counts]
            if action == "pop":
                state = plan_fifo_pop(state, head, plan, counted)
            else:
                number = next(numbers)
                leased = [(item, n + 1) for item, n in taken]
                leases[number] = (state.head, leased)
                state = plan_fifo_reserve(
                    state, number, head, [n for _i, n in leased], 99, plan, counted
                )
        elif action == "ack" and leases:
            number = sorted(leases)[argument % len(leases)]
            first, items = leases.pop(number)
            plan_fifo_ack(number, first, len(items), plan)
        elif action == "nack" and leases:
            number = sorted(leases)[argument % len(leases)]
            state = plan_fifo_release(state, release([number]), plan)
        elif action == "expire" and leases:
            state = plan_fifo_release(state, release(sorted(leases)[:argument]), plan)
        elif action == "release_dead":
            dead = [
                (key, decode_fifo_lease(value)[2], decode_fifo_lease(value)[0])
                for key, value in sorted(store[RESERVED_CF].items())
            ]
            state = plan_fifo_release_dead(state, dead, plan)
            release(sorted(leases))
        apply(store, plan)
        assert decode_fifo_state(store[META_CF][STATE_KEY]) == state
        assert stored_queue(store) == [item for item, _n in model]
        assert stored_deliveries(store) == {
            index: n for index, (_item, n) in enumerate(model, state.head) if n
        }
        expected = {
            encode_fifo_lease_key(number, first + offset): encode_fifo_lease(n, 99, item)
            for number, (first, items) in leases.items()
            for offset, (item, n) in enumerate(items)
        }
        assert store[RESERVED_CF] == expected
