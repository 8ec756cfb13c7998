"""The JetStream MPMC engine: a Limits stream with ``max_age=ttl``, a durable consumer per label.

A label's consumer is named after the label (``url.encoded_name``: itself
when safe, else an encoding) and carries the label in its metadata. Its
position is the consumer's own, kept by the server for every client: a
label read here and in another process moves once.

Rules:

1. A new label starts as on RocksDB: ``Oldest`` at the oldest element still
   stored, ``Newest`` at the last one (or the next one added when empty).
   An existing label ignores ``start_position``.
2. The ``expired`` flag is reported once: when the first element a label is
   handed lies past the one after its last, or, with nothing to hand, when
   the stream's first element does; the consumer is then moved past the gap
   (``CONSUMER.RESET``), so no handle reports it again.
3. Elements are stamped by the server's clock: ``clock=`` cannot be honoured
   (it is accepted, with a warning). TTL removes an element even while a
   label holds it reserved.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from .. import _validate
from .._dispatch import (
    Operation,
    OperationKind,
    Reservation,
    add_operation,
    next_operation,
    remove_label_operation,
)
from .._options import MpmcOptions
from .._types import StartPosition
from . import protocol, url
from .base import JetStreamQueue
from .connection import Link

LABEL_KEY = "rocksq_aio.label"
MAX_AGE_NS = 2**63 - 1


class JetStreamMpmc(JetStreamQueue):
    """One stream read by many labelled consumers, on a JetStream server."""

    kind = "mpmc"

    def __init__(self, path: str, options: MpmcOptions) -> None:
        self._ttl = options.ttl_seconds()
        if self._ttl * 1e9 >= MAX_AGE_NS:
            raise ValueError(
                f"ttl must be below {MAX_AGE_NS // 10**9} seconds on JetStream "
                f"(max_age is in nanoseconds), got {options.ttl}"
            )
        options.time_source()  # validated
        options.local()
        if options.clock is not None:
            warnings.warn(
                "clock= is ignored on JetStream: the server's clock stamps elements",
                RuntimeWarning,
                stacklevel=4,
            )
        super().__init__(url.parse(path))
        self._first = 1
        self._last = 0
        self._labels: dict[str, int] = {}
        """Known labels and the stream sequence each has read up to (0: not known yet)."""
        self._label_names: list[str] = []
        self._reserved: dict[str, set[Reservation]] = {}
        self._open()

    # ------------------------------------------------------------ opening

    def _stream_config(self) -> dict[str, Any]:
        config = super()._stream_config()
        config.update(retention="limits", discard="old", max_age=int(self._ttl * 1e9))
        return config

    async def _reconfigure(self, link: Link, info: dict[str, Any]) -> dict[str, Any]:
        config = info["config"]
        if config.get("max_age") == int(self._ttl * 1e9):
            return info
        config["max_age"] = int(self._ttl * 1e9)
        config.pop("duplicate_window", None)  # may not exceed max_age: the server picks it
        updated: dict[str, Any] = await protocol.api(
            link, self._target, f"STREAM.UPDATE.{self._target.stream}", config
        )
        return updated

    async def _opened(self, link: Link, info: dict[str, Any]) -> None:
        self._refresh(info)
        names: list[str] = []
        offset = 0
        while True:
            page = await protocol.api(
                link, self._target, f"CONSUMER.LIST.{self._target.stream}", {"offset": offset}
            )
            consumers = page.get("consumers") or []
            for consumer in consumers:
                label = (consumer.get("config", {}).get("metadata") or {}).get(LABEL_KEY)
                if label is not None:
                    names.append(label)
            offset += len(consumers)
            if not consumers or offset >= int(page.get("total", 0)):
                break
        self._label_names = sorted(names)

    def _refresh(self, info: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = info.get("state", {})
        last = int(state.get("last_seq", 0))
        # Nothing but TTL removes elements, and only from the front, so the
        # stored ones are first..last; adds answered later move last on.
        self._first = last + 1 if int(state.get("messages", 0)) == 0 else int(state["first_seq"])
        self._last = max(self._last, last)
        self._bytes = int(state.get("bytes", 0))
        return state

    # ------------------------------------------------------------ properties

    @property
    def len(self) -> int:
        """Elements stored, as last seen (expiry shows at the next read that finds nothing)."""
        return max(0, self._last - self._first + 1)

    def __len__(self) -> int:
        return self.len

    @property
    def is_empty(self) -> bool:
        return self.len == 0

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def labels(self) -> list[str]:
        return list(self._label_names)

    def pending(self, label: str) -> int:
        """Items ``label`` reserved through this handle and has not settled yet."""
        return sum(len(reservation.items) for reservation in self._reserved.get(label, ()))

    # ------------------------------------------------------------ blocking face

    def add(self, items: object, no_gil: object = True) -> None:
        """Append ``items`` atomically."""
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        self.run(add_operation(items))

    def next(
        self,
        label: object,
        start_position: object = StartPosition.Oldest,
        max_elements: object = 1,
        no_gil: object = True,
    ) -> tuple[list[bytes], bool]:
        """Read up to ``max_elements`` for ``label``; the bool reports TTL losses once."""
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        result: tuple[list[bytes], bool] = self.run(
            next_operation(label, start_position, max_elements)
        )
        return result

    def remove_label(self, label: object, no_gil: object = True) -> bool:
        """Forget ``label`` and its position; False when it did not exist."""
        if no_gil is not True and no_gil is not False:
            _validate.flag(no_gil, "no_gil")
        removed: bool = self.run(remove_label_operation(label))
        return removed

    # ------------------------------------------------------------ labels

    def _consumer_name(self, label: str) -> str:
        return url.encoded_name(label, "L_")

    async def _stream_state(self, link: Link) -> dict[str, Any]:
        info = await protocol.api(link, self._target, f"STREAM.INFO.{self._target.stream}")
        return self._refresh(info)

    async def _label(self, link: Link, label: str, start: StartPosition) -> str:
        """The label's consumer, created at ``start`` if new (rule 1); its position known."""
        name = self._consumer_name(label)
        if self._labels.get(label):
            return name
        target = self._target
        try:
            info = await protocol.api(link, target, f"CONSUMER.INFO.{target.stream}.{name}")
        except protocol.ApiError as error:
            if error.err_code != protocol.NOT_FOUND_CONSUMER:
                raise
            info = await self._create_label(link, label, name, start)
        self._labels[label] = int(info.get("delivered", {}).get("stream_seq", 0))
        if label not in self._label_names:
            self._label_names = sorted([*self._label_names, label])
        return name

    async def _create_label(
        self, link: Link, label: str, name: str, start: StartPosition
    ) -> dict[str, Any]:
        state = await self._stream_state(link)
        first, last = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
        if int(state.get("messages", 0)) == 0:
            begin = last + 1  # either way: the next element added
        elif start is StartPosition.Newest:
            begin = last
        else:
            begin = max(first, 1)
        target = self._target
        config = {
            "durable_name": name,
            "ack_policy": "explicit",
            "ack_wait": int(target.ack_wait * 1e9),
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": max(begin, 1),
            "max_ack_pending": -1,
            "max_waiting": 4096,
            "metadata": {LABEL_KEY: label},
        }
        try:
            info: dict[str, Any] = await protocol.api(
                link,
                target,
                f"CONSUMER.CREATE.{target.stream}.{name}",
                {"stream_name": target.stream, "config": config, "action": "create"},
            )
        except protocol.ApiError as error:
            if error.err_code not in protocol.CONSUMER_EXISTS:
                raise
            # Another client created it first: its position is the label's.
            info = await protocol.api(link, target, f"CONSUMER.INFO.{target.stream}.{name}")
            return info
        # The position of a new label is just before where it starts.
        info.setdefault("delivered", {})["stream_seq"] = max(begin, 1) - 1
        return info

    async def _reset(self, link: Link, name: str, sequence: int) -> None:
        target = self._target
        await protocol.api(
            link, target, f"CONSUMER.RESET.{target.stream}.{name}", {"seq": max(sequence, 1)}
        )

    # ------------------------------------------------------------ operations

    async def _execute_kind(self, operation: Operation, link: Link) -> Any:
        kind = operation.kind
        if kind is OperationKind.ADD:
            items: list[bytes] = operation.arguments[0]
            if items:
                await self._store(link, items)
                self._last = max(self._last, self.pushed_sequence)
            return None
        if kind is OperationKind.NEXT or kind is OperationKind.RESERVE:
            return await self._take(link, operation, ack=kind is OperationKind.NEXT)
        if kind is OperationKind.REMOVE_LABEL:
            return await self._remove_label(link, operation.arguments[0])
        if kind is OperationKind.ACK or kind is OperationKind.NACK:
            await self._settle_reservation(link, operation.arguments[0], kind)
            return None
        if kind is OperationKind.GIVE_BACK:
            read, delivered = operation.arguments
            await self._give_back(link, read, delivered)
            return None
        raise AssertionError(f"not an MPMC operation: {kind}")

    async def _take(self, link: Link, operation: Operation, *, ack: bool) -> Any:
        label, start, count = operation.arguments
        name = await self._label(link, label, start)
        position = self._labels[label]
        self._seen.setdefault(name, position)
        found = await self._read(link, name, count, operation.wait, operation)
        expired = False
        # Read again: a give-back may have moved the label back meanwhile.
        position = self._labels.get(label, position)
        fresh = [delivery.sequence for delivery in found if delivery.sequence > position]
        if fresh:
            self._labels[label] = max(self._labels.get(label, 0), *fresh)
            if self._ttl > 0 and fresh[0] > position + 1:
                # Rule 2: a gap before the first new one. Another reader of the
                # label may have been handed what lies between: it is a loss
                # only if the stream no longer holds it.
                state = await self._stream_state(link)
                expired = int(state.get("first_seq", 0)) > position + 1
        elif self._ttl > 0:
            state = await self._stream_state(link)
            first, last = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
            if first > position + 1 and last > position:
                expired = True
                await self._reset(link, name, first)
                self._labels[label] = first - 1
        items = [delivery.data for delivery in found]
        reservation = Reservation(items, found, self.generation, label)
        if operation.abandoned and found:
            # Rule 2 of base: the caller is gone before it got them.
            await self._settle_reservation(link, reservation, OperationKind.NACK)
            return ([], expired) if ack else Reservation([], [], self.generation, label)
        # From here on nothing awaits: a caller cancelled now still gets the items.
        if ack:
            if found:
                self._settle_soon(link, found, b"+ACK")
            operation.token = found
            return items, expired
        if items:
            self._reserved.setdefault(label, set()).add(reservation)
        return reservation

    async def _remove_label(self, link: Link, label: str) -> bool:
        target = self._target
        name = self._consumer_name(label)
        self._labels.pop(label, None)
        self._label_names = [known for known in self._label_names if known != label]
        self._reserved.pop(label, None)
        try:
            await protocol.api(link, target, f"CONSUMER.DELETE.{target.stream}.{name}")
        except protocol.ApiError as error:
            if error.err_code == protocol.NOT_FOUND_CONSUMER:
                return False
            raise
        return True

    def _forget(self, reservation: Reservation) -> None:
        held = self._reserved.get(reservation.label or "")
        if held is not None:
            held.discard(reservation)

    async def _settle_reservation(
        self, link: Link, reservation: Reservation, kind: OperationKind, *, count: bool = True
    ) -> None:
        if reservation.settled or not reservation.items:
            reservation.settled = True
            return
        nack = kind is OperationKind.NACK
        confirmed = await self._settle(link, reservation.token, b"-NAK" if nack else b"+ACK")
        reservation.settled = True
        self._forget(reservation)
        if nack:
            self.arrivals += 1
        await asyncio.wait((confirmed,), timeout=protocol.ATTEMPT_TIMEOUT)

    async def _give_back(self, link: Link, read: Operation, delivered: int) -> None:
        if read.error is not None:
            return
        if read.kind is OperationKind.NEXT and read.result is not None:
            label = read.arguments[0]
            deliveries: list[protocol.Delivery] = read.token or []
            rest = deliveries[delivered:]
            items, expired = read.result
            read.result = (items[:delivered], expired)
            if rest and label in self._labels:
                # The label is moved back to the first element it did not get
                # (noted first: a waiting read may be handed it before the reset answers).
                self._labels[label] = rest[0].sequence - 1
                await self._reset(link, self._consumer_name(label), rest[0].sequence)
                self.arrivals += 1
        elif read.kind is OperationKind.RESERVE and read.result is not None:
            await self._settle_part(link, read.result, delivered)

    async def _release_reservations(self) -> None:
        for reservations in list(self._reserved.values()):
            for reservation in list(reservations):
                link = await self._link()
                await self._settle_reservation(link, reservation, OperationKind.NACK)
