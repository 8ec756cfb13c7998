"""A dict standing in for the RocksDB store, to replay the pure planning
functions of ``rocksq_aio.rocksdb.plan`` against (tests/rocksdb/test_plan.py,
test_plan_mpmc.py), with the checks that its counters agree with its data.
"""

from __future__ import annotations

from rocksq_aio import StartPosition
from rocksq_aio.rocksdb.format import (
    DATA_CF,
    GIVEN_BACK_CF,
    META_CF,
    POSITIONS_CF,
    RESERVED_CF,
    STATE_KEY,
    FifoState,
    MpmcState,
    decode_fifo_state,
    decode_index,
    decode_mpmc_counters,
    decode_position,
    encode_index,
    stamped_timestamp,
)
from rocksq_aio.rocksdb.plan import WritePlan

DictStore = dict[str, dict[bytes, bytes]]

Oldest = StartPosition.Oldest
Newest = StartPosition.Newest


def new_store() -> DictStore:
    return {DATA_CF: {}, META_CF: {}, POSITIONS_CF: {}}


def apply(store: DictStore, plan: WritePlan) -> None:
    """Mirror of ``Store.apply``: data puts, data deletes, meta puts, then the keyed families.

    A family the store has no dict for must not be written.
    """
    data = store[DATA_CF]
    for index, value in plan.data_puts:
        data[encode_index(index)] = value
    for index in range(plan.data_delete_start, plan.data_delete_stop):
        data.pop(encode_index(index), None)
    for key, value in plan.meta_puts:
        store[META_CF][key] = value
    for family, writes in (
        (POSITIONS_CF, plan.position_writes),
        (GIVEN_BACK_CF, plan.given_back_writes),
        (RESERVED_CF, plan.reserved_writes),
    ):
        for key, record in writes:
            if record is None:
                store[family].pop(key, None)
            else:
                store[family][key] = record


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
