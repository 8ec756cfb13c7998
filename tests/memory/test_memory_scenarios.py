"""The memory engine against the RocksDB engine on chosen sequences: the rules
that need several steps in a row, and the RocksDB behaviours that look wrong,
which the memory engine matches on purpose (support/memory_pairs.py runs them).
"""

from __future__ import annotations

from typing import Any

import pytest

from support.clock import FakeClock
from support.memory_pairs import NEWEST, OLDEST, FifoPair, MpmcPair, paired

# Sequences a random search seldom finds: the rules that need several steps
# in a row, and the RocksDB behaviours that look wrong, which the memory
# engine matches on purpose (each reported to the lead).
A, B, C, D, E = b"a", b"b", b"c", b"d", b"e"

FIFO_SCENARIOS = {
    # The nack puts a and b back under the indices the later reservation
    # still holds leases on (keyed by reservation number too, so both are
    # kept): the reopen puts c, d back in front of them (see
    # test_leases.py for the exact order).
    "nack-under-a-later-lease-reopens-with-every-item": [
        ("push", [A, B, C, D, E], True),
        ("reserve", 2),
        ("reserve", 2),
        ("settle", 0, False),
        ("reopen", 100),
        ("reopen", 100),
        ("pop", 10, True),
    ],
    # The third reservation takes the indices of the second: its ack must
    # forget its own leases only, so the reopen still has c and d.
    "an-ack-under-a-reused-index-keeps-the-other-lease": [
        ("push", [A, B, C, D, E], True),
        ("reserve", 2),
        ("reserve", 2),
        ("settle", 0, False),
        ("reserve", 2),
        ("settle", 1, True),
        ("reopen", 100),
        ("pop", 10, True),
    ],
    # Settling a reservation the reopen gave back already is refused
    # (LeaseExpiredError): before generations, below index 0 an
    # AssertionError, else its items a second time and a negative pending.
    "stale-nack-below-the-first-index": [
        ("push", [A, B, C], True),
        ("reserve", 2),
        ("reopen", 100),
        ("stale_settle", 0, False),
        ("pop", 10, True),
    ],
    "stale-nack-after-an-empty-reopen": [
        ("push", [A, B], True),
        ("reserve", 2),
        ("reopen", 100),
        ("stale_settle", 0, False),
        ("pop", 10, True),
    ],
    "stale-ack-keeps-a-new-lease": [
        ("push", [A, B, C, D], True),
        ("reserve", 2),
        ("reopen", 100),
        ("reserve", 2),
        ("stale_settle", 0, True),
        ("reopen", 100),
        ("pop", 10, True),
    ],
    # Looks wrong on RocksDB: a push followed by an ack in one group does not
    # count as an arrival.
    "push-then-ack-in-one-group": [
        ("push", [A], True),
        ("reserve", 1),
        ("group", [("push", [B]), ("settle", 0, True, False)], None),
        ("group", [("push", [C]), ("pop", 1)], None),
    ],
    "empty-push-over-capacity": [
        ("push", [A, B, C], True),
        ("reopen", 2),
        ("push", [], True),
        ("push", [], False),
        ("group", [("push", []), ("pop", 1), ("push", [])], None),
    ],
    "give-back-after-reading-on": [
        ("push", [A, B, C], True),
        ("hold", 2),
        ("pop", 1, True),
        ("give_back_held", 0, None),
        ("pop", 5, True),
    ],
    "give-back-on-the-next-handle": [
        ("push", [A, B, C], True),
        ("hold", 2),
        ("reopen", 100),
        ("give_back_held", 0, 1),
        ("pop", 5, True),
    ],
}


@pytest.mark.parametrize("steps", FIFO_SCENARIOS.values(), ids=FIFO_SCENARIOS.keys())
def test_fifo_scenarios_match_rocksdb(steps: list[tuple[Any, ...]]) -> None:
    with paired(lambda name, directory: FifoPair(name, directory, 1024 * 1024)) as pair:
        pair.start(100)
        for step in steps:
            pair.play(step)


MPMC_SCENARIOS: dict[str, tuple[float, list[tuple[Any, ...]]]] = {
    "ttl-rounded-up-to-whole-milliseconds": (
        0.0015,
        [
            ("add", [A], True),
            ("advance", 1),
            ("next", ("a", OLDEST, 1), False),
            ("advance", 1),
            ("next", ("b", OLDEST, 5), False),
        ],
    ),
    "expiry-cutoff-is-inclusive": (
        0.004,
        [("add", [A], True), ("advance", 4), ("next", ("a", OLDEST, 1), True)],
    ),
    "stamps-never-go-back": (
        0.004,
        [
            ("add", [A], True),
            ("advance", 5),
            ("next", ("a", OLDEST, 1), True),
            ("advance", -100),
            ("add", [B], True),
            ("advance", 97),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "a-rewind-past-expired-elements-reports-them": (
        0.004,
        [
            ("add", [A, B, C], True),
            ("hold", ("a", OLDEST, 3)),
            ("advance", 5),
            ("add", [D], True),
            ("give_back_held", 0, None),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "a-give-back-keeps-the-expiry-report": (
        0.004,
        [
            ("add", [A], True),
            ("next", ("a", OLDEST, 1), True),
            ("add", [B], True),
            ("advance", 5),
            ("add", [C], True),
            ("hold", ("a", OLDEST, 5)),
            ("give_back_held", 0, None),
            ("next", ("a", OLDEST, 5), True),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "given-back-first-when-the-label-read-on": (
        0,
        [
            ("add", [A, B, C], True),
            ("hold", ("a", OLDEST, 1)),
            ("next", ("a", OLDEST, 1), True),
            ("give_back_held", 0, None),
            ("next", ("a", OLDEST, 5), True),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
    "newest-on-an-empty-queue-then-adds": (
        0,
        [
            ("next", ("a", NEWEST, 1), True),
            ("add", [A, B], True),
            ("next", ("a", NEWEST, 5), True),
            ("next", ("b", NEWEST, 5), True),
        ],
    ),
    "remove-label-drops-what-was-given-back": (
        0,
        [
            ("add", [A, B], True),
            ("reserve", ("a", OLDEST, 2)),
            ("settle", 0, False),
            ("remove_label", "a", True),
            ("next", ("a", NEWEST, 5), True),
        ],
    ),
    # Refused (LeaseExpiredError, before generations a KeyError for a label
    # without reservations on this handle); the rest of the group goes on.
    "a-refused-stale-settle-still-expires": (
        0.004,
        [
            ("add", [A], True),
            ("reserve", ("a", OLDEST, 1)),
            ("reopen", 0.004),
            ("advance", 5),
            ("stale_settle", 0, True),
            ("next", ("b", OLDEST, 5), True),
        ],
    ),
    # Reservation numbers restart at each open: the stale ack is refused, so
    # it cannot forget the new reservation's lease (the reopen used to lose a).
    "a-stale-ack-keeps-a-new-lease": (
        0,
        [
            ("add", [A, B, C], True),
            ("reserve", ("a", OLDEST, 1)),
            ("reopen", 0),
            ("reserve", ("a", OLDEST, 1)),
            ("stale_settle", 0, True),
            ("reopen", 0),
            ("next", ("a", OLDEST, 5), True),
        ],
    ),
}


@pytest.mark.parametrize("ttl, steps", MPMC_SCENARIOS.values(), ids=MPMC_SCENARIOS.keys())
def test_mpmc_scenarios_match_rocksdb(ttl: float, steps: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    with paired(lambda name, directory: MpmcPair(name, directory, 1024 * 1024, clock)) as pair:
        pair.start(ttl)
        for step in steps:
            pair.play(step)
