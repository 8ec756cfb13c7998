"""The engine protocols: everything the faces may ask of a queue's storage.

The faces (async, blocking, nonblocking) import this module, ``_dispatch`` and
``_engines`` (which engine a path names), never an engine's own modules. An
engine declares what it can do in :class:`Capabilities`, and the faces adapt
to it instead of assuming RocksDB.

Engines whose operations are blocking calls (``runs_on="worker"``: RocksDB,
memory) are driven through the dispatcher: ``submit`` then ``drain`` from the
queue's worker (see ``_worker``), or ``run`` from a blocking caller. An engine
whose I/O is natively asynchronous (``runs_on="asyncio"``, the NATS JetStream
engine of a later release) instead implements ``perform`` as a coroutine,
awaited directly on asyncio and through one bridge thread elsewhere; it does
not go through the worker, since its speed comes from concurrent requests.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ._dispatch import Operation, Reservation
from ._types import BytesLike, StartPosition


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do; every face shows it as ``queue.capabilities``."""

    name: str
    """The engine's name in error messages and the README's engine table."""
    runs_on: Literal["worker", "asyncio"] = "worker"
    """How operations execute: blocking calls drained by the queue's worker,
    or coroutines on an asyncio event loop (``perform``)."""
    max_items_per_call: int | None = None
    """Most items one atomic push or add may hold (None: no limit but memory)."""
    gives_back_in_front: bool = True
    """Items given back or nacked go back in front of the head, in their order."""
    local_arrivals: bool = True
    """Every new element is written through this process, so ``arrivals``
    sees them all and waiters need no server-side notification."""
    exact_properties: bool = True
    """``len``, ``payload_size`` and ``labels`` are exact and answered from memory."""
    durable: bool = True
    """Elements survive the end of the process."""


class QueueEngine(Protocol):
    """What both queue kinds offer."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def path(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def arrivals(self) -> int:
        """Counts commits that made elements available (released leases too); waiters watch it."""
        ...

    # Leases (see ``_leases`` for the local engines' rules). A reservation's
    # lease ends at its settle, after ``lease_timeout`` seconds without an
    # ``extend`` (then its items are delivered again first, as after a nack),
    # or with the process. ACK, NACK and EXTEND of a reservation without a
    # lease (expired, or made by another open: ``Reservation.generation``)
    # fail alone with LeaseExpiredError and change nothing.

    @property
    def lease_timeout(self) -> float | None: ...

    @property
    def deadline_changes(self) -> int:
        """Counts the times the earliest lease deadline moved earlier; waiters re-arm on it."""
        ...

    def seconds_to_lease_expiry(self) -> float | None:
        """Seconds until this engine itself must release an expired lease (0: now), None
        if it never will (no leases, no timeout, or the server redelivers). Read from
        the event loop: no I/O, no lock. A waiter wakes then and reads again."""
        ...

    @property
    def len(self) -> int: ...

    @property
    def is_empty(self) -> bool: ...

    @property
    def disk_size(self) -> int: ...

    def check_usable(self) -> None: ...

    def submit(self, operation: Operation) -> None: ...

    def drain(self) -> None: ...

    def run(self, operation: Operation) -> Any: ...

    def abandon(self, operation: Operation) -> Operation | None: ...

    def close(self) -> None: ...


class FifoEngine(QueueEngine, Protocol):
    """A FIFO queue with a capacity."""

    @property
    def max_elements(self) -> int: ...

    @property
    def payload_size(self) -> int: ...

    @property
    def payload_size_is_known(self) -> bool:
        """True when ``payload_size`` is answered from memory, without I/O."""
        ...

    @property
    def pending(self) -> int:
        """Items reserved and not yet acked or nacked."""
        ...

    # The blocking face binds these directly: an engine may give them a fast
    # path. ``no_gil`` is RocksQ's argument, accepted and ignored.
    def push(self, items: Sequence[BytesLike], no_gil: bool = True) -> None: ...

    def pop(self, max_elements: int = 1, no_gil: bool = True) -> list[bytes]: ...


class MpmcEngine(QueueEngine, Protocol):
    """One stream read by many labelled consumers, with element TTL."""

    @property
    def ttl(self) -> float: ...

    @property
    def labels(self) -> list[str]: ...

    def pending(self, label: str) -> int:
        """Items ``label`` reserved and has not acked or nacked yet."""
        ...

    def add(self, items: Sequence[BytesLike], no_gil: bool = True) -> None: ...

    def next(
        self,
        label: str,
        start_position: StartPosition = StartPosition.Oldest,
        max_elements: int = 1,
        no_gil: bool = True,
    ) -> tuple[list[bytes], bool]: ...

    def remove_label(self, label: str, no_gil: bool = True) -> bool: ...


class AsyncEngine(Protocol):
    """An engine whose I/O is natively asynchronous (``runs_on="asyncio"``)."""

    @property
    def parked(self) -> int:
        """Reads waiting at the server for an element (not counted as in flight)."""
        ...

    def perform(self, operation: Operation) -> Coroutine[Any, Any, Any]: ...

    def stop_waiting(self) -> None:
        """The queue is closing: waiting reads end (QueueClosedError), give-backs still run."""
        ...

    def aclose(self) -> Coroutine[Any, Any, None]: ...


__all__ = [
    "AsyncEngine",
    "Capabilities",
    "FifoEngine",
    "MpmcEngine",
    "QueueEngine",
    "Reservation",
]
