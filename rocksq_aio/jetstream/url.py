"""``nats://`` and ``tls://`` queue paths: which servers, which queue, which options.

A path is ``nats://[user:password@]host[:port][,host[:port]...]/NAME[?option=value&...]``
(``tls://`` for TLS). ``NAME`` names the queue; it becomes the JetStream stream
name, encoded when it holds characters stream names forbid (see ``stream_name``).

Rules:

1. Everything is checked here, before any connection: a bad path or option is
   a ``ValueError``/``TypeError`` naming it, and nothing is created.
2. Credentials never appear in ``Target.display``, which error messages and
   ``queue.path`` use.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = ("nats://", "tls://")

DEFAULT_ACK_WAIT = 30.0
"""Seconds before the server hands an unsettled reservation of a dead client to another."""
DEFAULT_TIMEOUT = 20.0
"""Seconds an operation retries through a leader change or a lost server before it
raises QueueUnavailableError (a failover takes 5-8 s, admin operations up to ~10 s)."""
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_BATCH_LIMIT = 1000
"""Most messages one atomic batch may hold: the server's default
``jetstream.limits.batch.max_msgs``. Raise both together."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OPTIONS = {
    "replicas",
    "ack_wait",
    "timeout",
    "connect_timeout",
    "batch_limit",
    "storage",
    "token",
    "creds",
    "nkey_seed",
    "tls_ca",
    "tls_cert",
    "tls_key",
}


def encoded_name(text: str, prefix: str) -> str:
    """A name JetStream accepts for ``text``: itself when safe, else an encoding.

    Stream and consumer names forbid ``.``, ``*``, ``>``, whitespace and path
    separators. Unsafe or long names become ``prefix`` + base32 of the UTF-8
    text, or a hash of it when that would be long; the original is kept in
    the stream's or consumer's metadata.
    """
    if _SAFE_NAME.fullmatch(text) and not text.startswith(prefix):
        return text
    raw = text.encode("utf-8")
    encoded = base64.b32encode(raw).decode("ascii").rstrip("=")
    if len(encoded) <= 64:
        return prefix + encoded
    return prefix + "H" + hashlib.sha256(raw).hexdigest()[:40]


def stream_name(queue: str) -> str:
    return encoded_name(queue, "Q_")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed JetStream path."""

    servers: tuple[str, ...]
    """Server URLs with their scheme and credentials, for nats-py."""
    queue: str
    display: str
    """The path without credentials."""
    replicas: int = 1
    ack_wait: float = DEFAULT_ACK_WAIT
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    batch_limit: int = DEFAULT_BATCH_LIMIT
    storage: str = "file"
    token: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def stream(self) -> str:
        return stream_name(self.queue)

    @property
    def subject(self) -> str:
        return "rocksq_aio." + self.stream

    def connection_key(self) -> tuple[object, ...]:
        """Queues whose keys are equal share a connection (one per event loop)."""
        return (
            self.servers,
            self.token,
            self.creds,
            self.nkey_seed,
            self.tls,
            self.tls_ca,
            self.tls_cert,
            self.tls_key,
            self.connect_timeout,
        )


def is_jetstream_path(path: object) -> bool:
    return isinstance(path, str) and path.startswith(SCHEMES)


def _seconds(value: str, option: str, *, minimum: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"option {option} must be a number of seconds, got {value!r}") from None
    if not seconds >= minimum or seconds == float("inf"):
        raise ValueError(f"option {option} must be a finite number >= {minimum}, got {value!r}")
    return seconds


def _integer(value: str, option: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValueError(f"option {option} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def parse(path: str) -> Target:
    """Parse a ``nats://`` or ``tls://`` path (see the module's docstring)."""
    scheme = path.split("://", 1)[0]
    split = urlsplit(path)
    if split.fragment:
        raise ValueError(f"a {scheme}:// path takes no #fragment: {path!r}")
    userinfo, _, hostlist = split.netloc.rpartition("@")
    hosts = [host.strip() for host in hostlist.split(",")]
    if not hostlist or not all(hosts):
        raise ValueError(f"a {scheme}:// path needs servers, e.g. {scheme}://127.0.0.1:4222/jobs")
    for host in hosts:
        port = host.rpartition(":")[2] if ":" in host.strip("[]") else ""
        if port and not port.isdigit():
            raise ValueError(f"bad server {host!r} in {scheme}:// path: the port must be a number")
    queue = unquote(split.path[1:]) if split.path.startswith("/") else ""
    if not queue:
        raise ValueError(
            f"a {scheme}:// path needs a queue name after the servers: {scheme}://HOST/NAME"
        )
    if "\x00" in queue or len(queue.encode("utf-8")) > 1024:
        raise ValueError("the queue name must hold no NUL byte and at most 1024 bytes in UTF-8")
    credentials = ""
    if userinfo:
        user, colon, password = userinfo.partition(":")
        credentials = user + (colon + password if colon else "") + "@"
    servers = tuple(f"{scheme}://{credentials}{host}" for host in hosts)
    values: dict[str, object] = {}
    for name, value in parse_qsl(split.query, keep_blank_values=True, strict_parsing=False):
        if name not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise ValueError(f"unknown option {name!r} in {scheme}:// path (known: {known})")
        if name in values:
            raise ValueError(f"option {name} is given twice in {scheme}:// path")
        if name == "replicas":
            values[name] = _integer(value, name, 1, 5)
        elif name == "batch_limit":
            values[name] = _integer(value, name, 1, 1_000_000)
        elif name in ("ack_wait", "timeout", "connect_timeout"):
            values[name] = _seconds(value, name, minimum=0.001 if name != "ack_wait" else 1.0)
        elif name == "storage":
            if value not in ("file", "memory"):
                raise ValueError(f"option storage must be file or memory, got {value!r}")
            values[name] = value
        else:
            if not value:
                raise ValueError(f"option {name} needs a value")
            values[name] = value
    display_query = "&".join(
        f"{name}={'***' if name in ('token', 'nkey_seed') else value}"
        for name, value in sorted(values.items())
    )
    display = f"{scheme}://{','.join(hosts)}/{queue}"
    if display_query:
        display += "?" + display_query
    values.setdefault("ack_wait", DEFAULT_ACK_WAIT)
    return Target(
        servers=servers,
        queue=queue,
        display=display,
        tls=scheme == "tls",
        **values,  # type: ignore[arg-type]
    )
