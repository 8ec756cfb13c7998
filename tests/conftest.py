from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def queue_path(tmp_path: Path) -> str:
    """A path for a new queue directory (not created yet)."""
    return os.path.join(str(tmp_path), "queue")


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
