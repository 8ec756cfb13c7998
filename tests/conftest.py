from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

import rocksq_aio

ENGINES = ("rocksdb", "memory")


@pytest.fixture
def queue_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The path of a new queue: a directory (not created yet), or ``memory://``.

    Tests of modules marked ``contract`` run on every engine (see
    pytest_generate_tests); a test marked ``rocksdb_only`` checks what only
    the RocksDB engine has (files, crashes, the on-disk format).
    """
    engine = getattr(request, "param", "rocksdb")
    if engine == "memory":
        name = f"memory://{uuid.uuid4().hex}"
        yield name
        with contextlib.suppress(Exception):
            rocksq_aio.remove_queue(name)  # frees the memory a test left behind
        return
    yield os.path.join(str(tmp_path), "queue")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if (
        "queue_path" in metafunc.fixturenames
        and definition.get_closest_marker("contract") is not None
        and definition.get_closest_marker("rocksdb_only") is None
    ):
        metafunc.parametrize("queue_path", ENGINES, indirect=True)


class FakeClock:
    """A settable clock for TTL tests: no sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


@contextlib.contextmanager
def raw_database(path: Path) -> Iterator[dict[str, Any]]:
    """The queue's RocksDB opened by hand: raw bytes, every column family it has."""
    families = list(Rdict.list_cf(str(path), Options(raw_mode=True)))
    db = Rdict(
        str(path),
        Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in families},
    )
    handles = {name: db.get_column_family(name) for name in families}
    try:
        yield handles
    finally:
        handles.clear()
        db.close()
