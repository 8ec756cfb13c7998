"""The memory engine against the RocksDB engine: Hypothesis drives both with
the same random sequences of operations (support/memory_pairs.py), and every
result, error class and counter must be the same after every step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.clock import FakeClock
from support.memory_pairs import NEWEST, OLDEST, FifoPair, MpmcPair, paired

DIFFERENTIAL_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ITEMS = st.lists(st.binary(max_size=4), max_size=4)
COUNTS = st.integers(min_value=1, max_value=4)
ANY_INDEX = st.integers(min_value=0, max_value=20)
VIA = st.booleans()  # True: the blocking method; False: run(<operation>)
ABANDON = st.one_of(st.none(), st.tuples(st.sampled_from(["withdraw", "running"]), ANY_INDEX))
BATCH_BYTES = st.sampled_from([6, 1024 * 1024])  # 6: groups split by size

FIFO_SUBOPERATIONS = st.one_of(
    st.tuples(st.just("push"), ITEMS),
    st.tuples(st.just("pop"), COUNTS),
    st.tuples(st.just("reserve"), COUNTS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans(), st.booleans()),
)
DELIVERED = st.none() | st.integers(0, 3)  # None: give back by abandon()
# Mostly reopened at once: every call on a closed queue fails the same way.
REOPEN_AFTER_CLOSE = st.sampled_from([True, True, True, False])

# The everyday operations come up four times as often as the others (a
# reopen costs RocksDB some 30 ms).
FIFO_EVERYDAY = [
    st.tuples(st.just("push"), ITEMS, VIA),
    st.tuples(st.just("pop"), COUNTS, VIA),
    st.tuples(st.just("reserve"), COUNTS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans()),
    st.tuples(st.just("group"), st.lists(FIFO_SUBOPERATIONS, min_size=1, max_size=5), ABANDON),
]
FIFO_STEPS = st.lists(
    st.one_of(
        *FIFO_EVERYDAY,
        *FIFO_EVERYDAY,
        *FIFO_EVERYDAY,
        *FIFO_EVERYDAY,
        st.tuples(st.just("stale_settle"), ANY_INDEX, st.booleans()),
        st.tuples(st.just("give_back_pop"), COUNTS, DELIVERED),
        st.tuples(st.just("give_back_reserve"), COUNTS),
        st.tuples(st.just("hold"), COUNTS),
        st.tuples(st.just("give_back_held"), ANY_INDEX, DELIVERED),
        st.tuples(st.just("reopen"), st.sampled_from([2, 4, 8, 100])),
        st.tuples(st.just("close"), REOPEN_AFTER_CLOSE),
        st.tuples(st.just("second_open"), st.booleans()),
    ),
    min_size=10,
    max_size=30,
)


@DIFFERENTIAL_SETTINGS
@given(steps=FIFO_STEPS, capacity=st.sampled_from([3, 6, 100]), batch_bytes=BATCH_BYTES)
def test_fifo_matches_rocksdb(
    steps: list[tuple[Any, ...]], capacity: int, batch_bytes: int
) -> None:
    with paired(lambda name, directory: FifoPair(name, directory, batch_bytes)) as pair:
        pair.start(capacity)
        for step in steps:
            pair.play(step)


LABELS = st.sampled_from(MpmcPair.LABELS)
POSITIONS = st.sampled_from([OLDEST, NEWEST])
READS = st.tuples(LABELS, POSITIONS, COUNTS)
TTLS = st.sampled_from([0, 0.0015, 0.004])

MPMC_SUBOPERATIONS = st.one_of(
    st.tuples(st.just("add"), ITEMS),
    st.tuples(st.just("next"), READS),
    st.tuples(st.just("reserve"), READS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans()),
    st.tuples(st.just("remove_label"), LABELS),
)
MPMC_EVERYDAY = [
    st.tuples(st.just("add"), ITEMS, VIA),
    st.tuples(st.just("next"), READS, VIA),
    st.tuples(st.just("reserve"), READS),
    st.tuples(st.just("settle"), ANY_INDEX, st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([-3, 0, 1, 2, 3, 5, 10])),
    st.tuples(st.just("group"), st.lists(MPMC_SUBOPERATIONS, min_size=1, max_size=5), ABANDON),
]
MPMC_STEPS = st.lists(
    st.one_of(
        *MPMC_EVERYDAY,
        *MPMC_EVERYDAY,
        *MPMC_EVERYDAY,
        *MPMC_EVERYDAY,
        st.tuples(st.just("stale_settle"), ANY_INDEX, st.booleans()),
        st.tuples(st.just("remove_label"), LABELS, VIA),
        st.tuples(st.just("give_back_next"), READS, DELIVERED),
        st.tuples(st.just("give_back_reserve"), READS),
        st.tuples(st.just("hold"), READS),
        st.tuples(st.just("give_back_held"), ANY_INDEX, DELIVERED),
        st.tuples(st.just("reopen"), TTLS),
        st.tuples(st.just("close"), REOPEN_AFTER_CLOSE),
        st.tuples(st.just("second_open"), st.booleans()),
    ),
    min_size=10,
    max_size=30,
)


@DIFFERENTIAL_SETTINGS
@given(steps=MPMC_STEPS, ttl=TTLS, batch_bytes=BATCH_BYTES)
def test_mpmc_matches_rocksdb(steps: list[tuple[Any, ...]], ttl: float, batch_bytes: int) -> None:
    clock = FakeClock()
    with paired(lambda name, directory: MpmcPair(name, directory, batch_bytes, clock)) as pair:
        pair.start(ttl)
        for step in steps:
            pair.play(step)
