from __future__ import annotations


def sibling_path(queue_path: str, suffix: str) -> str:
    """Another queue's path beside ``queue_path``, on the same engine.

    A test that needs several queues derives them from its one ``queue_path``:
    a directory gets a sibling directory, ``memory://NAME`` another name, and a
    URL keeps its query (``?replicas=3``) after the new name.
    """
    base, separator, query = queue_path.partition("?")
    return f"{base}-{suffix}{separator}{query}"
