"""rocksq_aio: an asyncio-native persistent queue, embedded on RocksDB by default.

The async classes live at the top of the package; ``rocksq_aio.blocking`` and
``rocksq_aio.nonblocking`` are drop-in replacements for RocksQ's modules. The
path names the engine: a directory (RocksDB) or ``memory://NAME`` (in memory).
"""

from __future__ import annotations

from ._async import MpmcQueue, PersistentQueue
from ._engine import Capabilities
from ._engines import remove as _remove
from ._errors import (
    LeaseExpiredError,
    QueueClosedError,
    QueueCorruptedError,
    QueueError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
)
from ._types import StartPosition

__version__ = "0.1.0"

__all__ = [
    "Capabilities",
    "LeaseExpiredError",
    "MpmcQueue",
    "PersistentQueue",
    "QueueClosedError",
    "QueueCorruptedError",
    "QueueError",
    "QueueFullError",
    "QueueIOError",
    "QueueLockedError",
    "StartPosition",
    "__version__",
    "remove_mpmc_queue",
    "remove_queue",
    "version",
]


def version() -> str:
    """The library's version (RocksQ's ``version()``)."""
    return __version__


def remove_queue(path: str) -> None:
    """Delete a FIFO queue and everything it stores; the queue must be closed."""
    _remove(path)


def remove_mpmc_queue(path: str) -> None:
    """Delete an MPMC queue and everything it stores; the queue must be closed."""
    _remove(path)
