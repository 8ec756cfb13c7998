"""The JetStream FIFO engine: what the contract tests cannot see (paths, errors, the wire)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import rocksq_aio
from rocksq_aio import PersistentQueue, QueueError, QueueFullError, QueueUnavailableError
from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.nats_server import NatsServer, start_server

pytest.importorskip("nats")

from rocksq_aio.jetstream import protocol, url

pytestmark = pytest.mark.anyio

TIMEOUT = 30  # seconds any one test may take, whatever goes wrong


@pytest.fixture
def path(nats_server: str, request: pytest.FixtureRequest) -> str:
    return f"{nats_server}/engine-{request.node.name[:40].replace('[', '-').rstrip(']')}-" + (
        str(time.monotonic_ns())
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---------------------------------------------------------------- paths


def test_path_parts_and_options() -> None:
    target = url.parse(
        "nats://alice:s3cret@10.0.0.1:4222,10.0.0.2/jobs?replicas=3&ack_wait=5&token=t0k"
    )
    assert target.servers == ("nats://alice:s3cret@10.0.0.1:4222", "nats://alice:s3cret@10.0.0.2")
    assert (target.queue, target.replicas, target.ack_wait, target.token) == ("jobs", 3, 5.0, "t0k")
    assert "s3cret" not in target.display and "t0k" not in target.display
    assert url.parse("tls://h/q?tls_ca=/ca.pem").tls


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nats:///jobs", "needs servers"),
        ("nats://h:4222", "queue name"),
        ("nats://h:4222/", "queue name"),
        ("nats://h:x/jobs", "port"),
        ("nats://h/jobs?replicas=7", "replicas"),
        ("nats://h/jobs?ack_wait=0", "ack_wait"),
        ("nats://h/jobs?colour=red", "unknown option"),
        ("nats://h/jobs?replicas=1&replicas=3", "twice"),
        ("nats://h/jobs?storage=tape", "storage"),
    ],
)
def test_bad_paths_are_value_errors_naming_the_part(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PersistentQueueWithCapacity(path)


def test_unsafe_queue_names_are_encoded_and_kept_apart(nats_server: str) -> None:
    names = ["a.b", "a b", "a>*", "ä" * 40, "a_b"]
    assert len({url.stream_name(name) for name in names}) == len(names)
    for index, name in enumerate(names):
        with PersistentQueueWithCapacity(f"{nats_server}/{name}{time.monotonic_ns()}") as queue:
            queue.push([str(index).encode()])
            assert queue.pop() == [str(index).encode()]


# ---------------------------------------------------------------- push, pop, capacity


async def test_push_pop_len_in_order(path: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with PersistentQueue(path, max_elements=10) as queue:
            await queue.push([b"a", b"b"])
            await queue.push([b"c"])
            assert (queue.len, queue.payload_size, queue.is_empty) == (3, 3, False)
            assert await queue.pop(2) == [b"a", b"b"]
            assert await queue.pop(5) == [b"c"]
            assert await queue.pop() == []
            assert (queue.len, queue.payload_size, queue.is_empty) == (0, 0, True)


async def test_full_queue_refuses_the_whole_push_and_only_what_does_not_fit(path: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with PersistentQueue(path, max_elements=4) as queue:
            await queue.push([b"1", b"2", b"3"])
            with pytest.raises(QueueFullError):
                await queue.push([b"4", b"5"])
            # Concurrent pushes go out as one batch; refused for capacity, it is
            # sent again push by push, so the one that fits is stored.
            results: list[str] = []

            async def push(items: list[bytes]) -> None:
                try:
                    await queue.push(items)
                    results.append("ok")
                except QueueFullError:
                    results.append("full")

            async with anyio.create_task_group() as group:
                group.start_soon(push, [b"x", b"y"])
                group.start_soon(push, [b"z"])
            assert sorted(results) == ["full", "ok"]
            assert await queue.pop(10) == [b"1", b"2", b"3", b"z"]


def test_room_freed_by_a_pop_is_usable_at_once(path: str) -> None:
    # The server frees a WorkQueue message when it has processed the ack: a
    # push refused meanwhile waits for this handle's acks and is sent again.
    with PersistentQueueWithCapacity(path, max_elements=1) as queue:
        for round_ in range(30):
            queue.push([b"%d" % round_])
            assert queue.pop() == [b"%d" % round_]


def test_a_push_beyond_the_batch_limit_is_refused_naming_it(path: str) -> None:
    with PersistentQueueWithCapacity(path + "?batch_limit=5") as queue:
        with pytest.raises(ValueError, match=r"atomic batch limit of 5"):
            queue.push([b"x"] * 6)
        queue.push([b"x"] * 5)
        assert queue.len == 5


async def test_concurrent_pushes_are_group_committed(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = protocol.publish

    async def counting(link: Any, target: Any, items: list[bytes]) -> int:
        calls.append(len(items))
        return await real(link, target, items)

    monkeypatch.setattr("rocksq_aio.jetstream.publisher.protocol.publish", counting)
    with anyio.fail_after(TIMEOUT):
        async with PersistentQueue(path) as queue:
            async with anyio.create_task_group() as group:
                for index in range(200):
                    group.start_soon(queue.push, [b"%03d" % index])
            got = await queue.pop(1000)
    assert sorted(got) == [b"%03d" % index for index in range(200)]
    assert sum(calls) == 200
    assert len(calls) < 20, f"200 concurrent pushes took {len(calls)} publishes"


async def test_pop_wait_is_woken_by_a_push_from_another_thread(path: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with PersistentQueue(path) as queue:

            def push_later() -> None:
                time.sleep(0.2)
                with PersistentQueueWithCapacity(path) as other:
                    other.push([b"from a thread"])

            thread = threading.Thread(target=push_later)
            thread.start()
            try:
                assert await queue.pop_wait(1, timeout=10) == [b"from a thread"]
            finally:
                thread.join(10)


# ---------------------------------------------------------------- kinds and foreign streams


def test_a_stream_that_is_not_a_queue_is_refused_and_left_alone(nats_server: str) -> None:
    import asyncio

    import nats

    name = f"foreign{time.monotonic_ns()}"

    async def create() -> None:
        client = await nats.connect(nats_server)
        try:
            await client.jetstream().add_stream(name=name, subjects=[f"foreign.{name}"])
        finally:
            await client.close()

    asyncio.run(create())
    with pytest.raises(QueueError, match="not a rocksq_aio queue"):
        PersistentQueueWithCapacity(f"{nats_server}/{name}")
    with pytest.raises(QueueError, match="not a rocksq_aio queue"):
        rocksq_aio.remove_queue(f"{nats_server}/{name}")


# ---------------------------------------------------------------- servers that fail


def test_an_unreachable_server_is_a_clear_error_in_bounded_time() -> None:
    started = time.monotonic()
    with pytest.raises(QueueUnavailableError, match="no server answered"):
        PersistentQueueWithCapacity(f"nats://127.0.0.1:{_free_port()}/q?connect_timeout=1")
    assert time.monotonic() - started < TIMEOUT


def test_a_wrong_token_is_a_clear_error(tmp_path: Path) -> None:
    server = NatsServer(
        "auth",
        ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(tmp_path / "store"),
         "--ports_file_dir", str(tmp_path), "--auth", "right-token"],
        tmp_path,
    )
    server.start()
    try:
        server.wait_listening()
        base = f"nats://127.0.0.1:{server.port}/q?connect_timeout=2"
        with pytest.raises(QueueUnavailableError, match="credentials"):
            PersistentQueueWithCapacity(base + "&token=wrong-token")
        with PersistentQueueWithCapacity(base + "&token=right-token") as queue:
            queue.push([b"authorised"])
            assert queue.pop() == [b"authorised"]
    finally:
        server.stop()


def test_a_server_gone_mid_use_raises_queue_unavailable_after_the_deadline(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    try:
        queue = PersistentQueueWithCapacity(f"{server.url}/q?timeout=1.5")
        queue.push([b"kept"])
        server.pause()  # SIGSTOP: connected, but nothing answers
        started = time.monotonic()
        with pytest.raises(QueueUnavailableError, match=r"within 1.5 s"):
            queue.push([b"lost?"])
        assert time.monotonic() - started < TIMEOUT
        assert issubclass(QueueUnavailableError, rocksq_aio.QueueIOError)
        server.resume()
        assert queue.pop(5)[0] == b"kept"
        queue.close()
    finally:
        server.stop()
