"""Which engine a path names, the same in every face.

* a plain path (``str`` or ``os.PathLike``) is a directory: the RocksDB engine;
* ``memory://NAME`` is the in-memory engine: queues shared by name inside one
  process, gone when it exits (for unit tests and examples);
* ``nats://...`` and ``tls://...`` are reserved for the NATS JetStream engine,
  not part of this release: they raise ``ValueError`` instead of creating a
  local directory named ``nats:``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import _validate
from ._engine import FifoEngine, MpmcEngine
from ._options import FifoOptions, MpmcOptions

MEMORY_SCHEME = "memory://"
_RESERVED_SCHEMES = ("nats://", "tls://")


def _memory_name(path: object) -> str | None:
    """The queue name of a ``memory://NAME`` path, None for a directory path."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        return None  # queue_path reports the type
    if path.startswith(MEMORY_SCHEME):
        name = path[len(MEMORY_SCHEME) :]
        if not name:
            raise ValueError("a memory:// path needs a queue name, e.g. memory://jobs")
        return name
    if path.startswith(_RESERVED_SCHEMES):
        raise ValueError(
            f"{path.split('://', 1)[0]}:// paths name the NATS JetStream engine, "
            "which this release of rocksq_aio does not include"
        )
    scheme, separator, _rest = path.partition("://")
    if separator and scheme.isidentifier():
        raise ValueError(f"unknown queue path scheme {scheme + '://'!r} in {path!r}")
    return None


def fifo_opener(path: object, options: FifoOptions) -> tuple[str, Callable[[], FifoEngine]]:
    """Check ``path`` and ``options`` now; the engine opens when the callable is called.

    Returns the engine's ``path`` and its opener.
    """
    name = _memory_name(path)
    directory = _validate.queue_path(path) if name is None else ""
    options.capacity()  # what every in-process engine checks first, checked before the open
    options.local()
    if name is not None:
        from .memory import MemoryFifo

        return MEMORY_SCHEME + name, lambda: MemoryFifo(name, options)
    from .rocksdb import RocksDBFifo

    return directory, lambda: RocksDBFifo(directory, options)


def mpmc_opener(path: object, options: MpmcOptions) -> tuple[str, Callable[[], MpmcEngine]]:
    """Like ``fifo_opener``, for an MPMC queue."""
    name = _memory_name(path)
    directory = _validate.queue_path(path) if name is None else ""
    options.ttl_seconds()
    options.time_source()
    options.local()
    if name is not None:
        from .memory import MemoryMpmc

        return MEMORY_SCHEME + name, lambda: MemoryMpmc(name, options)
    from .rocksdb import RocksDBMpmc

    return directory, lambda: RocksDBMpmc(directory, options)


def open_fifo(path: object, options: FifoOptions) -> FifoEngine:
    return fifo_opener(path, options)[1]()


def open_mpmc(path: object, options: MpmcOptions) -> MpmcEngine:
    return mpmc_opener(path, options)[1]()


def remove(path: object) -> None:
    """Delete a closed queue and everything it stores."""
    name = _memory_name(path)
    if name is not None:
        from .memory import remove as remove_memory_queue

        remove_memory_queue(name)
        return
    from .rocksdb import destroy

    destroy(_validate.queue_path(path))
