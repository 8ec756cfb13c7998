"""Fixtures of the contract tests (``queue_path`` and ``clock`` are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.nonblocking import GatedClock


@pytest.fixture
def gated_clock() -> Iterator[GatedClock]:
    clock = GatedClock()
    yield clock
    clock.gate.set()  # never leave a worker stuck, whatever the test did
