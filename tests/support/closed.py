"""What every closed queue handle must do, whatever its kind."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rocksq_aio import QueueClosedError


def assert_closed_refuses(queue: object, *calls: Callable[[], object]) -> None:
    """``queue`` says it is closed, and each of ``calls`` raises QueueClosedError."""
    assert queue.closed  # type: ignore[attr-defined]
    for call in calls:
        with pytest.raises(QueueClosedError):
            call()
