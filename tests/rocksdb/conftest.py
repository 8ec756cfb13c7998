"""Fixtures of the RocksDB-only tests: the queues the CLI tests inspect."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import build_fifo, build_mpmc
from support.clock import FakeClock


@pytest.fixture
def fifo_path(tmp_path: Path) -> str:
    """A FIFO queue: items b'a' (popped), b'line\\nbreak', b'', 0..255."""
    path = str(tmp_path / "fifo")
    build_fifo(path)
    return path


@pytest.fixture
def mpmc_path(tmp_path: Path, clock: FakeClock) -> str:
    path = str(tmp_path / "mpmc")
    build_mpmc(path, clock)
    return path
