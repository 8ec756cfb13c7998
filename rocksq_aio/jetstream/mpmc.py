"""The JetStream MPMC engine (placeholder until written)."""

from __future__ import annotations

from .._options import MpmcOptions
from .base import JetStreamQueue


class JetStreamMpmc(JetStreamQueue):
    kind = "mpmc"

    def __init__(self, path: str, options: MpmcOptions) -> None:
        raise NotImplementedError("MPMC on JetStream is not written yet")
