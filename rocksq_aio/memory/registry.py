"""The process-wide registry of memory queues: one slot per name, shared by every thread.

A slot keeps a queue's data between opens, as a directory does for RocksDB,
until the process exits or :func:`remove` deletes it. At most one handle holds
a slot at a time, and a slot holds one kind of queue for its whole life.
"""

from __future__ import annotations

import threading

from .._errors import QueueError, QueueLockedError

SCHEME = "memory://"

_KINDS = {"FIFO": "a FIFO queue", "MPMC": "an MPMC queue"}


class Slot:
    """What a name holds: its queue kind, its data (None until first opened), its holder."""

    __slots__ = ("data", "held", "kind", "name")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.data: object = None
        """The engine's own store object; only the engine of ``kind`` reads it."""
        self.held = False


_slots: dict[str, Slot] = {}
_lock = threading.Lock()


def claim(name: str, kind: str) -> Slot:
    """Hold ``name`` for a new handle of ``kind`` ("FIFO" or "MPMC"), creating it if new.

    Raises QueueLockedError if a handle holds it already (checked first, as
    RocksDB's directory lock is), QueueError if it holds the other kind.
    """
    path = SCHEME + name
    with _lock:
        slot = _slots.get(name)
        if slot is not None and slot.held:
            raise QueueLockedError(f"queue at {path!r} is already open in this process")
        if slot is not None and slot.kind != kind:
            raise QueueError(f"{path} holds {_KINDS[slot.kind]}, not {_KINDS[kind]}")
        if slot is None:
            slot = _slots[name] = Slot(name, kind)
        slot.held = True
        return slot


def release(slot: Slot) -> None:
    """Let the next open have ``slot``; a slot whose creation failed is forgotten."""
    with _lock:
        slot.held = False
        if slot.data is None and _slots.get(slot.name) is slot:
            del _slots[slot.name]


def remove(name: str) -> None:
    """Delete the queue ``name`` and its data; nothing happens for an unknown name.

    Raises QueueLockedError while a handle holds it, as removing an open
    RocksDB directory does.
    """
    with _lock:
        slot = _slots.get(name)
        if slot is None:
            return
        if slot.held:
            raise QueueLockedError(
                f"queue at {SCHEME + name!r} is open; close it before removing it"
            )
        del _slots[name]
