from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict


@contextlib.contextmanager
def raw_database(path: Path) -> Iterator[dict[str, Any]]:
    """The queue's RocksDB opened by hand: raw bytes, every column family it has."""
    families = list(Rdict.list_cf(str(path), Options(raw_mode=True)))
    db = Rdict(
        str(path),
        Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in families},
    )
    handles = {name: db.get_column_family(name) for name in families}
    try:
        yield handles
    finally:
        handles.clear()
        db.close()
