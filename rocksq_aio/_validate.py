"""Argument checks run before anything is written.

Each check raises ``TypeError`` or ``ValueError`` with a message that names the
argument, so a bad call never reaches RocksDB and never half-writes a batch.
"""

from __future__ import annotations

import enum
import math
import os
import sys
from typing import Any

from ._types import StartPosition

MAX_LABEL_BYTES = 4096
MAX_TTL_SECONDS = 2**53 // 1000  # keeps ttl in milliseconds exact
# Indices are u64 keys; a capacity beyond 2**63 could never be reached anyway
# and would let `head + capacity` overflow the key space.
MAX_CAPACITY = 2**63


def _type_name(value: object) -> str:
    return type(value).__name__


def item_list(items: object, argument: str = "items") -> list[bytes]:
    """Return the items as a list of ``bytes`` or raise ``TypeError``."""
    # bytes and str are sequences too: a bare b"abc" would otherwise be taken
    # for a list of three integers.
    if not isinstance(items, (list, tuple)):
        raise TypeError(
            f"{argument} must be a list of bytes-like objects (bytes, bytearray, "
            f"memoryview), got {_type_name(items)}"
        )
    converted: list[bytes] = []
    append = converted.append
    for position, item in enumerate(items):
        if type(item) is bytes:
            append(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            append(bytes(item))
        else:
            raise TypeError(
                f"{argument}[{position}] must be bytes-like (bytes, bytearray, memoryview), "
                f"got {_type_name(item)}; serialize it first"
            )
    return converted


def positive_int(value: object, argument: str, *, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int >= 1 (and <= maximum)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, got {_type_name(value)}")
    if value <= 0:
        raise ValueError(f"{argument} must be >= 1, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{argument} must be <= {maximum}, got {value}")
    return value


def non_negative_int(value: object, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, got {_type_name(value)}")
    if value < 0:
        raise ValueError(f"{argument} must be >= 0, got {value}")
    return value


def ttl_seconds(value: object) -> float:
    """Return the TTL in seconds; 0 means elements never expire."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"ttl must be a number of seconds (int or float), got {_type_name(value)}")
    if value < 0:
        raise ValueError(f"ttl must be >= 0 seconds (0 = never expire), got {value}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if math.isnan(seconds) or seconds > MAX_TTL_SECONDS:
        raise ValueError(
            f"ttl must be a finite number of seconds up to {MAX_TTL_SECONDS}, got {value}"
        )
    return seconds


def optional_seconds(value: object, argument: str) -> float | None:
    """None, or a positive finite number of seconds (as a float)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{argument} must be a number of seconds (int or float) or None, "
            f"got {_type_name(value)}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise ValueError(
            f"{argument} must be a positive, finite number of seconds up to "
            f"{MAX_TTL_SECONDS} (or None), got {value}"
        )
    return seconds


def label_name(label: object) -> str:
    """Return the label if it is a non-empty str of at most MAX_LABEL_BYTES in UTF-8."""
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {_type_name(label)}")
    if not label:
        raise ValueError("label must be a non-empty str")
    try:
        encoded = label.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"label must be encodable as UTF-8: {error}") from None
    if len(encoded) > MAX_LABEL_BYTES:
        raise ValueError(
            f"label must be at most {MAX_LABEL_BYTES} bytes in UTF-8, got {len(encoded)} bytes"
        )
    return label


def start_position(value: object) -> StartPosition:
    """Accept our StartPosition, or any enum member named Oldest/Newest (RocksQ's)."""
    if isinstance(value, StartPosition):
        return value
    # Programs migrating from RocksQ may still pass rocksq.StartPosition,
    # a PyO3 class rather than an enum.Enum.
    rocksq = sys.modules.get("rocksq")
    foreign = getattr(rocksq, "StartPosition", None)
    if foreign is not None and isinstance(value, foreign):
        return StartPosition.Oldest if value == foreign.Oldest else StartPosition.Newest
    if isinstance(value, enum.Enum) and value.name in ("Oldest", "Newest"):
        return StartPosition[value.name]
    raise TypeError(
        f"start_position must be StartPosition.Oldest or StartPosition.Newest, got {value!r}"
    )


def queue_path(path: object) -> str:
    """Return the path as an absolute str, checking its type only."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {_type_name(path)}")
    text: Any = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or os.PathLike of str, got {_type_name(text)}")
    if not text:
        raise ValueError("path must be a non-empty str")
    if "\x00" in text:
        raise ValueError(f"path must not contain NUL bytes, got {text!r}")
    return os.path.abspath(text)


def flag(value: object, argument: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{argument} must be a bool, got {_type_name(value)}")
    return value


def directory_mode(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"directory_mode must be an int such as 0o700, got {_type_name(value)}")
    if not 0 <= value <= 0o7777:
        raise ValueError(f"directory_mode must be between 0o0 and 0o7777, got {oct(value)}")
    return value
