"""Queue paths for tests: one engine's new queue (and its clean-up), and paths beside one."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import rocksq_aio

ENGINES = ("rocksdb", "memory")
"""The engines contract tests run on (the ``queue_path`` fixture)."""


@contextlib.contextmanager
def new_queue_path(engine: str, directory: str) -> Iterator[str]:
    """The path of a new queue on ``engine``: a directory under ``directory``
    (not created yet) or ``memory://``, whose data is dropped afterwards."""
    if engine == "memory":
        name = f"memory://{uuid.uuid4().hex}"
        yield name
        with contextlib.suppress(Exception):
            rocksq_aio.remove_queue(name)  # frees the memory a test left behind
        return
    yield os.path.join(directory, "queue")


def sibling_path(queue_path: str, suffix: str) -> str:
    """Another queue's path beside ``queue_path``, on the same engine.

    A test that needs several queues derives them from its one ``queue_path``:
    a directory gets a sibling directory, ``memory://NAME`` another name, and a
    URL keeps its query (``?replicas=3``) after the new name.
    """
    base, separator, query = queue_path.partition("?")
    return f"{base}-{suffix}{separator}{query}"
