"""Directories that are not queues of ours (other RocksDB databases, rocksdict
pickle mode, RocksQ's own queues) are refused and left untouched, and a
rocksdict-config.json in a queue directory is never trusted (no pickle runs).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from rocksq_aio import QueueError, QueueLockedError
from rocksq_aio.blocking import PersistentQueueWithCapacity

from support.faults import contents, index_key, open_in_child, open_queue, read_in_child, snapshot

# ---------------------------------------- directories that are not queues of ours


def _plain_rocksdb(path: Path) -> None:
    options = Options(raw_mode=True)
    options.create_missing_column_families(True)
    db = Rdict(str(path), options, column_families={"users": options, "orders": options})
    users = db.get_column_family("users")
    users[b"alice"] = b"admin"
    del users
    db[b"key"] = b"value"
    db.close()


def _default_family_only(path: Path) -> None:
    db = Rdict(str(path), Options(raw_mode=True))
    for number in range(10):
        db[index_key(number)] = b"not a queue element"
    db.close()


def _rocksdict_default_mode(path: Path) -> None:
    db = Rdict(str(path))
    db["config"] = {"a": 1}
    db.close()


def _rocksq(kind: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        rocksq = pytest.importorskip("rocksq", reason="the real rocksq is not installed")
        blocking = pytest.importorskip("rocksq.blocking")
        if kind == "fifo":
            queue = blocking.PersistentQueueWithCapacity(str(path))
            queue.push([b"rocksq item"])
        else:
            queue = blocking.MpmcQueue(str(path), 60)
            queue.add([b"rocksq item"])
            queue.next("label", rocksq.StartPosition.Oldest, 1)
        del queue

    return make


FOREIGN: list[Any] = [
    pytest.param(_plain_rocksdb, id="rocksdb-other-families"),
    pytest.param(_default_family_only, id="rocksdb-default-family"),
    pytest.param(_rocksdict_default_mode, id="rocksdict-pickle-mode"),
    pytest.param(_rocksq("fifo"), id="rocksq-fifo"),
    pytest.param(_rocksq("mpmc"), id="rocksq-mpmc"),
]


@pytest.mark.parametrize("make", FOREIGN)
@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_foreign_database_is_refused_and_left_alone(
    tmp_path: Path, make: Callable[[Path], None], kind: str
) -> None:
    path = tmp_path / "foreign"
    make(path)
    before = snapshot(path)
    with pytest.raises(QueueError) as raised:
        open_queue(kind, path)
    assert str(path) in str(raised.value)
    assert not isinstance(raised.value, QueueLockedError)
    assert snapshot(path) == before
    # The refused open left nothing locked behind: a second attempt is refused the same way.
    with pytest.raises(type(raised.value)):
        open_queue(kind, path)
    assert snapshot(path) == before


# ---------------------------------------- rocksdict-config.json


class _Marker:
    """Unpickling this creates ``path``: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_crafted_rocksdict_config_is_not_trusted(tmp_path: Path) -> None:
    """A config that switches rocksdict to pickle mode, and a pickled element waiting."""
    path = tmp_path / "queue"
    marker = tmp_path / "EXECUTED"
    # rocksdict's pickle-mode encoding of a value: type byte 6, then the pickle.
    payload = b"\x06" + pickle.dumps(_Marker(marker))
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push([payload, b"plain"])
    (path / "rocksdict-config.json").write_text(
        json.dumps(
            {
                "raw_mode": False,
                "prefix_extractors": {},
                "pickle": pickle.dumps(_Marker(marker)).hex(),
            }
        )
    )
    found = read_in_child("fifo", path)
    assert found["stage"] == "done", found
    assert found["items"] == [payload, b"plain"]
    assert not marker.exists(), "a pickle from the queue directory was executed"


def test_rocksdict_pickle_database_with_our_families_is_refused_unexecuted(
    tmp_path: Path,
) -> None:
    """A database of a rocksdict program (pickle mode) that happens to use our family names.

    Opening it as a queue must fail with a QueueError, execute none of its
    pickles, and leave it usable by its owner: rocksdict rewrites
    rocksdict-config.json (to raw_mode=true) whenever it is handed explicit
    options, even if the open then fails, after which the owner's
    ``Rdict(path)`` no longer opens its own database.
    """
    path = tmp_path / "queue"
    marker = tmp_path / "EXECUTED"
    options = Options()
    options.create_missing_column_families(True)
    families = {name: Options() for name in ("data", "meta", "leased")}
    db = Rdict(str(path), options, column_families=families)
    for name in families:
        family = db.get_column_family(name)
        family[index_key(0)] = _Marker(marker)
        family[b"kind"] = _Marker(marker)
        family[b"state"] = _Marker(marker)
        del family
    db.close()
    assert not marker.exists()
    before = snapshot(path, info_logs=False)
    result = open_in_child("fifo", path)
    assert result.get("error", "").startswith("Queue"), result
    assert not marker.exists(), "a pickle from the queue directory was executed"
    changed = {
        name
        for name in set(before) | set(snapshot(path, info_logs=False))
        if before.get(name) != snapshot(path, info_logs=False).get(name)
    }
    assert not changed, f"the refused open changed {sorted(changed)} of someone else's database"
    owner = Rdict(str(path))  # how its owner opens it: options from its rocksdict-config.json
    owner.close()


@pytest.mark.parametrize("text", ["{not json", "", '{"raw_mode": "yes"}'])
def test_garbage_rocksdict_config_does_not_matter(tmp_path: Path, text: str) -> None:
    path = tmp_path / "queue"
    with PersistentQueueWithCapacity(str(path)) as queue:
        queue.push([b"a"])
    (path / "rocksdict-config.json").write_text(text)
    assert contents("fifo", path) == [b"a"]
