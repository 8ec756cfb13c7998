"""Where an engine differs from the RocksDB engine by design: markers for contract tests.

Each names the difference as the README's engine table does. A test marked
with one is skipped on that engine, with the reason in the report, and the
behaviour it checks is either covered another way on that engine (said in
the reason) or is listed as a difference.
"""

from __future__ import annotations

import pytest

NO_CLOCK = pytest.mark.not_on(
    "jetstream",
    reason="no clock=: the server's clock stamps elements, so a fake clock cannot age them "
    "(TTL in real time: tests/jetstream/test_engine_mpmc.py)",
)
GATED_WORKER = pytest.mark.not_on(
    "jetstream",
    reason="no clock=: the test holds the worker inside the engine through its clock, "
    "which the JetStream engine never reads",
)


def shares_queues(path: str) -> bool:
    """No lock error: on a server, a queue is shared by every handle on its path."""
    return path.startswith(("nats://", "tls://"))


NACK_ORDER = pytest.mark.not_on(
    "jetstream",
    reason="redelivery order after nack: released items come back in the order they were "
    "released, ahead of new ones and in the same read as them (model: "
    "tests/jetstream/test_engine_reserve.py)",
)


def round_trip_scale(path: str) -> float:
    """How much longer than in-process a call takes: tests that cancel calls at random
    scale their timeouts by it, or nearly every call is cancelled (no timing asserted)."""
    return 30.0 if shares_queues(path) else 1.0


ENGINE_THREAD = pytest.mark.not_on(
    "jetstream",
    reason="the test holds the embedded engines' worker thread inside _execute or drain; "
    "the JetStream engine runs its operations on the event loop (a cancelled read releases "
    "what it was handed: the random cancellation tests of this module run on it)",
)


OPENS_AT_ONCE = pytest.mark.not_on(
    "jetstream",
    reason="an async JetStream queue opens in its constructor (its engine performs coroutines "
    "on the caller's loop, through no worker thread), not at the first await",
)
NO_LOCK = pytest.mark.not_on(
    "jetstream",
    reason="no lock error: on a server, a queue is shared by every handle on its path",
)
LEASE_OUTLIVES_HANDLE = pytest.mark.not_on(
    "jetstream",
    reason="a JetStream lease belongs to the server, not to the handle: unsettled items come "
    "back after ack_wait, not at the next open, and a reservation can be settled from any "
    "handle until then (tests/jetstream/test_engine_reserve.py)",
)


CONSUMER_SEMANTICS_NOT_YET = pytest.mark.not_yet_on(
    "jetstream",
    reason="issue 14 (lease_timeout, extend, deliveries, peek) is built on the embedded "
    "engines only; on JetStream it maps to ack_wait, in_progress and num_delivered",
)
LOCAL_WORKER_THREAD = pytest.mark.not_on(
    "jetstream",
    reason="the test drives the embedded engines' worker thread (get() running an operation "
    "in the calling thread, max_inflight_ops callers running the queue); the JetStream "
    "engine runs operations on its bridge's event loop",
)


MPMC_CANCELLATION_BUG = pytest.mark.not_yet_on(
    "jetstream",
    reason="known bug (issue 13): under random asyncio cancellation a JetStream MPMC label "
    "missed items (683 of 691 delivered in one CI run, mode 'cancel'); the FIFO variant passes",
)
