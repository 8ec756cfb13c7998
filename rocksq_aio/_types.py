"""Small shared types."""

from __future__ import annotations

import enum
from types import TracebackType
from typing import TypeAlias


class StartPosition(enum.IntEnum):
    """Where a new MPMC label starts reading (RocksQ's names and values)."""

    Oldest = 0
    """At the oldest element still stored."""
    Newest = 1
    """At the last element already stored (it is delivered), or at the next one when empty."""


BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What an item may be; items always come back as bytes."""


class ClosesOnExit:
    """``with queue:`` closes the queue at the end of the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
