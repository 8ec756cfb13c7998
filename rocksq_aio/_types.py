"""Small shared types."""

from __future__ import annotations

import enum
from typing import TypeAlias


class StartPosition(enum.Enum):
    """Where a new MPMC label starts reading (RocksQ's names and values)."""

    Oldest = 0
    """At the oldest element still stored."""
    Newest = 1
    """At the last element already stored (it is delivered), or at the next one when empty."""


BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What an item may be; items always come back as bytes."""
