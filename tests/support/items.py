"""Numbered test items: a child process and its test agree on them byte for byte."""

from __future__ import annotations

ALL = 2**20
"""A ``max_elements`` that takes everything: more items than any test stores."""
FILLER_BASE = 251


def make_item(number: int, size: int = 100) -> bytes:
    """Item ``number``: 8 ASCII digits, then filler derived from the number."""
    head = b"%08d" % number
    return head + bytes([number % FILLER_BASE]) * max(0, size - len(head))


def item_number(item: bytes) -> int:
    return int(item[:8])
