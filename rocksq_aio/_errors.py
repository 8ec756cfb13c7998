"""The exception hierarchy.

Every error of ours derives from :class:`QueueError`, itself a ``RuntimeError``,
so that code written for RocksQ (which raises plain ``RuntimeError``) keeps
catching them.
"""

from __future__ import annotations


class QueueError(RuntimeError):
    """Base class of every queue failure that is not a bad argument."""


class QueueFullError(QueueError):
    """The push would take the queue beyond its capacity; nothing was written."""


class QueueLockedError(QueueError):
    """The queue directory is already open, in this process or another one."""


class QueueClosedError(QueueError):
    """The queue was closed; reopen it to use it again."""


class QueueCorruptedError(QueueError):
    """The stored data or counters are inconsistent or unreadable."""


class QueueIOError(QueueError):
    """RocksDB reported an I/O failure.

    A write that raised may or may not be on disk, so the handle refuses every
    further operation until the queue is closed and opened again, which rereads
    the true state from disk.
    """


class LeaseExpiredError(QueueError):
    """The reservation can no longer be settled; nothing was changed.

    Its lease ended before the ``ack``, ``nack`` or ``extend``: the queue gave
    its items back (a lease timeout, or the queue was closed and opened again
    since the reservation was made), so they may be with another consumer.
    """
