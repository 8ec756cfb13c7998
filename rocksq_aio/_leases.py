"""The leases of one open queue: which reservations are unsettled, and until when.

The engines that keep a queue in this process (RocksDB, memory) share this
table; an engine whose server keeps the leases (JetStream's ``ack_wait``)
needs none of it.

Rules (the engines rely on them):

1. A lease lasts ``timeout`` seconds from its reservation, or from its last
   ``extend``; with ``timeout=None`` it lasts until settled (or the end of
   the process). A lease is expired once ``clock() >= deadline``.
2. Expired leases are taken out together (``take_expired``), oldest
   reservation first: an engine releases them before anything else its
   group does, as nacks, so that they are delivered again first.
3. ``deadline_changes`` counts the times the earliest deadline moved earlier
   (a first lease, as every later one ends later): waiters re-arm their timer
   on it instead of polling.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

from ._dispatch import Dispatcher, Reservation
from ._errors import LeaseExpiredError
from ._options import Clock, LeaseOptions

LeaseT = TypeVar("LeaseT")

NEVER = float("inf")


class LeaseTable(Generic[LeaseT]):
    """Unsettled reservations by number, each with the engine's record of its lease.

    Changed only under the engine's lock. ``earliest`` (the earliest deadline,
    ``NEVER`` if none) is a plain attribute, so that the faces may read it
    from another thread without the lock (``seconds_left``).
    """

    __slots__ = (
        "_deadlines",
        "_heap",
        "_records",
        "clock",
        "deadline_changes",
        "earliest",
        "timeout",
    )

    def __init__(self, options: LeaseOptions) -> None:
        self.timeout = options.timeout
        self.clock: Clock = options.clock
        self.deadline_changes = 0
        self.earliest = NEVER
        self._records: dict[int, LeaseT] = {}
        self._deadlines: dict[int, float] = {}
        # (deadline, number), with entries left behind by extends and settles:
        # an entry counts only while it matches _deadlines.
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, number: int) -> bool:
        return number in self._records

    def get(self, number: int) -> LeaseT | None:
        return self._records.get(number)

    def records(self) -> list[LeaseT]:
        """Every lease's record, oldest reservation first."""
        return [self._records[number] for number in sorted(self._records)]

    def now(self) -> float:
        """The clock, read only while leases can expire (0.0 otherwise)."""
        return 0.0 if self.timeout is None else self.clock()

    def add(self, number: int, record: LeaseT, now: float) -> None:
        self._records[number] = record
        if self.timeout is None:
            return
        deadline = now + self.timeout
        self._deadlines[number] = deadline
        heapq.heappush(self._heap, (deadline, number))
        if deadline < self.earliest:
            self.deadline_changes += 1
            self.earliest = deadline

    def pop(self, number: int) -> LeaseT | None:
        if self._deadlines.pop(number, None) == self.earliest:
            self._find_earliest()
        return self._records.pop(number, None)

    def extend(self, number: int, now: float) -> None:
        """Renew the lease ``number`` for another ``timeout`` from ``now`` (never shortened)."""
        if self.timeout is None or number not in self._deadlines:
            return
        deadline = max(now + self.timeout, self._deadlines[number])
        self._deadlines[number] = deadline
        heapq.heappush(self._heap, (deadline, number))
        self._find_earliest()

    def deadline(self, number: int) -> float | None:
        return self._deadlines.get(number)

    def _find_earliest(self) -> None:
        heap = self._heap
        deadlines = self._deadlines
        while heap and deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        self.earliest = heap[0][0] if heap else NEVER

    def due(self, now: float) -> bool:
        """Whether a lease has expired at ``now``."""
        return self.earliest <= now

    def due_now(self) -> bool:
        """Whether a lease has expired; reads the clock only while one can."""
        return self.earliest != NEVER and self.clock() >= self.earliest

    def take_expired(self, now: float) -> list[tuple[int, LeaseT]]:
        """Remove and return the leases expired at ``now``, oldest reservation first."""
        expired: list[int] = []
        while self.earliest <= now:
            _deadline, number = heapq.heappop(self._heap)
            del self._deadlines[number]
            expired.append(number)
            self._find_earliest()
        expired.sort()
        return [(number, self._records.pop(number)) for number in expired]

    def seconds_left(self) -> float | None:
        """Seconds until the earliest lease expires (0 if one has), None if none can."""
        earliest = self.earliest
        if earliest == NEVER:
            return None
        return max(0.0, earliest - self.clock())

    def check(self, reservation: Reservation, number: int) -> None:
        """Raise LeaseExpiredError if reservation ``number`` of this open has no lease left."""
        if number not in self._records:
            raise LeaseExpiredError(
                f"the lease of the reservation of {len(reservation.items)} items expired "
                f"(lease_timeout={self.timeout} s) before it was settled: its items were "
                "given back, so they may be with another consumer; nothing was changed"
            )


class LeasingDispatcher(Dispatcher):
    """A dispatcher whose engine keeps its leases in a ``LeaseTable`` (RocksDB, memory).

    A reservation's token starts with its number; the engine sets ``_leases``
    at open.
    """

    _leases: LeaseTable[Reservation]

    @property
    def lease_timeout(self) -> float | None:
        return self._leases.timeout

    @property
    def deadline_changes(self) -> int:
        """Counts the times the earliest lease deadline moved earlier (rule 3)."""
        return self._leases.deadline_changes

    def seconds_to_lease_expiry(self) -> float | None:
        """Seconds until the earliest lease expires; None if none can (no I/O, no lock)."""
        return self._leases.seconds_left()

    def _check_lease(self, reservation: Reservation) -> None:
        """Raise LeaseExpiredError unless ``reservation`` of this open still holds its lease."""
        self.check_settle(reservation)
        self._leases.check(reservation, reservation.token[0])

    def _extend_locked(self, reservation: Reservation, now: float) -> None:
        if reservation.settled or not reservation.items:
            return
        self._check_lease(reservation)
        self._leases.extend(reservation.token[0], now)
