"""The nonblocking face's worker: responses dropped unread still run (and
close finishes them), an idle worker picks up later calls, a failure of the
worker is reported by ``get()`` instead of a hang, and ``max_inflight_ops``
bounds what is in flight without losing or reordering anything.
"""

from __future__ import annotations

import gc
import sys
import threading
import time

import pytest

from rocksq_aio import StartPosition
from rocksq_aio.nonblocking import MpmcQueue, MpmcResponse, PersistentQueueWithCapacity

from support.nonblocking import GATE_TIMEOUT, GatedClock, fifo, items

pytestmark = pytest.mark.contract

Oldest = StartPosition.Oldest


def test_dropping_unfinished_responses_loses_nothing(queue_path: str) -> None:
    expected = items(1000)
    with fifo(queue_path) as queue:
        for item in expected:
            queue.push([item])  # the Response is discarded at once
        dropped = [queue.push([item]) for item in items(1000, "dropped")]
        del dropped
        gc.collect()
        # Later operations still work and see every pushed item.
        popped = queue.pop(5000).get().data
        assert popped == expected + items(1000, "dropped")
        queue.push([b"after"]).get()
        assert queue.len.get().len == 1
        assert queue.pop().get().data == [b"after"]


def test_dropped_pop_responses_still_pop(queue_path: str) -> None:
    with fifo(queue_path) as queue:
        queue.push(items(10)).get()
        for _ in range(4):
            queue.pop(1)  # discarded: the items are popped all the same
        assert queue.pop(10).get().data == items(10)[4:]


def test_close_finishes_operations_not_waited_for(queue_path: str) -> None:
    queue = fifo(queue_path)
    for item in items(500):
        queue.push([item])
    queue.close()
    with fifo(queue_path) as reopened:
        assert reopened.len.get().len == 500
        assert reopened.pop(1000).get().data == items(500)


def test_calls_after_the_worker_went_idle_are_still_run(queue_path: str) -> None:
    """The worker thread leaves its loop when nothing is queued; a later call restarts it."""
    with fifo(queue_path) as queue:
        for round_number in range(20):
            item = b"%d" % round_number
            queue.push([item]).get()
            time.sleep(0.001)  # lets the worker run dry
            assert queue.pop().get().data == [item]
            assert queue.inflight_ops == 0


def test_an_unexpected_worker_failure_is_reported_by_get_not_a_hang(
    queue_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fifo(queue_path) as queue:
        queue.push([b"kept"]).get()
        core = queue._engine
        real_drain = core.drain

        def broken_drain() -> None:
            monkeypatch.setattr(core, "drain", real_drain)
            raise ZeroDivisionError("a bug in the worker")

        monkeypatch.setattr(core, "drain", broken_drain)
        failed = queue.push([b"never stored"])
        with pytest.raises(ZeroDivisionError, match="a bug in the worker"):
            failed.get()
        # The failed push was withdrawn: it is not run by a later group.
        assert queue.pop(10).get().data == [b"kept"]
        assert queue.pop(10).get().data == []
        assert queue.inflight_ops == 0


# ---------------------------------------------------------------- in-flight limit


def test_calls_beyond_max_inflight_ops_block_and_all_complete(queue_path: str) -> None:
    per_thread = 200
    with fifo(queue_path, max_inflight_ops=2) as queue:
        failures: list[BaseException] = []

        def produce(name: str) -> None:
            try:
                responses = [queue.push([f"{name}-{i}".encode()]) for i in range(per_thread)]
                for response in responses:
                    response.get()
            except BaseException as error:  # reported to the test thread
                failures.append(error)

        threads = [threading.Thread(target=produce, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
        assert queue.inflight_ops == 0
        assert queue.len.get().len == 4 * per_thread
        popped = queue.pop(10 * per_thread).get().data
    assert popped is not None
    assert len(popped) == 4 * per_thread
    # Each producer's items keep their order.
    for n in range(4):
        mine = [item for item in popped if item.startswith(f"t{n}-".encode())]
        assert mine == [f"t{n}-{i}".encode() for i in range(per_thread)]


def test_caller_blocks_while_max_inflight_ops_are_running(
    queue_path: str, gated_clock: GatedClock
) -> None:
    with MpmcQueue(queue_path, 0, 2, clock=gated_clock) as queue:
        first = queue.add([b"a"])
        gated_clock.wait_until_entered()
        second = queue.add([b"b"])
        assert queue.inflight_ops == 2
        third: list[MpmcResponse] = []
        caller = threading.Thread(target=lambda: third.append(queue.add([b"c"])))
        caller.start()
        caller.join(0.1)
        # Two operations are in flight: the third call has not returned.
        assert caller.is_alive()
        assert third == []

        gated_clock.gate.set()
        caller.join(GATE_TIMEOUT)
        assert not caller.is_alive()
        first.get()
        second.get()
        third[0].get()
        assert queue.next("r", Oldest, 10).get().data == ([b"a", b"b", b"c"], False)
        assert queue.inflight_ops == 0


def test_get_returns_only_once_the_operation_is_done_under_contention(
    queue_path: str,
) -> None:
    # A tiny batch_bytes splits the pending operations into many groups, and
    # a tiny switch interval interleaves the callers' threads as much as
    # possible: get() must still wait for its own operation, never return a
    # result that is not there yet.
    rounds = 300
    threads_count = 8
    problems: list[str] = []
    popped: list[bytes] = []
    popped_lock = threading.Lock()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        queue = PersistentQueueWithCapacity(queue_path, 1_000_000, 1000, batch_bytes=1)
        with queue:

            def work(name: str) -> None:
                for index in range(rounds):
                    pushed = queue.push([f"{name}-{index}".encode()])
                    pushed.get()
                    if not pushed.is_ready:
                        problems.append("push: get() returned before the push was done")
                    pop = queue.pop(1)
                    data = pop.get().data
                    if not pop.is_ready or data is None:
                        problems.append(f"pop: get() returned {data!r} before it was done")
                    else:
                        with popped_lock:
                            popped.extend(data)

            threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(threads_count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            leftover = queue.pop(10 * rounds * threads_count).get().data or []
    finally:
        sys.setswitchinterval(old_interval)
    assert problems[:3] == []
    # No item was lost or duplicated.
    expected = {f"t{n}-{i}".encode() for n in range(threads_count) for i in range(rounds)}
    assert sorted(popped + leftover) == sorted(expected)
