"""Which engine a path names, the same in every face.

* a plain path (``str`` or ``os.PathLike``) is a directory: the RocksDB engine;
* ``memory://NAME`` is the in-memory engine: queues shared by name inside one
  process, gone when it exits (for unit tests and examples);
* ``nats://HOSTS/NAME`` and ``tls://HOSTS/NAME`` are the NATS JetStream
  engine (``rocksq_aio.jetstream``, the ``jetstream`` extra): the queue is a
  stream on those servers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from . import _validate
from ._engine import Capabilities, FifoEngine, MpmcEngine
from ._options import FifoOptions, MpmcOptions

EngineT = TypeVar("EngineT")

MEMORY_SCHEME = "memory://"
_JETSTREAM_SCHEMES = ("nats://", "tls://")


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
    scheme, separator, _rest = path.partition("://")
    if separator and scheme.isidentifier():
        raise ValueError(f"unknown queue path scheme {scheme + '://'!r} in {path!r}")
    return None


def _jetstream_path(path: object) -> str | None:
    """``path`` if it names the JetStream engine, else None."""
    if not (isinstance(path, str) and path.startswith(_JETSTREAM_SCHEMES)):
        return None
    try:
        import nats  # noqa: F401
    except ImportError:
        raise ValueError(
            f"{path.split('://', 1)[0]}:// paths need the JetStream engine's client: "
            "pip install 'rocksq_aio[jetstream]'"
        ) from None
    return path


Opener = tuple[str, Callable[[], EngineT], Capabilities]
"""The engine's path, the call that opens it, and its capabilities (known before it opens)."""


def fifo_opener(path: object, options: FifoOptions) -> Opener[FifoEngine]:
    """Check ``path`` and ``options`` now; the engine opens when the callable is called."""
    url = _jetstream_path(path)
    if url is not None:
        from . import jetstream

        return url, lambda: jetstream.JetStreamFifo(url, options), jetstream.CAPABILITIES
    name = _memory_name(path)
    directory = _validate.queue_path(path) if name is None else ""
    options.capacity()  # what every in-process engine checks first, checked before the open
    options.local()
    if name is not None:
        from . import memory

        return MEMORY_SCHEME + name, lambda: memory.MemoryFifo(name, options), memory.CAPABILITIES
    from . import rocksdb

    return directory, lambda: rocksdb.RocksDBFifo(directory, options), rocksdb.CAPABILITIES


def mpmc_opener(path: object, options: MpmcOptions) -> Opener[MpmcEngine]:
    """Like ``fifo_opener``, for an MPMC queue."""
    url = _jetstream_path(path)
    if url is not None:
        from . import jetstream

        return url, lambda: jetstream.JetStreamMpmc(url, options), jetstream.CAPABILITIES
    name = _memory_name(path)
    directory = _validate.queue_path(path) if name is None else ""
    options.ttl_seconds()
    options.time_source()
    options.local()
    if name is not None:
        from . import memory

        return MEMORY_SCHEME + name, lambda: memory.MemoryMpmc(name, options), memory.CAPABILITIES
    from . import rocksdb

    return directory, lambda: rocksdb.RocksDBMpmc(directory, options), rocksdb.CAPABILITIES


def open_fifo(path: object, options: FifoOptions) -> FifoEngine:
    return fifo_opener(path, options)[1]()


def open_mpmc(path: object, options: MpmcOptions) -> MpmcEngine:
    return mpmc_opener(path, options)[1]()


def remove(path: object) -> None:
    """Delete a closed queue and everything it stores."""
    url = _jetstream_path(path)
    if url is not None:
        from .jetstream import remove as remove_stream

        remove_stream(url)
        return
    name = _memory_name(path)
    if name is not None:
        from .memory import remove as remove_memory_queue

        remove_memory_queue(name)
        return
    from .rocksdb import destroy

    destroy(_validate.queue_path(path))
