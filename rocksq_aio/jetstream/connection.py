"""Connections to the servers: one per event loop and server set, shared by every queue.

nats-py's client belongs to the asyncio loop that made it, so a connection
(a ``Link``) is made per loop: the loop of an asyncio (or uvloop) caller, or
the bridge's loop for trio, blocking and nonblocking callers. Queues whose
paths name the same servers and credentials share one.

Rules:

1. Connecting is bounded by ``connect_timeout``; an unreachable server, a
   refused credential or a server older than ``MIN_SERVER`` is a
   ``QueueUnavailableError`` or ``QueueError`` saying which, never a hang.
2. Replies (pulls, publishes, API calls) arrive on one wildcard subscription
   per link and are handed to the ``Replies`` waiting for them by token.
3. A link is closed when the last queue using it releases it; a link whose
   loop has ended is dropped, since nothing can run on it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from .._errors import QueueError, QueueUnavailableError
from .url import Target

MIN_SERVER = (2, 14)
"""Atomic batch publish needs 2.12; resetting a consumer (MPMC expiry) 2.14."""


class Replies:
    """Messages sent to one reply subject, until ``limit`` came or a status message ends them."""

    __slots__ = ("done", "limit", "messages")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.messages: list[Msg] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, message: Msg) -> None:
        if self.done.done():
            return
        self.messages.append(message)
        if len(self.messages) >= self.limit or _is_status(message):
            self.done.set_result(None)


def _is_status(message: Msg) -> bool:
    headers = message.headers
    return not message.reply and headers is not None and "Status" in headers


class Inbox:
    """A subscription pulls are answered on: JetStream sends a pull's messages
    under their own subjects, so they are told apart by subscription, not subject."""

    __slots__ = ("replies", "subject", "subscription")

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.replies: Replies | None = None
        self.subscription: Any = None

    async def on_message(self, message: Msg) -> None:
        if self.replies is not None:
            self.replies.add(message)


class Link:
    """One nats-py connection on one event loop, with its reply subscription."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop, key: tuple[object, ...]):
        self.client = client
        self.loop = loop
        self.key = key
        self.users = 0
        self._prefix = client.new_inbox() + "."
        self._next_token = 0
        self._waiting: dict[str, Replies] = {}
        self._inboxes: list[Inbox] = []

    async def start(self) -> None:
        await self.client.subscribe(self._prefix + "*", cb=self._on_reply, pending_bytes_limit=0)

    async def _on_reply(self, message: Msg) -> None:
        replies = self._waiting.get(message.subject[len(self._prefix) :])
        if replies is not None:
            replies.add(message)

    def expect(self, limit: int = 1) -> tuple[str, Replies]:
        """A reply subject and what will collect up to ``limit`` replies sent to it."""
        self._next_token += 1
        token = str(self._next_token)
        replies = Replies(limit)
        self._waiting[token] = replies
        replies.done.add_done_callback(lambda _: self._waiting.pop(token, None))
        return self._prefix + token, replies

    def forget(self, replies: Replies) -> None:
        self.forget_future(replies.done)

    @staticmethod
    def forget_future(done: asyncio.Future[None]) -> None:
        """Stop waiting for the replies whose ``done`` this is."""
        if not done.done():
            done.cancel()

    async def request(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Msg:
        """Publish and wait for the first reply; nats.errors.TimeoutError after ``timeout``."""
        reply, replies = self.expect(1)
        try:
            await self.client.publish(subject, payload, reply=reply, headers=headers)
            await asyncio.wait_for(asyncio.shield(replies.done), timeout)
        except asyncio.TimeoutError:
            raise nats.errors.TimeoutError from None
        finally:
            self.forget(replies)
        message = replies.messages[0]
        if message.headers and message.headers.get("Status") == "503" and not message.data:
            raise nats.errors.NoRespondersError
        return message

    async def take_inbox(self) -> Inbox:
        """A pull subscription of our own, reused when its last pull ended cleanly."""
        if self._inboxes:
            return self._inboxes.pop()
        inbox = Inbox(self.client.new_inbox())
        inbox.subscription = await self.client.subscribe(
            inbox.subject, cb=inbox.on_message, pending_bytes_limit=0
        )
        return inbox

    async def return_inbox(self, inbox: Inbox, clean: bool) -> None:
        """Keep ``inbox`` for the next pull, or drop it when replies may still come."""
        inbox.replies = None
        if clean and len(self._inboxes) < 64:
            self._inboxes.append(inbox)
            return
        with contextlib.suppress(nats.errors.Error):
            await inbox.subscription.unsubscribe()

    @property
    def usable(self) -> bool:
        return not self.client.is_closed and not self.loop.is_closed()

    async def close(self) -> None:
        # Settles sent without waiting must reach the server before the socket closes.
        with contextlib.suppress(Exception):
            await self.client.flush(2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 5)


_links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[object, ...], Any]] = (
    weakref.WeakKeyDictionary()
)
"""Per loop, per connection key: a Link, or the future of one being made."""


async def acquire(target: Target) -> Link:
    """The current loop's link for ``target``'s servers, connecting if needed; counted."""
    loop = asyncio.get_running_loop()
    per_loop = _links.setdefault(loop, {})
    key = target.connection_key()
    while True:
        existing = per_loop.get(key)
        if isinstance(existing, Link):
            if existing.usable:
                existing.users += 1
                return existing
            del per_loop[key]
            continue
        if existing is not None:  # another task is connecting
            await asyncio.shield(existing)
            continue
        making: asyncio.Future[None] = loop.create_future()
        per_loop[key] = making
        try:
            link = await _connect(target, loop, key)
        except BaseException:
            per_loop.pop(key, None)
            raise
        finally:
            making.set_result(None)
        per_loop[key] = link
        link.users += 1
        return link


async def release(link: Link) -> None:
    """A queue stops using ``link``; the last one closes it."""
    link.users -= 1
    if link.users > 0:
        return
    per_loop = _links.get(link.loop)
    if per_loop is not None and per_loop.get(link.key) is link:
        del per_loop[link.key]
    await link.close()


def release_soon(link: Link) -> None:
    """``release`` from any thread, without waiting (a loop that ended drops its links)."""
    if link.loop.is_closed():
        link.users -= 1
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is link.loop:
        running.create_task(release(link))
        return
    with contextlib.suppress(RuntimeError):  # closed meanwhile
        link.loop.call_soon_threadsafe(lambda: link.loop.create_task(release(link)))


def _tls_context(target: Target) -> ssl.SSLContext | None:
    if not target.tls:
        return None
    context = ssl.create_default_context(cafile=target.tls_ca)
    if target.tls_cert is not None:
        context.load_cert_chain(target.tls_cert, target.tls_key)
    return context


async def _connect(
    target: Target, loop: asyncio.AbstractEventLoop, key: tuple[object, ...]
) -> Link:
    errors: list[BaseException] = []

    async def remember(error: BaseException) -> None:
        # nats-py reports every failed (re)connect here; without a callback it
        # prints a traceback each time.
        errors.append(error)
        del errors[:-3]

    options: dict[str, Any] = {
        "servers": list(target.servers),
        "name": "rocksq_aio",
        "connect_timeout": max(1, round(target.connect_timeout)),
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.05,
        "error_cb": remember,
        "pending_size": 64 * 1024 * 1024,
    }
    if target.token is not None:
        options["token"] = target.token
    if target.creds is not None:
        options["user_credentials"] = target.creds
    if target.nkey_seed is not None:
        options["nkeys_seed"] = target.nkey_seed
    tls = _tls_context(target)
    if tls is not None:
        options["tls"] = tls
    client: Client | None = None
    try:
        client = await asyncio.wait_for(nats.connect(**options), target.connect_timeout)
    except (asyncio.TimeoutError, nats.errors.Error, OSError) as error:
        raise _connect_error(target, error, errors) from None
    assert client is not None
    version = _version(client)
    if version < MIN_SERVER:
        await client.close()
        raise QueueError(
            f"{target.display}: nats-server {'.'.join(map(str, version))} is too old; "
            f"rocksq_aio needs {'.'.join(map(str, MIN_SERVER))} or later (atomic batches, "
            "consumer reset)"
        )
    link = Link(client, loop, key)
    await link.start()
    return link


def _version(client: Client) -> tuple[int, int]:
    text = str(client._server_info.get("version", "0.0.0"))
    parts = text.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def _connect_error(
    target: Target, error: BaseException, seen: list[BaseException]
) -> QueueUnavailableError:
    reasons = [*seen, error]
    text = " ".join(f"{type(reason).__name__}: {reason}" for reason in reasons).lower()
    if "authorization" in text or "authentication" in text or "credentials" in text:
        why = "the server refused the credentials (authorization violation)"
    elif isinstance(error, asyncio.TimeoutError) or not seen:
        why = f"no server answered within {target.connect_timeout:g} s"
    else:
        why = f"could not connect ({seen[-1]!r})"
    return QueueUnavailableError(f"{target.display}: {why}")
