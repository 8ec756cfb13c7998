"""The memory engine: queues kept in this process, shared by name, gone when it exits.

``memory://NAME`` paths name these queues (see ``rocksq_aio._engines``). They
behave as the RocksDB engine's queues do, reopens included (closing and
opening a name again gives its data back), but nothing reaches the disk:
they are for unit tests and examples. ``registry`` holds the named queues;
``fifo`` and ``mpmc`` are the two engines.
"""

from __future__ import annotations

from .base import CAPABILITIES
from .fifo import MemoryFifo
from .mpmc import MemoryMpmc
from .registry import remove

__all__ = ["CAPABILITIES", "MemoryFifo", "MemoryMpmc", "remove"]
