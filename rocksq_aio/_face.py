"""What the async and blocking faces share: properties read straight from the engine."""

from __future__ import annotations

from typing import Generic, TypeVar

from ._engine import Capabilities, QueueEngine

EngineT = TypeVar("EngineT", bound=QueueEngine)


class EngineProperties(Generic[EngineT]):
    """Answered by the engine at once, with no I/O (see ``Capabilities.exact_properties``)."""

    _engine: EngineT

    @property
    def capabilities(self) -> Capabilities:
        """What the queue's engine can do (durable, exact properties, limits)."""
        return self._engine.capabilities

    @property
    def path(self) -> str:
        return self._engine.path

    @property
    def closed(self) -> bool:
        return self._engine.closed

    @property
    def len(self) -> int:
        return self._engine.len

    def __len__(self) -> int:
        return self._engine.len

    @property
    def is_empty(self) -> bool:
        return self._engine.is_empty

    @property
    def lease_timeout(self) -> float | None:
        """Seconds a reservation lasts without ``extend`` (None: until settled)."""
        return self._engine.lease_timeout

    @property
    def disk_size(self) -> int:
        """Bytes the queue uses on disk (0 in memory)."""
        return self._engine.disk_size
