"""The RocksDB engine: each queue is one RocksDB directory, opened by one process.

``format`` and ``plan`` are pure (the on-disk layout and the planning of every
write batch); ``store`` and ``directory`` are the only modules that call
rocksdict for a queue in use; ``recovery`` opens a queue; ``fifo`` and ``mpmc``
are the two engines. The command line (``rocksq_aio.cli``) inspects directories
through ``directory`` too.
"""

from __future__ import annotations

from .base import CAPABILITIES
from .directory import destroy
from .fifo import RocksDBFifo
from .mpmc import RocksDBMpmc

__all__ = ["CAPABILITIES", "RocksDBFifo", "RocksDBMpmc", "destroy"]
