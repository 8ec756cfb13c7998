"""Deleting a queue's stream: ``remove_queue``/``remove_mpmc_queue`` on a JetStream path."""

from __future__ import annotations

from .. import _bridge
from .._errors import QueueError
from . import connection, protocol, url
from .base import KIND_KEY


async def _remove(target: url.Target) -> None:
    link = await connection.acquire(target)
    try:
        try:
            info = await protocol.api(link, target, f"STREAM.INFO.{target.stream}")
        except protocol.ApiError as error:
            if error.err_code == protocol.NOT_FOUND_STREAM:
                return  # nothing to remove, as for a missing directory
            raise
        if KIND_KEY not in (info.get("config", {}).get("metadata") or {}):
            raise QueueError(
                f"{target.display}: stream {target.stream!r} is not a rocksq_aio queue; "
                "it was not removed"
            )
        try:
            await protocol.api(link, target, f"STREAM.DELETE.{target.stream}")
        except protocol.ApiError as error:
            if error.err_code != protocol.NOT_FOUND_STREAM:
                raise
    finally:
        await connection.release(link)


def remove(path: str) -> None:
    """Delete the queue's stream and everything in it (other clients' handles fail after)."""
    target = url.parse(path)
    _bridge.bridge().run(lambda: _remove(target))
