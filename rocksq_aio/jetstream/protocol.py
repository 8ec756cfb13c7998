"""The JetStream requests this engine makes, on raw subjects: API calls, publishes, pulls.

nats-py's JetStream context has no atomic batch, its ``fetch`` waits out its
timeout on an empty consumer, and its ``publish_async`` never resolves when
the server answers with an error (nats.py#985). So the few requests we need
are made here directly, on a ``Link``'s reply subscription.

Rules:

1. Every request is retried through timeouts, missing responders and
   503 answers that are not "stream full" until the path's ``timeout``, then
   ``QueueUnavailableError``; a retried publish carries the same
   ``Nats-Msg-Id``, so the server stores it once.
2. ``10077`` (maximum messages exceeded) is ``QueueFullError``: the server
   wrote nothing.
3. An empty pull returns at once (``no_wait``); a waiting pull asks for one
   message with ``expires`` and removes its interest when abandoned, so the
   server does not deliver to a reader that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
from nats.aio.msg import Msg

from .._errors import QueueError, QueueFullError, QueueUnavailableError
from .connection import Link, Replies
from .url import Target

T = TypeVar("T")

ATTEMPT_TIMEOUT = 2.0
"""Seconds one attempt waits for its answer before it is retried."""
FULL = 10077
NOT_FOUND_STREAM = 10059
NOT_FOUND_CONSUMER = 10014
CONSUMER_EXISTS = (10013, 10105, 10148)
DUPLICATE_IN_BATCH = 10201
BATCHES_IN_FLIGHT = 10210
DUPLICATE_IN_PROCESS = 10158
"""A retry arrived while the server still stores the first attempt (a paused leader)."""


class ApiError(QueueError):
    """The server refused a request (``code``/``err_code`` as JetStream reports them)."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {code}/{err_code}: {description}")
        self.code = code
        self.err_code = err_code
        self.description = description


_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
    asyncio.TimeoutError,
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, ApiError):
        return (error.code == 503 and error.err_code != FULL) or error.err_code in (
            BATCHES_IN_FLIGHT,
            DUPLICATE_IN_PROCESS,
        )
    return isinstance(error, _TRANSIENT)


def answer(message: Msg) -> dict[str, Any]:
    """The JSON answer of a request; raises ApiError for an error answer."""
    try:
        body: dict[str, Any] = json.loads(message.data) if message.data else {}
    except ValueError:
        raise QueueError(
            f"JetStream sent an answer that is not JSON: {message.data[:200]!r}"
        ) from None
    error = body.get("error")
    if error is not None:
        raise ApiError(
            int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description"))
        )
    return body


async def retrying(target: Target, what: str, attempt: Callable[[float], Awaitable[T]]) -> T:
    """``attempt(seconds)`` until it succeeds or fails for good (see rule 1)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + target.timeout
    delay = 0.02
    while True:
        remaining = end - loop.time()
        try:
            return await attempt(max(0.05, min(ATTEMPT_TIMEOUT, remaining)))
        except QueueFullError:
            raise
        except (ApiError, nats.errors.Error, asyncio.TimeoutError) as error:
            if isinstance(error, ApiError) and error.err_code == FULL:
                raise QueueFullError(
                    f"{target.display}: queue is full; nothing was written"
                ) from None
            if not is_transient(error):
                raise
            if loop.time() + delay >= end:
                raise QueueUnavailableError(
                    f"{target.display}: {what} did not succeed within {target.timeout:g} s "
                    f"(last error: {type(error).__name__}: {error})"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)


async def api(link: Link, target: Target, subject: str, body: dict[str, Any] | None = None) -> Any:
    """One ``$JS.API`` call, retried (rule 1); returns the decoded answer."""
    payload = json.dumps(body).encode() if body is not None else b""

    async def attempt(seconds: float) -> dict[str, Any]:
        return answer(await link.request("$JS.API." + subject, payload, seconds))

    return await retrying(target, subject.split(".", 2)[0].lower() + " call", attempt)


# ---------------------------------------------------------------- publishing

HEADER_BYTES = 176
"""The size of every stored message's header block: each publish is padded to it
(``Rocksq-Pad``), so that the server's byte count of a stream tells the exact
payload size of its messages (see ``stored_bytes``)."""
_PAD = "Rocksq-Pad"
SEQUENCE_DIGITS = 7


def padded(fields: dict[str, str]) -> dict[str, str]:
    """``fields`` plus the pad header that brings the block to HEADER_BYTES."""
    size = len("NATS/1.0\r\n") + sum(len(k) + len(v) + 4 for k, v in fields.items()) + 2
    fields[_PAD] = "." * (HEADER_BYTES - size - len(_PAD) - 4)
    return fields


def stored_bytes(storage: str, subject: str) -> int:
    """Bytes the server counts for a message besides its payload (nats-server's
    fileStoreMsgSize / memStoreMsgSize: record overhead, subject, headers and, in a
    file, the headers' length)."""
    return (34 if storage == "file" else 16) + len(subject) + HEADER_BYTES


async def publish(link: Link, target: Target, items: list[bytes]) -> int:
    """Store ``items`` atomically at the end of the stream; the last one's sequence.

    One item is one publish; more are one atomic batch (server 2.12+). Either
    way the last message carries a ``Nats-Msg-Id``, so retries store once.
    """
    message_id = uuid.uuid4().hex
    subject = target.subject

    async def attempt(seconds: float) -> int:
        if len(items) == 1:
            headers = padded({"Nats-Msg-Id": message_id})
            reply = await link.request(subject, items[0], seconds, headers)
            return int(answer(reply)["seq"])
        return await _publish_batch(link, subject, items, message_id, seconds)

    try:
        return await retrying(target, "publish", attempt)
    except ApiError as error:
        if error.err_code == DUPLICATE_IN_BATCH:
            # Our id was seen: an earlier attempt whose answer was lost committed.
            return 0
        raise


def _sequence(number: int) -> str:
    # Zero-padded, so that every batch message's headers have one size.
    return str(number).rjust(SEQUENCE_DIGITS, "0")


async def _publish_batch(
    link: Link, subject: str, items: list[bytes], message_id: str, seconds: float
) -> int:
    client = link.client
    batch = uuid.uuid4().hex
    first_reply, first = link.expect(1)
    last_reply, last = link.expect(1)
    try:
        # The first message's answer (empty, or an error) is awaited with the
        # commit's, so a batch costs one round trip.
        await client.publish(
            subject,
            items[0],
            reply=first_reply,
            headers=padded({"Nats-Batch-Id": batch, "Nats-Batch-Sequence": _sequence(1)}),
        )
        final = len(items)
        for sequence in range(2, final):
            await client.publish(
                subject,
                items[sequence - 1],
                headers=padded(
                    {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": _sequence(sequence)}
                ),
            )
        await client.publish(
            subject,
            items[-1],
            reply=last_reply,
            headers=padded(
                {
                    "Nats-Batch-Id": batch,
                    "Nats-Batch-Sequence": _sequence(final),
                    "Nats-Batch-Commit": "1",
                    "Nats-Msg-Id": message_id,
                }
            ),
        )
        try:
            await asyncio.wait_for(asyncio.shield(last.done), seconds)
        except asyncio.TimeoutError:
            raise nats.errors.TimeoutError from None
        committed = last.messages[0]
        if first.done.done():
            answer(first.messages[0])  # the first message's own refusal, if any
        if committed.headers and committed.headers.get("Status") == "503":
            raise nats.errors.NoRespondersError
        return int(answer(committed)["seq"])
    finally:
        link.forget(first)
        link.forget(last)


# ---------------------------------------------------------------- pulling


class Delivery:
    """A message a pull handed us: its payload and where to settle it."""

    __slots__ = ("data", "delivered", "pending", "reply", "sequence")

    def __init__(self, message: Msg) -> None:
        self.data: bytes = message.data
        self.reply: str = message.reply
        tokens = message.reply.split(".")
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or the
        # form with domain and account hash in front and a random token last.
        base = 4 if len(tokens) == 9 else 6
        self.delivered = int(tokens[base])
        self.sequence = int(tokens[base + 1])
        """The message's stream sequence."""
        self.pending = int(tokens[base + 4])
        """Messages the consumer had not delivered yet when it sent this one."""


def _deliveries(messages: list[Msg], target: Target) -> list[Delivery]:
    found: list[Delivery] = []
    for message in messages:
        if message.reply:
            found.append(Delivery(message))
            continue
        status = (message.headers or {}).get("Status", "")
        if status in ("404", "408"):
            continue
        description = (message.headers or {}).get("Description", "")
        if status == "409" and "leadership" in description.lower():
            raise nats.errors.TimeoutError
        if status == "503":
            raise nats.errors.NoRespondersError
        raise ApiError(int(status or 0), 0, f"pull refused: {description or status}")
    return found


MAX_PULL = 1000
"""Most messages one pull asks for: bounded so a huge ``max_elements`` sizes nothing."""


async def pull(link: Link, target: Target, consumer: str, count: int) -> list[Delivery]:
    """Up to ``count`` messages that are there now ([] at once when none are)."""
    subject = f"$JS.API.CONSUMER.MSG.NEXT.{target.stream}.{consumer}"
    count = min(count, MAX_PULL)
    request = json.dumps({"batch": count, "no_wait": True}).encode()

    async def attempt(seconds: float) -> list[Delivery]:
        inbox = await link.take_inbox()
        replies = inbox.replies = Replies(count)
        clean = False
        try:
            await link.client.publish(subject, request, reply=inbox.subject)
            try:
                await asyncio.wait_for(asyncio.shield(replies.done), seconds)
            except asyncio.TimeoutError:
                if not replies.messages:
                    raise nats.errors.TimeoutError from None
            clean = replies.done.done()
            return _deliveries(replies.messages, target)
        finally:
            await link.return_inbox(inbox, clean)

    return await retrying(target, "read", attempt)


class Parked:
    """A waiting pull's wake-up: set when its queue closes."""

    __slots__ = ("loop", "woken")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.woken: asyncio.Future[None] = self.loop.create_future()

    def wake(self) -> None:
        """From any thread."""

        def wake() -> None:
            if not self.woken.done():
                self.woken.set_result(None)

        if self.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            wake()
        else:
            with contextlib.suppress(RuntimeError):  # that loop has ended
                self.loop.call_soon_threadsafe(wake)


async def pull_waiting(
    link: Link, target: Target, consumer: str, seconds: float, parked: Parked
) -> Delivery | None:
    """The next message, waiting up to ``seconds`` for one (None: none came, or woken)."""
    client = link.client
    subject = f"$JS.API.CONSUMER.MSG.NEXT.{target.stream}.{consumer}"
    inbox = client.new_inbox()
    arrived: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
    # An exact subscription of our own: unsubscribing it removes the server's
    # interest, so a waiting request it no longer wants gets no message.
    subscription = await client.subscribe(inbox, future=arrived)
    try:
        expires = int(max(0.001, seconds) * 1e9)
        await client.publish(subject, json.dumps({"batch": 1, "expires": expires}).encode(), inbox)
        await asyncio.wait(
            (arrived, parked.woken),
            timeout=seconds + ATTEMPT_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not arrived.done() and not client.is_closed:
            # Woken: the server may be sending us a message right now. Remove
            # the interest first and keep listening until a round trip says
            # everything sent before that has arrived; then it is ours to
            # hand on (or release), not lost until ack_wait.
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, AttributeError):
                await client._send_unsubscribe(subscription._id)
                await client.flush(int(ATTEMPT_TIMEOUT))
    finally:
        if not client.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        if not arrived.done():
            arrived.cancel()
    if arrived.cancelled():
        return None
    found = _deliveries([arrived.result()], target)
    return found[0] if found else None


# ---------------------------------------------------------------- settling


async def settle(link: Link, deliveries: list[Delivery], verb: bytes) -> asyncio.Future[None]:
    """Send ``verb`` (+ACK, -NAK) for each delivery; the future is set once the server
    processed them all (the last is sent as a request, and acks are handled in order)."""
    client = link.client
    for delivery in deliveries[:-1]:
        await client.publish(delivery.reply, verb)
    reply, replies = link.expect(1)
    await client.publish(deliveries[-1].reply, verb, reply=reply)
    return replies.done
