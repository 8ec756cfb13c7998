from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.clock import FakeClock
from support.paths import ENGINES, new_queue_path


@pytest.fixture
def queue_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The path of a new queue: a directory (not created yet), or ``memory://``.

    Tests of modules marked ``contract`` run on every engine (see
    pytest_generate_tests); a test marked ``rocksdb_only`` checks what only
    the RocksDB engine has (files, crashes, the on-disk format).
    """
    with new_queue_path(getattr(request, "param", "rocksdb"), str(tmp_path)) as path:
        yield path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if (
        "queue_path" in metafunc.fixturenames
        and definition.get_closest_marker("contract") is not None
        and definition.get_closest_marker("rocksdb_only") is None
    ):
        metafunc.parametrize("queue_path", ENGINES, indirect=True)


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
