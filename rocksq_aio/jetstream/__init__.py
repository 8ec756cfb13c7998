"""The NATS JetStream engine: the same queues on a replicated stream server (``nats://`` paths).

``url`` parses the paths; ``connection`` keeps one connection per event loop;
``protocol`` makes the raw requests (API calls, atomic batch publish,
no-wait and waiting pulls, settles); ``publisher`` group-commits concurrent
pushes into atomic batches; ``base`` is what both queue kinds share; ``fifo``
and ``mpmc`` are the two engines. Needs the ``jetstream`` extra (nats-py) and
nats-server 2.14 or later.
"""

from __future__ import annotations

from .base import CAPABILITIES
from .fifo import JetStreamFifo
from .mpmc import JetStreamMpmc
from .removal import remove

__all__ = ["CAPABILITIES", "JetStreamFifo", "JetStreamMpmc", "remove"]
