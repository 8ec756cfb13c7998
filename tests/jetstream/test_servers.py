"""The suite's NATS servers (tests/support/nats_server.py): they start, serve
JetStream, stop by PID, and never outlive the process that started them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.nats_server import NatsCluster, ServerError, start_server

nats = pytest.importorskip("nats", reason="nats-py is not installed (the jetstream extra)")

TESTS_DIRECTORY = Path(__file__).resolve().parent.parent
DEATH_TIMEOUT = 15.0  # seconds a dead parent's server may take to go (it is SIGKILLed)
FAILOVER_TIMEOUT = 60.0  # seconds for a cluster to elect a new stream leader (5-8 s here)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = DEATH_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_server_serves_jetstream(nats_server: str) -> None:
    async def main() -> Any:
        connection = await nats.connect(nats_server)
        try:
            js = connection.jetstream()
            await js.add_stream(name="servers-smoke", subjects=["servers-smoke"])
            ack = await js.publish("servers-smoke", b"hello")
            message = await js.get_msg("servers-smoke", ack.seq)
            await js.delete_stream("servers-smoke")
            return message.data
        finally:
            await connection.close()

    assert nats_server.startswith("nats://127.0.0.1:")
    assert asyncio.run(main()) == b"hello"


def test_stop_ends_the_process(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    pid = server.pid
    assert pid is not None and alive(pid)
    server.stop()
    assert not alive(pid)
    assert not server.running
    server.stop()  # stopping twice is harmless


def test_stop_ends_a_paused_process(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    pid = server.pid
    assert pid is not None
    server.pause()
    server.stop()
    assert not alive(pid)


def test_a_restarted_server_keeps_its_store(tmp_path: Path) -> None:
    server = start_server(tmp_path)

    async def publish() -> None:
        connection = await nats.connect(server.url)
        js = connection.jetstream()
        await js.add_stream(name="kept", subjects=["kept"])
        await js.publish("kept", b"survives")
        await connection.close()

    async def count() -> int:
        connection = await nats.connect(server.url)
        info = await connection.jetstream().stream_info("kept")
        await connection.close()
        return int(info.state.messages)

    try:
        asyncio.run(publish())
        server.kill()
        server.start()
        server.wait_jetstream()
        assert asyncio.run(count()) == 1
    finally:
        server.stop()


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from support.nats_server import start_server
server = start_server(__import__("pathlib").Path({directory!r}))
print(server.pid, flush=True)
if {wait}:
    time.sleep(600)
"""


def start_child(tmp_path: Path, *, wait: bool) -> tuple[subprocess.Popen[str], int]:
    """A Python process that starts a server, prints its PID, then waits or exits."""
    code = CHILD.format(tests=str(TESTS_DIRECTORY), directory=str(tmp_path), wait=wait)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip().isdigit(), f"the child printed {line!r}"
    return child, int(line)


def test_the_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    child, server_pid = start_child(tmp_path, wait=True)
    try:
        assert alive(server_pid)
        child.send_signal(signal.SIGKILL)  # no atexit: only PR_SET_PDEATHSIG can stop it
        child.wait(DEATH_TIMEOUT)
        assert wait_dead(server_pid), "the server outlived its killed parent"
    finally:
        child.kill()
        child.wait(DEATH_TIMEOUT)
        if alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_the_server_stops_when_its_parent_exits(tmp_path: Path) -> None:
    child, server_pid = start_child(tmp_path, wait=False)
    try:
        assert child.wait(DEATH_TIMEOUT + 5) == 0
        assert not alive(server_pid), "the server outlived its parent's exit"
    finally:
        if alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store directory should be")
    with pytest.raises(ServerError, match="nats"):
        start_server(tmp_path)


async def publish_until_acked(js: Any, subject: str, data: bytes, deadline: float) -> Any:
    """Publishes (with a message id, so retries are idempotent) until acknowledged."""
    while True:
        try:
            headers = {"Nats-Msg-Id": data.decode()}
            return await js.publish(subject, data, timeout=0.5, headers=headers)
        except (nats.errors.Error, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_the_cluster_elects_a_new_leader_after_a_kill(nats_cluster: NatsCluster) -> None:
    """The fixture's cluster really replicates: kill -9 the R3 stream's leader, and
    publishing resumes on a new leader without losing what was acknowledged."""

    async def main() -> tuple[str, str, int]:
        connection = await nats.connect(servers=nats_cluster.urls, max_reconnect_attempts=-1,
                                        reconnect_time_wait=0.05, error_cb=ignore)
        try:
            js = connection.jetstream()
            await js.add_stream(name="failover", subjects=["failover"], num_replicas=3)
            deadline = time.monotonic() + FAILOVER_TIMEOUT
            for i in range(50):
                await publish_until_acked(js, "failover", f"m{i}".encode(), deadline)
            old_leader = (await js.stream_info("failover")).cluster.leader
            nats_cluster.kill(old_leader)
            for i in range(50, 100):
                await publish_until_acked(js, "failover", f"m{i}".encode(), deadline)
            info = await js.stream_info("failover")
            await js.delete_stream("failover")
            return old_leader, info.cluster.leader, int(info.state.messages)
        finally:
            await connection.close()

    old_leader, new_leader, messages = asyncio.run(main())
    assert old_leader in nats_cluster.nodes
    assert new_leader != old_leader
    assert not nats_cluster.node(old_leader).running
    assert messages == 100


async def ignore(error: Exception) -> None:
    """error_cb: a reconnect failure to the killed node is expected, not news."""


def test_the_cluster_heals(nats_cluster: NatsCluster) -> None:
    nats_cluster.kill("n1")
    nats_cluster.pause("n2")
    nats_cluster.heal()
    assert all(node.running for node in nats_cluster)

    async def main() -> int:
        connection = await nats.connect(servers=nats_cluster.urls)
        try:
            js = connection.jetstream()
            deadline = time.monotonic() + FAILOVER_TIMEOUT
            while True:  # R3 needs all three peers back in the meta group
                try:
                    await js.add_stream(name="healed", subjects=["healed"], num_replicas=3)
                    break
                except nats.errors.Error:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            ack = await publish_until_acked(js, "healed", b"back", deadline)
            await js.delete_stream("healed")
            return int(ack.seq)
        finally:
            await connection.close()

    assert asyncio.run(main()) == 1


REPOSITORY = TESTS_DIRECTORY.parent


def test_the_cluster_demo_runs_the_quickstart_on_three_nodes() -> None:
    """What ``make demo-cluster`` runs: this module as a program around the quickstart."""
    done = subprocess.run(
        [sys.executable, str(TESTS_DIRECTORY / "support" / "nats_server.py"), "cluster", "--",
         sys.executable, str(REPOSITORY / "examples" / "quickstart.py"),
         "nats://{hosts}/?replicas=3"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("pushed 3 jobs", "popped [b'resize frame 1', b'resize frame 2']",
                 "consumer got [b'resize frame 4']",
                 "archiver reads ([b'camera-1 online', b'camera-2 online'], False)",
                 "labels after reopening ['alerts', 'archiver']"):
        assert line in done.stdout
    assert "cluster stopped" in done.stderr
