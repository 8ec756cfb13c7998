"""A dict that stands in for a queue's RocksDB when replaying write plans."""

from __future__ import annotations

from rocksq_aio.rocksdb.format import (
    DATA_CF,
    DELIVERIES_CF,
    GIVEN_BACK_CF,
    META_CF,
    POSITIONS_CF,
    RESERVED_CF,
    encode_index,
)
from rocksq_aio.rocksdb.plan import WritePlan

DictStore = dict[str, dict[bytes, bytes]]


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
        (DELIVERIES_CF, plan.deliveries_writes),
    ):
        for key, record in writes:
            if record is None:
                store[family].pop(key, None)
            else:
                store[family][key] = record
