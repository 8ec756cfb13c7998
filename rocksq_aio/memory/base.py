"""What the memory FIFO and MPMC engines share: holding a name, closing, the capabilities."""

from __future__ import annotations

from .._engine import Capabilities
from .._errors import QueueClosedError
from .._leases import LeasingDispatcher
from .._types import ClosesOnExit
from . import registry

CAPABILITIES = Capabilities(name="memory", durable=False)


class MemoryQueue(ClosesOnExit, LeasingDispatcher):
    """A handle on one named memory queue, the only one open on that name."""

    capabilities = CAPABILITIES

    def __init__(self, name: str, kind: str, group_bytes: int) -> None:
        super().__init__(group_bytes)
        self._path = registry.SCHEME + name
        self._closed = False
        self._slot = registry.claim(name, kind)

    def _abandon_open(self) -> None:
        """Undo the claim of an open that failed after it."""
        self._closed = True
        registry.release(self._slot)

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def disk_size(self) -> int:
        return 0

    def check_usable(self) -> None:
        if self._closed:
            raise QueueClosedError(f"queue at {self._path!r} is closed")

    def close(self) -> None:
        """Release the name; the next open of it gets the data back."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            registry.release(self._slot)

    def __enter__(self) -> MemoryQueue:
        return self

    def __del__(self) -> None:
        # A handle dropped without close() frees its name, as a RocksDB
        # handle frees its directory lock when collected.
        slot = getattr(self, "_slot", None)
        if slot is not None and not self._closed:
            self._closed = True
            registry.release(slot)
