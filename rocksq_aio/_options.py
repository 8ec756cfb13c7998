"""The constructor options of each queue kind, declared once.

Every face builds one of these from its keyword arguments and hands it to the
engine its path names. The options every engine understands are validated
here; ``sync``, ``batch_bytes``, ``cache_bytes`` and ``directory_mode`` are
validated by the engine that uses them (``engine_options``), so that a later
engine may read them differently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TypeVar, cast

from . import _validate

Clock = Callable[[], float]

DEFAULT_CAPACITY = 1_000_000_000
DEFAULT_MAX_INFLIGHT_OPS = 1000
DEFAULT_BATCH_BYTES = 1024 * 1024
"""Largest write batch handed to RocksDB at once.

rocksdict holds the GIL for the whole write (fsync included), so a bigger
batch would freeze every other Python thread, an event loop among them."""
DEFAULT_CACHE_BYTES = 8 * 1024 * 1024
"""Recently written items kept in memory so a read soon after a write needs no I/O.
Bounded in bytes, so memory never depends on the queue's capacity or length."""
DEFAULT_DIRECTORY_MODE = 0o700
"""Mode of the directories a queue creates: queued work is often private."""


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """The options of an engine that stores the queue in this process, validated."""

    sync: bool
    batch_bytes: int
    cache_bytes: int
    directory_mode: int


OptionsT = TypeVar("OptionsT", bound="_CommonOptions")


@dataclass(frozen=True, slots=True)
class LeaseOptions:
    """How reservations end without a settle, validated (see ``_leases``)."""

    timeout: float | None
    """Seconds a lease lasts unless extended; None: until settled or the process ends."""
    max_deliveries: int | None
    """An item released after this many deliveries is to go to the dead letters
    (None: never). Validated; not applied by the engines yet (issue 14)."""
    clock: Clock
    """Lease deadlines are read on it: ``time.monotonic`` unless a clock was given."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _CommonOptions:
    max_inflight_ops: object = DEFAULT_MAX_INFLIGHT_OPS
    sync: object = False
    batch_bytes: object = DEFAULT_BATCH_BYTES
    cache_bytes: object = DEFAULT_CACHE_BYTES
    directory_mode: object = DEFAULT_DIRECTORY_MODE
    clock: object = None
    """Wall clock in seconds (``time.time`` if None): element TTL, lease ages;
    when given, lease deadlines too (tests drive expiry with a fake clock)."""
    lease_timeout: object = None
    max_deliveries: object = None

    @classmethod
    def from_arguments(cls: type[OptionsT], arguments: dict[str, object]) -> OptionsT:
        """The options among a face constructor's ``locals()``: each face lists them
        in its signature (for RocksQ's and the reader's sake), this maps them once."""
        names = [field.name for field in fields(cls) if field.name in arguments]
        return cls(**{name: arguments[name] for name in names})

    def inflight_limit(self) -> int:
        return _validate.positive_int(self.max_inflight_ops, "max_inflight_ops")

    def local(self) -> LocalOptions:
        """The engine-specific options of an in-process engine, validated."""
        return LocalOptions(
            sync=_validate.flag(self.sync, "sync"),
            batch_bytes=_validate.positive_int(self.batch_bytes, "batch_bytes"),
            cache_bytes=_validate.non_negative_int(self.cache_bytes, "cache_bytes"),
            directory_mode=_validate.directory_mode(self.directory_mode),
        )

    def time_source(self) -> Clock:
        clock = time.time if self.clock is None else self.clock
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        return cast(Clock, clock)

    def leases(self) -> LeaseOptions:
        """The lease options, validated (every engine that reserves takes them)."""
        timeout = _validate.optional_seconds(self.lease_timeout, "lease_timeout")
        limit = (
            None
            if self.max_deliveries is None
            else _validate.positive_int(self.max_deliveries, "max_deliveries")
        )
        # Deadlines are durations: a wall clock stepping would end leases early or late.
        clock = time.monotonic if self.clock is None else self.time_source()
        return LeaseOptions(timeout, limit, clock)


@dataclass(frozen=True, slots=True, kw_only=True)
class FifoOptions(_CommonOptions):
    """Options of a FIFO queue (``PersistentQueue``, ``PersistentQueueWithCapacity``)."""

    max_elements: object = DEFAULT_CAPACITY

    def capacity(self) -> int:
        return _validate.positive_int(
            self.max_elements, "max_elements", maximum=_validate.MAX_CAPACITY
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MpmcOptions(_CommonOptions):
    """Options of an MPMC queue (``MpmcQueue``)."""

    ttl: object = 0

    def ttl_seconds(self) -> float:
        return _validate.ttl_seconds(self.ttl)
