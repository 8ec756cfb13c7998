"""What the JetStream FIFO and MPMC engines share: opening, loops, closing, the sync entry points.

An engine's operations are coroutines (``perform``): asyncio and uvloop
callers await them on their own loop, with that loop's connection; trio,
blocking and nonblocking callers run them on the bridge (``_bridge``). The
engine keeps one connection per loop it has been used on.

Rules:

1. A queue is opened (stream and consumer checked or created) in the
   constructor, through the bridge, so a bad server, credential or kind fails
   there; nothing is created on a refused open.
2. Cancellation: a caller that stops waiting leaves the engine's own task to
   finish; a read abandoned before it settled gives its messages back
   (``-NAK``), a push already sent is stored once (its ``Nats-Msg-Id``).
3. Properties never do I/O: they are the last state this handle saw,
   refreshed by every operation (see ``Capabilities.exact_properties``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors

from .. import _bridge
from .._dispatch import Operation, OperationKind, Reservation, Stage, new_generation
from .._engine import Capabilities
from .._errors import QueueClosedError, QueueError
from .._types import ClosesOnExit
from . import connection, protocol
from .connection import Link
from .publisher import Publisher
from .url import Target

CAPABILITIES = Capabilities(
    name="jetstream",
    runs_on="asyncio",
    max_items_per_call=None,  # the path's batch_limit, see JetStreamQueue.max_items_per_call
    gives_back_in_front=False,
    local_arrivals=False,
    exact_properties=False,
    durable=True,
)

KIND_KEY = "rocksq_aio.kind"
NAME_KEY = "rocksq_aio.name"
FORMAT_KEY = "rocksq_aio.format"
FORMAT = "1"
LONG_POLL = 30.0
"""Longest single waiting pull; a longer wait makes another."""
CATCH_UP = 0.25
"""How long a read keeps looking for an element this handle stored and has not seen yet:
the server hands a just-stored message to its consumers a moment after acknowledging it."""
RECENT_SETTLE = 1.0
"""Seconds after a settle during which a refusal for capacity is worth one more try."""
_KIND_NAMES = {"fifo": "a FIFO queue", "mpmc": "an MPMC queue"}


class JetStreamQueue(ClosesOnExit):
    """One queue (stream) on a JetStream server; see the module's docstring."""

    capabilities = CAPABILITIES
    kind = ""

    def __init__(self, target: Target) -> None:
        self._target = target
        self.generation = new_generation()
        """Stamped on this handle's reservations (``_dispatch.Reservation``); the
        server, not the generation, decides whether one can still be settled."""
        self._closed = False
        self._closing = False
        """Set first when closing: reads stop waiting, so that items given back
        meanwhile stay in the queue instead of going to a waiter that is closing."""
        self._bridge = _bridge.bridge()
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Link] = (
            weakref.WeakKeyDictionary()
        )
        self._held_links: list[Link] = []
        self._publishers: weakref.WeakKeyDictionary[Link, Publisher] = weakref.WeakKeyDictionary()
        self._parked: set[protocol.Parked] = set()
        self._parked_reads: dict[Operation, protocol.Parked] = {}
        self._confirmations: set[asyncio.Future[None]] = set()
        self._sending: set[asyncio.Future[Any]] = set()
        self._working: set[asyncio.Future[Any]] = set()
        """Operations executing (their callers may have stopped waiting)."""
        self._lock = threading.Lock()
        self._pending: deque[Operation] = deque()
        self._drain_lock = threading.Lock()
        self.arrivals = 0
        self._last_settle = -RECENT_SETTLE
        self._seen: dict[str, int] = {}
        """Per consumer, the highest stream sequence this handle saw it deliver."""
        self.storing = 0
        """Pushes and adds of this handle not answered yet."""
        self.pushed_sequence = 0
        """The stream sequence of the last element this handle stored."""

    # ------------------------------------------------------------ leases
    # The server keeps the leases (ack_wait) and redelivers by itself: this
    # handle never has one to release (``_engine.QueueEngine``).

    @property
    def lease_timeout(self) -> float | None:
        return None

    @property
    def deadline_changes(self) -> int:
        return 0

    def seconds_to_lease_expiry(self) -> float | None:
        return None

    # ------------------------------------------------------------ opening

    def _open(self) -> None:
        try:
            self._bridge.run(self._open_on_bridge)
        except BaseException:
            self._closed = True
            self._release_links()
            raise

    async def _open_on_bridge(self) -> None:
        link = await self._link()
        info = await self._stream_info(link)
        if info is None:
            info = await self._create_stream(link)
        else:
            self._check_kind(info)
            info = await self._reconfigure(link, info)
        await self._opened(link, info)

    async def _stream_info(self, link: Link) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await protocol.api(
                link, self._target, f"STREAM.INFO.{self._target.stream}"
            )
        except protocol.ApiError as error:
            if error.err_code == protocol.NOT_FOUND_STREAM:
                return None
            raise
        return info

    def _check_kind(self, info: dict[str, Any]) -> None:
        metadata = info.get("config", {}).get("metadata") or {}
        kind = metadata.get(KIND_KEY)
        if kind is None:
            raise QueueError(
                f"{self._target.display}: stream {self._target.stream!r} exists but is not a "
                "rocksq_aio queue (no queue kind in its metadata); nothing was changed"
            )
        if kind != self.kind:
            raise QueueError(
                f"{self._target.display} is {_KIND_NAMES.get(kind, repr(kind))}, not "
                f"{_KIND_NAMES[self.kind]} (queue kind {kind!r}); nothing was changed"
            )

    def _stream_config(self) -> dict[str, Any]:
        target = self._target
        return {
            "name": target.stream,
            "subjects": [target.subject],
            "storage": target.storage,
            "num_replicas": target.replicas,
            "allow_atomic": True,
            "metadata": {KIND_KEY: self.kind, NAME_KEY: target.queue, FORMAT_KEY: FORMAT},
        }

    async def _create_stream(self, link: Link) -> dict[str, Any]:
        try:
            info: dict[str, Any] = await protocol.api(
                link, self._target, f"STREAM.CREATE.{self._target.stream}", self._stream_config()
            )
        except protocol.ApiError as error:
            if error.err_code != 10058:  # created meanwhile by another client
                raise
            existing = await self._stream_info(link)
            if existing is None:
                raise
            self._check_kind(existing)
            return existing
        return info

    async def _reconfigure(self, link: Link, info: dict[str, Any]) -> dict[str, Any]:
        """Bring an existing stream's configuration to this handle's options."""
        return info

    async def _opened(self, link: Link, info: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ loops and links

    async def _link(self) -> Link:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None and link.usable:
            return link
        link = await connection.acquire(self._target)
        self._links[loop] = link
        with self._lock:
            self._held_links.append(link)
        return link

    def _publisher(self, link: Link) -> Publisher:
        publisher = self._publishers.get(link)
        if publisher is None:
            publisher = self._publishers[link] = Publisher(link, self._target, self._confirm_acks)
        return publisher

    # ------------------------------------------------------------ the protocol

    @property
    def path(self) -> str:
        return self._target.display

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def disk_size(self) -> int:
        """The server's byte count of the stream (messages with their subjects and headers)."""
        return self._bytes

    _bytes = 0

    @property
    def parked(self) -> int:
        """Reads waiting for an element at the server (not counted as in flight)."""
        return len(self._parked)

    @property
    def max_items_per_call(self) -> int:
        return self._target.batch_limit

    def _closed_error(self) -> QueueClosedError:
        return QueueClosedError(f"queue at {self._target.display!r} is closed")

    def check_usable(self) -> None:
        if self._closed:
            raise self._closed_error()

    async def perform(self, operation: Operation) -> Any:
        """Execute ``operation`` on the running asyncio loop (rule 2 for cancellation)."""
        self.check_usable()
        operation.stage = Stage.RUNNING
        work = asyncio.ensure_future(self._execute(operation))
        work.add_done_callback(lambda done: _record(done, operation))
        self._working.add(work)
        work.add_done_callback(self._working.discard)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if work.done() and not work.cancelled() and work.exception() is None:
                return work.result()  # it happened: the caller gets it
            operation.abandoned = True
            parked = self._parked_reads.get(operation)
            if parked is not None:
                parked.wake()  # a read waiting at the server stops waiting
            work.add_done_callback(_consume_outcome)
            raise

    async def _execute(self, operation: Operation) -> Any:
        if self._closing and operation.kind is OperationKind.GIVE_BACK:
            await self._waiters_gone()
        try:
            return await self._execute_kind(operation, await self._link())
        except nats.errors.ConnectionClosedError:
            if self._closed:
                raise self._closed_error() from None
            raise

    async def _execute_kind(self, operation: Operation, link: Link) -> Any:
        raise NotImplementedError

    async def _store(self, link: Link, items: list[bytes]) -> None:
        """Append ``items`` atomically (group-committed with concurrent pushes)."""
        if len(items) > self._target.batch_limit:
            raise ValueError(
                f"a push or add of {len(items)} items is more than the server's atomic batch "
                f"limit of {self._target.batch_limit} messages (jetstream.limits.batch.max_msgs; "
                "the path's batch_limit option must match it); split it into several calls"
            )
        limit = link.client.max_payload
        for position, item in enumerate(items):
            if len(item) > limit:
                raise ValueError(
                    f"items[{position}] is {len(item)} bytes, more than the server's max_payload "
                    f"of {limit} bytes"
                )
        self.storing += 1
        try:
            sequence = await self._publisher(link).push(items)
        finally:
            self.storing -= 1
        self.pushed_sequence = max(self.pushed_sequence, sequence)
        self.arrivals += 1

    async def _confirm_acks(self) -> bool:
        """Wait until the server processed every settle sent so far.

        True if this handle settled anything lately: a publish the server
        handled before such an ack (they travel separately inside the server)
        may have been refused for room the ack then freed.
        """
        loop = asyncio.get_running_loop()
        sending = [task for task in self._sending if task.get_loop() is loop]
        if sending:
            await asyncio.wait(sending, timeout=protocol.ATTEMPT_TIMEOUT)
        waiting = [done for done in self._confirmations if done.get_loop() is loop]
        if waiting:
            await asyncio.wait(waiting, timeout=protocol.ATTEMPT_TIMEOUT)
        return bool(waiting) or loop.time() - self._last_settle < RECENT_SETTLE

    def _settle_soon(self, link: Link, deliveries: list[protocol.Delivery], verb: bytes) -> None:
        """``_settle`` in a task of its own, so that the caller has nothing left to await."""
        task = asyncio.ensure_future(self._settle(link, deliveries, verb))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(_consume_outcome)

    async def _settle(
        self, link: Link, deliveries: list[protocol.Delivery], verb: bytes
    ) -> asyncio.Future[None]:
        confirmed = await protocol.settle(link, deliveries, verb)
        self._last_settle = asyncio.get_running_loop().time()
        self._confirmations.add(confirmed)
        confirmed.add_done_callback(self._confirmations.discard)
        loop = asyncio.get_running_loop()
        # A confirmation that never comes (lost connection) must not be kept forever.
        loop.call_later(protocol.ATTEMPT_TIMEOUT * 5, lambda: link.forget_future(confirmed))
        return confirmed

    async def _read(
        self, link: Link, consumer: str, count: int, wait: float, operation: Operation
    ) -> list[protocol.Delivery]:
        """Up to ``count`` messages for ``consumer``, waiting up to ``wait`` s for the first.

        An element this handle stored after the last one it saw ``consumer``
        deliver is looked for again for a moment (``CATCH_UP``) rather than
        reported missing: the server hands a stored message to its consumers
        a moment after acknowledging it.
        """
        target = self._target
        loop = asyncio.get_running_loop()
        seen = self._seen
        found = await protocol.pull(link, target, consumer, count)
        catch_up_until = None
        while True:
            if found:
                last = max(delivery.sequence for delivery in found)
                seen[consumer] = max(seen.get(consumer, 0), last)
            if len(found) >= count or self._closing:
                break
            if self.pushed_sequence <= seen.get(consumer, 0):
                break
            now = loop.time()
            if catch_up_until is None:
                # Has the consumer handed them out (to anyone) already?
                catch_up_until = now + CATCH_UP
                info = await protocol.api(link, target, f"CONSUMER.INFO.{target.stream}.{consumer}")
                delivered = int(info.get("delivered", {}).get("stream_seq", 0))
                seen[consumer] = max(seen.get(consumer, 0), delivered)
                continue
            if now >= catch_up_until:
                seen[consumer] = max(seen.get(consumer, 0), self.pushed_sequence)
                break
            await asyncio.sleep(0.001)
            found += await protocol.pull(link, target, consumer, count - len(found))
        if found or wait <= 0:
            return found
        end = loop.time() + wait
        while True:
            if self._closing:
                raise self._closed_error()
            if operation.abandoned:
                return []
            remaining = end - loop.time()
            if remaining <= 0:
                return []
            parked = protocol.Parked()
            self._parked.add(parked)
            self._parked_reads[operation] = parked
            try:
                first = await protocol.pull_waiting(
                    link, target, consumer, min(remaining, LONG_POLL), parked
                )
            finally:
                self._parked.discard(parked)
                self._parked_reads.pop(operation, None)
            if first is not None:
                found = [first]
                if count > 1:
                    found += await protocol.pull(link, target, consumer, count - 1)
                last = max(delivery.sequence for delivery in found)
                seen[consumer] = max(seen.get(consumer, 0), last)
                if self._closing:
                    await self._settle(link, found, b"-NAK")
                    raise self._closed_error()
                return found

    # ------------------------------------------------------------ threads: nonblocking, blocking

    def submit(self, operation: Operation) -> None:
        self.check_usable()
        with self._lock:
            self._pending.append(operation)

    def drain(self) -> None:
        """Execute what is pending, in order, on the bridge (the nonblocking face's worker)."""
        with self._drain_lock:
            with self._lock:
                group = list(self._pending)
                self._pending.clear()
                for operation in group:
                    operation.stage = Stage.RUNNING
            if group:
                self._bridge.run(lambda: self._execute_in_order(group))

    async def _execute_in_order(self, group: list[Operation]) -> None:
        # Pushes submitted back to back run together (one batch); anything
        # else waits for what came before it, as on the embedded engines.
        index = 0
        while index < len(group):
            end = index + 1
            writes = (OperationKind.PUSH, OperationKind.ADD)
            if group[index].kind in writes:
                while end < len(group) and group[end].kind in writes:
                    end += 1
            await asyncio.gather(*(self._complete(operation) for operation in group[index:end]))
            index = end

    async def _complete(self, operation: Operation) -> None:
        try:
            self.check_usable()
            operation.result = await self._execute(operation)
        except Exception as error:
            operation.error = error
        operation.stage = Stage.DONE

    def run(self, operation: Operation) -> Any:
        """Execute ``operation`` and block the calling thread for its result."""
        self.check_usable()
        try:
            result = self._bridge.run(lambda: self._execute(operation))
        except BaseException as error:
            operation.error = error
            raise
        finally:
            operation.stage = Stage.DONE
        operation.result = result
        return result

    def abandon(self, operation: Operation) -> Operation | None:
        with self._lock:
            if operation.stage is Stage.PENDING and operation in self._pending:
                self._pending.remove(operation)
                operation.stage = Stage.WITHDRAWN
            else:
                operation.abandoned = True
        return None

    # ------------------------------------------------------------ closing

    async def _waiters_gone(self) -> None:
        """Wait (briefly) until reads woken by the close stopped listening: what a
        closing queue gives back must not be handed to one of them."""
        loop = asyncio.get_running_loop()
        end = loop.time() + protocol.ATTEMPT_TIMEOUT
        while any(parked.loop is loop for parked in self._parked) and loop.time() < end:
            await asyncio.sleep(0.001)

    def stop_waiting(self) -> None:
        """The queue is closing: reads waiting at the server return (QueueClosedError)."""
        self._closing = True
        for parked in list(self._parked):
            parked.wake()

    def close(self) -> None:
        """Stop every waiting read and release the connections (from any thread)."""
        if self._closed:
            return
        self.stop_waiting()
        self._closed = True
        if not self._bridge.on_bridge:
            with contextlib.suppress(Exception):
                self._bridge.run(self._before_close)
        self._release_links()

    async def aclose(self) -> None:
        if self._closed:
            return
        self.stop_waiting()
        self._closed = True
        with contextlib.suppress(Exception):
            await self._before_close()
        self._release_links()

    async def _before_close(self) -> None:
        # Operations whose callers stopped waiting finish first: a read
        # abandoned meanwhile releases what it was handed.
        loop = asyncio.get_running_loop()
        working = [work for work in self._working if work.get_loop() is loop]
        if working:
            await asyncio.wait(working, timeout=protocol.ATTEMPT_TIMEOUT * 2)
        await self._release_reservations()
        await self._confirm_acks()

    async def _release_reservations(self) -> None:
        """Give back what this handle reserved and did not settle (the engines do)."""

    async def _settle_reservation(
        self, link: Link, reservation: Reservation, kind: OperationKind, *, count: bool = True
    ) -> None:
        raise NotImplementedError

    def _forget(self, reservation: Reservation) -> None:
        """``reservation`` is settled: no longer this handle's to release."""
        raise NotImplementedError

    async def _settle_part(self, link: Link, reservation: Reservation, delivered: int) -> None:
        """Ack the first ``delivered`` items of ``reservation`` and release the rest
        (an iterator's read-ahead, given back when it stops)."""
        if reservation.settled or not reservation.items:
            reservation.settled = True
            return
        deliveries: list[protocol.Delivery] = reservation.token
        rest = reservation.items[delivered:]
        if delivered:
            await self._settle(link, deliveries[:delivered], b"+ACK")
        reservation.items, reservation.token = rest, deliveries[delivered:]
        if rest:
            await self._settle_reservation(link, reservation, OperationKind.NACK)
        else:
            reservation.settled = True
            self._forget(reservation)

    def _release_links(self) -> None:
        with self._lock:
            links, self._held_links = self._held_links, []
        for link in links:
            connection.release_soon(link)

    def __enter__(self) -> JetStreamQueue:
        return self

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            with contextlib.suppress(Exception):
                self._release_links()


def _record(work: asyncio.Future[Any], operation: Operation) -> None:
    """Note the outcome on the operation, where give-backs and the faces read it."""
    if work.cancelled():
        operation.error = QueueClosedError("the operation was cancelled with its event loop")
    elif work.exception() is not None:
        operation.error = work.exception()
    else:
        operation.result = work.result()
    operation.stage = Stage.DONE


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def run_on_bridge(start: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return _bridge.bridge().run(start)
