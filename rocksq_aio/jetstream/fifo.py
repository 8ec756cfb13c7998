"""The JetStream FIFO engine: a WorkQueue stream read through one shared durable consumer.

``max_elements`` is the stream's ``max_msgs`` with ``discard=new``, so a push
that does not fit is refused whole by the server (``QueueFullError``). Every
handle on the queue, in any process, reads through the consumer ``fifo``
with explicit acks: a pop is a no-wait pull and one ack per item, so a
process that dies between the two leaves its items to be delivered again
after ``ack_wait`` (removal is per item, at least once).

``len``, ``is_empty`` and ``payload_size`` are what this handle last knew:
the server's counts at open, moved by every push, pop, reserve and nack
made through it, and set to 0 when a read finds the queue empty. Pushes and
pops by other clients show only at those points. At open they count every
message the stream holds, items other clients hold reserved included; the
payload size is then the server's byte count less its per-message overhead
(every message has headers of one size, ``protocol.HEADER_BYTES``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import _validate
from .._dispatch import Operation, OperationKind, Reservation, pop_operation, push_operation
from .._options import FifoOptions
from . import protocol, url
from .base import JetStreamQueue
from .connection import Link

CONSUMER = "fifo"


class JetStreamFifo(JetStreamQueue):
    """A FIFO queue with a capacity on a JetStream server."""

    kind = "fifo"

    def __init__(self, path: str, options: FifoOptions) -> None:
        self.max_elements = options.capacity()
        options.local()  # sync, batch_bytes, cache_bytes, directory_mode: validated, server-side
        super().__init__(url.parse(path))
        self._length = 0
        self._payload = 0
        self._reserved: set[Reservation] = set()
        self._busy = 0
        """Reads and settles of this handle in progress."""
        self._open()

    # ------------------------------------------------------------ opening

    def _stream_config(self) -> dict[str, Any]:
        config = super()._stream_config()
        config.update(retention="workqueue", discard="new", max_msgs=self.max_elements)
        return config

    async def _reconfigure(self, link: Link, info: dict[str, Any]) -> dict[str, Any]:
        config = info["config"]
        if config.get("max_msgs") == self.max_elements:
            return info
        # The capacity is the last opener's, as every embedded open names its own.
        config["max_msgs"] = self.max_elements
        updated: dict[str, Any] = await protocol.api(
            link, self._target, f"STREAM.UPDATE.{self._target.stream}", config
        )
        return updated

    async def _opened(self, link: Link, info: dict[str, Any]) -> None:
        target = self._target
        consumer: dict[str, Any] = await protocol.api(
            link,
            target,
            f"CONSUMER.CREATE.{target.stream}.{CONSUMER}",
            {
                "stream_name": target.stream,
                "config": {
                    "durable_name": CONSUMER,
                    "ack_policy": "explicit",
                    "ack_wait": int(target.ack_wait * 1e9),
                    "deliver_policy": "all",
                    "max_ack_pending": -1,
                    "max_waiting": 4096,
                },
            },
        )
        state = info.get("state", {})
        messages = int(state.get("messages", 0))
        # Every stored message, reserved ones included: the server cannot tell
        # items a closed handle released (waiting to be delivered again) from
        # items another client holds, so both count.
        self._length = messages
        overhead = protocol.stored_bytes(target.storage, target.subject)
        self._payload = max(0, int(state.get("bytes", 0)) - messages * overhead)
        self._bytes = int(state.get("bytes", 0))
        self._seen[CONSUMER] = int(consumer.get("delivered", {}).get("stream_seq", 0))

    # ------------------------------------------------------------ properties

    # The counts may dip below 0 for a moment: a waiting read can be handed
    # an item before the push that stored it has heard back.
    @property
    def len(self) -> int:
        return max(0, self._length)

    def __len__(self) -> int:
        return max(0, self._length)

    @property
    def is_empty(self) -> bool:
        return self._length <= 0

    @property
    def payload_size_is_known(self) -> bool:
        """Always: the last known state needs no counting (see ``payload_size``)."""
        return True

    @property
    def payload_size(self) -> int:
        return max(0, self._payload)

    @property
    def pending(self) -> int:
        """Items this handle reserved and has not acked or nacked yet."""
        return sum(len(reservation.items) for reservation in self._reserved)

    # ------------------------------------------------------------ blocking face

    def push(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically; QueueFullError (nothing written) if they don't fit."""
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        self.run(push_operation(items))

    def pop(self, max_elements: object = 1, no_gil: object = True) -> list[bytes]:
        """Remove and return up to ``max_elements`` items from the head ([] when empty)."""
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        result: list[bytes] = self.run(pop_operation(max_elements))
        return result

    # ------------------------------------------------------------ operations

    async def _execute_kind(self, operation: Operation, link: Link) -> Any:
        kind = operation.kind
        if kind is OperationKind.PUSH:
            items: list[bytes] = operation.arguments[0]
            if items:
                await self._store(link, items)
                self._length += len(items)
                self._payload += sum(map(len, items))
            return None
        if kind is OperationKind.POP or kind is OperationKind.RESERVE:
            return await self._take(link, operation, ack=kind is OperationKind.POP)
        if kind is OperationKind.ACK or kind is OperationKind.NACK:
            await self._settle_reservation(link, operation.arguments[0], kind)
            return None
        if kind is OperationKind.GIVE_BACK:
            read, delivered = operation.arguments
            await self._give_back(link, read, delivered)
            return None
        raise AssertionError(f"not a FIFO operation: {kind}")

    async def _take(self, link: Link, operation: Operation, *, ack: bool) -> Any:
        count: int = operation.arguments[0]
        self._busy += 1
        try:
            found = await self._read(link, CONSUMER, count, operation.wait, operation)
        finally:
            self._busy -= 1
        items = [delivery.data for delivery in found]
        reservation = Reservation(items, found, self.generation)
        if operation.abandoned and found:
            # Rule 2 of base: the caller is gone before it got them (never counted out).
            await self._settle_reservation(link, reservation, OperationKind.NACK, count=False)
            return [] if ack else Reservation([], [], self.generation)
        # A short read means the consumer had nothing more for anyone, unless
        # this handle is moving items meanwhile (a push, a release, another read).
        if len(found) < min(count, protocol.MAX_PULL) and not self.storing and not self._busy:
            self._length = 0
            self._payload = 0
        else:
            self._length -= len(found)
            self._payload -= sum(map(len, items))
        # From here on nothing awaits: a caller cancelled now still gets the items.
        if ack:
            if found:
                self._settle_soon(link, found, b"+ACK")
            return items
        if items:
            self._reserved.add(reservation)
        return reservation

    async def _settle_reservation(
        self, link: Link, reservation: Reservation, kind: OperationKind, *, count: bool = True
    ) -> None:
        """Ack or release ``reservation``; a release counts its items back if ``count``."""
        if reservation.settled or not reservation.items:
            reservation.settled = True
            return
        nack = kind is OperationKind.NACK
        self._busy += 1
        try:
            confirmed = await self._settle(link, reservation.token, b"-NAK" if nack else b"+ACK")
            reservation.settled = True
            self._reserved.discard(reservation)
            # Counted back once the server has them: a read made after sees them.
            await asyncio.wait((confirmed,), timeout=protocol.ATTEMPT_TIMEOUT)
        finally:
            self._busy -= 1
        if nack and count:
            self._length += len(reservation.items)
            self._payload += sum(map(len, reservation.items))
            self.arrivals += 1

    async def _give_back(self, link: Link, read: Operation, delivered: int) -> None:
        if read.error is not None:
            return
        if read.kind is OperationKind.POP and read.result:
            rest: list[bytes] = read.result[delivered:]
            read.result = read.result[:delivered]
            if rest:
                # Popped items were acked, so they can only go back at the tail.
                await self._store(link, rest)
                self._length += len(rest)
                self._payload += sum(map(len, rest))
        elif read.kind is OperationKind.RESERVE and read.result is not None:
            await self._settle_part(link, read.result, delivered)

    def _forget(self, reservation: Reservation) -> None:
        self._reserved.discard(reservation)

    async def _release_reservations(self) -> None:
        """Unsettled reservations go back at close, as the embedded engines' do at the next open."""
        for reservation in list(self._reserved):
            link = await self._link()
            await self._settle_reservation(link, reservation, OperationKind.NACK)
