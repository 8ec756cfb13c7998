"""Operations and group commit: what every engine shares that is not storage.

A face validates each call into an :class:`Operation` and submits it; the
queue's worker calls ``drain()``, which takes the engine's lock, hands
everything pending (in arrival order, bounded in bytes) to the engine's
``_execute`` as one group, and completes all of it at once (group commit).

Rules (the engines and the faces rely on them):

1. Bad input never reaches an engine: the builders below validate every
   argument (``TypeError``/``ValueError``) before an operation exists.
2. Operations complete in submission order. A group is a run of pending
   operations of at most ``group_bytes`` bytes (at least one operation);
   ``_execute`` commits a group atomically, or fails every operation in it.
3. Cancellation means "it did not happen": a caller that stops waiting calls
   ``abandon()``. An operation not started is withdrawn; one running is given
   back by ``drain()`` once it finishes; one already done is given back by the
   GIVE_BACK operation ``abandon()`` returns, which the caller submits.
4. ACK and NACK are never withdrawn: settling a reservation must happen even
   when its caller stops waiting. Settling a reservation made by another
   open of the queue (its ``generation`` differs) is refused with
   ``LeaseExpiredError`` and changes nothing: the reopen gave its items back.
   So is settling (or extending) one whose lease expired (``_leases``). The
   refusal is that operation's own error; the rest of its group goes on.
5. A give-back is an operation like any other, executed by the worker (never
   on an event loop's thread), in a group of its own.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import threading
from collections import deque
from typing import Any, NamedTuple

from . import _validate
from ._errors import LeaseExpiredError, QueueError
from ._types import StartPosition


class OperationKind(enum.Enum):
    PUSH = "push"
    POP = "pop"
    ADD = "add"
    NEXT = "next"
    REMOVE_LABEL = "remove_label"
    RESERVE = "reserve"
    ACK = "ack"
    NACK = "nack"
    EXTEND = "extend"
    PEEK = "peek"
    GIVE_BACK = "give_back"


_NEVER_WITHDRAWN = (OperationKind.ACK, OperationKind.NACK)


class Stage(enum.IntEnum):
    PENDING = 0
    RUNNING = 1
    DONE = 2
    WITHDRAWN = 3
    """Abandoned before it started: it never runs."""


_generations = itertools.count(1)


def new_generation() -> int:
    """A number no other open of any queue in this process has: an engine takes one at open."""
    return next(_generations)


class Reservation:
    """Items handed out by ``reserve``: ack removes them for good, nack delivers them again.

    ``token`` is the engine's own record of where the items came from; only
    the engine that made the reservation reads it. ``generation`` is the
    engine's (one per open): a reservation of another open cannot be settled.
    ``label`` is None on a FIFO queue.
    """

    __slots__ = ("deliveries", "generation", "items", "label", "settled", "token")

    def __init__(
        self,
        items: list[bytes],
        token: Any,
        generation: int,
        label: str | None = None,
        deliveries: list[int] | None = None,
    ) -> None:
        self.items = items
        self.token = token
        self.generation = generation
        self.label = label
        self.deliveries = [1] * len(items) if deliveries is None else deliveries
        """How many times each item has been handed out, this time included."""
        self.settled = False


class Operation:
    """One validated call waiting for, or done by, a group commit.

    ``token`` is the engine's note on a finished read (where its items came
    from), so that it can give them back; the faces never read it.
    """

    __slots__ = (
        "abandoned",
        "arguments",
        "error",
        "kind",
        "result",
        "size",
        "stage",
        "token",
        "wait",
    )

    def __init__(self, kind: OperationKind, arguments: tuple[Any, ...], size: int = 0) -> None:
        self.kind = kind
        self.arguments = arguments
        self.size = size
        self.stage = Stage.PENDING
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.token: Any = None
        self.wait = 0.0
        """Seconds a read may wait at the server for its first item (``math.inf``:
        until one comes). Set only for engines without ``local_arrivals``;
        the others are woken by ``arrivals`` instead."""

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


# ---------------------------------------------------------------- builders


def push_operation(items: object, kind: OperationKind = OperationKind.PUSH) -> Operation:
    """A FIFO push (or, with ``kind=ADD``, an MPMC add) of ``items``."""
    if type(items) is list and len(items) == 1 and type(items[0]) is bytes:
        return Operation(kind, ([items[0]],), len(items[0]))  # the common case, no copy
    values = _validate.item_list(items)
    return Operation(kind, (values,), sum(map(len, values)))


def add_operation(items: object) -> Operation:
    return push_operation(items, OperationKind.ADD)


def pop_operation(max_elements: object = 1, kind: OperationKind = OperationKind.POP) -> Operation:
    """A FIFO pop (or, with ``kind=RESERVE``, a FIFO reserve) of up to ``max_elements``."""
    return Operation(kind, (_validate.positive_int(max_elements, "max_elements"),))


def reserve_operation(max_elements: object = 1) -> Operation:
    return pop_operation(max_elements, OperationKind.RESERVE)


def next_operation(
    label: object,
    start_position: object = StartPosition.Oldest,
    max_elements: object = 1,
    kind: OperationKind = OperationKind.NEXT,
) -> Operation:
    """An MPMC next (or, with ``kind=RESERVE``, a label's reserve)."""
    return Operation(
        kind,
        (
            _validate.label_name(label),
            _validate.start_position(start_position),
            _validate.positive_int(max_elements, "max_elements"),
        ),
    )


def reserve_label_operation(
    label: object, start_position: object = StartPosition.Oldest, max_elements: object = 1
) -> Operation:
    return next_operation(label, start_position, max_elements, OperationKind.RESERVE)


def remove_label_operation(label: object) -> Operation:
    return Operation(OperationKind.REMOVE_LABEL, (_validate.label_name(label),))


def settle_operation(reservation: Reservation, *, ack: bool) -> Operation:
    return Operation(OperationKind.ACK if ack else OperationKind.NACK, (reservation,))


def peek_operation(max_elements: object = 1) -> Operation:
    """A FIFO peek: the items the next pop would return, consuming nothing."""
    return Operation(OperationKind.PEEK, (_validate.positive_int(max_elements, "max_elements"),))


def peek_label_operation(label: object, max_elements: object = 1) -> Operation:
    """An MPMC peek: the items ``label``'s next read would return (a new label: from the
    oldest), consuming nothing and creating no label."""
    return Operation(
        OperationKind.PEEK,
        (_validate.label_name(label), _validate.positive_int(max_elements, "max_elements")),
    )


def extend_operation(reservation: Reservation) -> Operation:
    """Renew ``reservation``'s lease for another ``lease_timeout``."""
    return Operation(OperationKind.EXTEND, (reservation,))


def give_back_operation(read: Operation, delivered: int = 0) -> Operation:
    """Give back what the finished read ``read`` took, except its first ``delivered`` items."""
    return Operation(OperationKind.GIVE_BACK, (read, delivered))


class NextGiveBack(NamedTuple):
    """What a finished next() gives back, past its first ``delivered`` items."""

    label: str
    items: list[bytes]
    start: int | None
    """Index of the first item given back; None for items given back before."""
    expired: bool
    """The expiry report, which goes back with a read none of whose items was delivered."""
    deliveries: list[int] | None
    """Deliveries of items that had been given back before (None: none)."""


def split_next_read(read: Operation, delivered: int) -> NextGiveBack:
    """Cut a finished next() down to its first ``delivered`` items; what goes back.

    For engines whose NEXT token is the first item's index, or the deliveries
    of the items it took from those given back before (the local engines).
    """
    items, expired = read.result
    source: int | list[int] | None = read.token
    read.result = (items[:delivered], False)
    return NextGiveBack(
        read.arguments[0],
        items[delivered:],
        source + delivered if isinstance(source, int) else None,
        expired and delivered == 0,
        source[delivered:] if isinstance(source, list) else None,
    )


# ---------------------------------------------------------------- dispatcher


class Dispatcher:
    """Group commit for one engine; the engine supplies ``_execute`` and ``_give_back_locked``.

    ``arrivals`` counts commits that made elements available (pushes, adds,
    items given back or released); waiters watch it.
    """

    def __init__(self, group_bytes: int) -> None:
        self.generation = new_generation()
        """Stamped on every reservation this open makes (rule 4)."""
        self.arrivals = 0
        self._group_bytes = group_bytes
        self._lock = threading.Lock()
        self._pending: deque[Operation] = deque()
        self._pending_lock = threading.Lock()

    # What the engine supplies.

    def check_usable(self) -> None:
        """Raise the error every operation would get now (closed, failed), if any."""
        raise NotImplementedError

    def _execute(self, group: list[Operation]) -> None:
        """Commit ``group`` atomically, setting each operation's result or error."""
        raise NotImplementedError

    def _give_back_locked(self, read: Operation, delivered: int) -> None:
        """Return the items of a finished read, but its first ``delivered``, to the queue."""
        raise NotImplementedError

    # What the engines share.

    def check_settle(self, reservation: Reservation) -> None:
        """Raise LeaseExpiredError if ``reservation`` can no longer be settled (rule 4)."""
        if reservation.generation != self.generation:
            raise LeaseExpiredError(
                f"the reservation of {len(reservation.items)} items was made before the queue "
                f"at {self.path!r} was last opened (or by another queue object): the open gave "
                "its items back, so they may be with another consumer; nothing was changed"
            )

    @property
    def path(self) -> str:
        raise NotImplementedError

    # The mechanism.

    def submit(self, operation: Operation) -> None:
        self.check_usable()
        with self._pending_lock:
            self._pending.append(operation)

    def drain(self) -> None:
        """Execute pending operations as one group; returns at once if none are pending."""
        with self._lock:
            with self._pending_lock:
                pending = self._pending
                if len(pending) == 1:  # one caller: the group is its operation
                    group = [pending.popleft()]
                    group[0].stage = Stage.RUNNING
                else:
                    group = self._take_group()
            if not group:
                return
            try:
                self.check_usable()
                if group[0].kind is OperationKind.GIVE_BACK:
                    read, delivered = group[0].arguments
                    self._give_back_quietly(read, delivered)
                else:
                    self._execute(group)
            except BaseException as error:
                for operation in group:
                    operation.result = None
                    operation.error = error
            with self._pending_lock:
                abandoned = []
                for operation in group:
                    operation.stage = Stage.DONE
                    if operation.abandoned:
                        abandoned.append(operation)
            for operation in abandoned:
                self._give_back_quietly(operation, 0)

    def _take_group(self) -> list[Operation]:
        pending = self._pending
        group: list[Operation] = []
        size = 0
        limit = self._group_bytes
        give_back = OperationKind.GIVE_BACK
        while pending and (not group or size + pending[0].size <= limit):
            if group and (pending[0].kind is give_back or group[0].kind is give_back):
                break  # a give-back is a group of its own
            operation = pending.popleft()
            operation.stage = Stage.RUNNING
            size += operation.size
            group.append(operation)
        return group

    def run(self, operation: Operation) -> Any:
        """Execute ``operation`` (with whatever else is pending) and return its result."""
        # Uncontended: execute directly, skipping the pending queue. Anything
        # submitted meanwhile waits for the lock and is drained after us.
        if not self._pending and self._lock.acquire(False):
            try:
                if not self._pending:
                    self.check_usable()
                    if operation.kind is OperationKind.GIVE_BACK:
                        self._give_back_quietly(*operation.arguments)
                    else:
                        self._execute([operation])
                    operation.stage = Stage.DONE
                    return operation.outcome()
            finally:
                self._lock.release()
        self.submit(operation)
        while operation.stage is not Stage.DONE:
            self.drain()
        return operation.outcome()

    def abandon(self, operation: Operation) -> Operation | None:
        """The caller stopped waiting for ``operation``: withdraw it, or give its items back.

        Returns the give-back the caller must submit when ``operation`` was
        already done, else None.
        """
        with self._pending_lock:
            if operation.kind in _NEVER_WITHDRAWN:
                return None
            if operation.stage is Stage.PENDING:
                self._pending.remove(operation)
                operation.stage = Stage.WITHDRAWN
                return None
            if operation.stage is Stage.RUNNING:
                operation.abandoned = True  # drain() gives it back when done
                return None
        if operation.error is not None or operation.kind not in _READS:
            return None
        return give_back_operation(operation)

    def _give_back_quietly(self, read: Operation, delivered: int) -> None:
        if read.error is not None:
            return
        # Only fails once the engine is in its error state, which every later
        # call reports; the caller giving up must not see a second error.
        with contextlib.suppress(QueueError):
            self._give_back_locked(read, delivered)


_READS = (OperationKind.POP, OperationKind.NEXT, OperationKind.RESERVE)
