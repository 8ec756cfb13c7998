"""Group commit of concurrent pushes into atomic batches, per connection and stream.

JetStream is fast when requests are concurrent and faster still in atomic
batches, so pushes are not funnelled through one worker: every push made in
one turn of the event loop is sent as one atomic batch (up to the batch
limit) once there are ``GROUP_FROM`` of them, and up to
``MAX_BATCHES_IN_FLIGHT`` batches are in flight at once.

Rules:

1. A push stays all-or-nothing: its items are never split across batches.
2. A batch refused for capacity (10077) is sent again push by push, in order,
   so that only the pushes that do not fit fail, each with QueueFullError.
   Before that, settles this handle sent and the server has not confirmed yet
   are waited for once (an ack frees room only when the server processed it).
3. A push whose caller stops waiting before its batch was sent is withdrawn;
   once sent, it completes (stored once, by its ``Nats-Msg-Id``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .._errors import QueueFullError
from . import protocol
from .connection import Link
from .url import Target

GROUP_FROM = 8
"""Pushes waiting in one turn of the loop from which they are merged into batches."""
MAX_BATCHES_IN_FLIGHT = 40
"""Below the server's 50 atomic batches in flight per stream (10210 beyond)."""


class _Push:
    __slots__ = ("done", "items", "sent")

    def __init__(self, items: list[bytes]) -> None:
        self.items = items
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.sent = False


class Publisher:
    """Pushes on one link to one stream; see the module's docstring."""

    def __init__(
        self, link: Link, target: Target, confirm_settles: Callable[[], Awaitable[bool]]
    ) -> None:
        self._link = link
        self._target = target
        self._confirm_settles = confirm_settles
        self._waiting: list[_Push] = []
        self._scheduled = False
        self._slots = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)

    async def push(self, items: list[bytes]) -> int:
        """Store ``items`` atomically; the stream sequence of the last one."""
        entry = _Push(items)
        self._waiting.append(entry)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_waiting)
        try:
            return await asyncio.shield(entry.done)
        except asyncio.CancelledError:
            if not entry.sent:
                self._waiting.remove(entry)
                entry.done.cancel()
            else:
                entry.done.add_done_callback(_consume_outcome)
            raise

    def _send_waiting(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        if len(waiting) < GROUP_FROM:
            # A few pushes go faster each on its own, concurrently: the server
            # takes longer to commit an atomic batch than a lone publish.
            for entry in waiting:
                self._start([entry])
            return
        limit = self._target.batch_limit
        batch: list[_Push] = []
        size = 0
        for entry in waiting:
            if batch and size + len(entry.items) > limit:
                self._start(batch)
                batch, size = [], 0
            batch.append(entry)
            size += len(entry.items)
        if batch:
            self._start(batch)

    def _start(self, batch: list[_Push]) -> None:
        for entry in batch:
            entry.sent = True
        asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[_Push]) -> None:
        async with self._slots:
            try:
                await self._send_batch(batch)
            except BaseException as error:
                for entry in batch:
                    if not entry.done.done():
                        entry.done.set_exception(error)
                if not isinstance(error, Exception):
                    raise

    async def _send_batch(self, batch: list[_Push]) -> None:
        items = [item for entry in batch for item in entry.items]
        try:
            last = await self._publish(items)
        except QueueFullError:
            if len(batch) == 1:
                raise
            for entry in batch:  # rule 2: in order, each on its own
                try:
                    entry.done.set_result(await self._publish(entry.items))
                except QueueFullError as error:
                    entry.done.set_exception(error)
            return
        # The sequence of each push's last item, counted back from the batch's last.
        end = last
        for entry in reversed(batch):
            if not entry.done.done():
                entry.done.set_result(end)
            end -= len(entry.items)

    async def _publish(self, items: list[bytes]) -> int:
        try:
            return await protocol.publish(self._link, self._target, items)
        except QueueFullError:
            if not await self._confirm_settles():
                raise
            return await protocol.publish(self._link, self._target, items)


def _consume_outcome(done: asyncio.Future[int]) -> None:
    if not done.cancelled():
        done.exception()
