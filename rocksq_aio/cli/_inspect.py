"""What a directory holds, and the ways the tool opens it.

* ``detect``: which kind of rocksq_aio queue (FIFO or MPMC) is at a path, read
  from its ``meta`` column family without taking the lock or changing anything;
  ``rocksq_kind``: which RocksQ 0.3.0 queue a list of column families is.
* ``open_fifo`` and ``open_mpmc``: the RocksDB engines themselves (MPMC with
  ``ttl=0`` so that nothing expires), so the usual validation and open-time
  recovery apply.
* ``reading_fifo`` and ``reading_mpmc``: for the commands that only read
  (info, peek, export), the engine as above or, when another process holds
  the queue open, a snapshot of it (``rocksdb.view``), taken without
  disturbing it; ``snapshot_of`` says which, and as of when.
* ``open_raw``: the database's column families as plain rocksdict handles with
  explicit raw options (never ``Rdict(path)``, which would trust and unpickle
  the directory's rocksdict-config.json), for what the engines do not give:
  RocksDB's statistics and RocksQ's directories. rocksdict-config.json is left
  as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from rocksdict import Options, Rdict

from .._errors import QueueLockedError
from .._options import FifoOptions, MpmcOptions
from .._validate import MAX_CAPACITY
from ..rocksdb import directory
from ..rocksdb.directory import translate
from ..rocksdb.fifo import RocksDBFifo
from ..rocksdb.format import FIFO_FORMATS, META_CF, MPMC_FORMATS
from ..rocksdb.mpmc import RocksDBMpmc
from ..rocksdb.view import FifoView, MpmcView
from ._exit import EXIT_NOT_FOUND, CliError
from ._output import iso_ms

Kind = Literal["fifo", "mpmc"]
"""Which queue a directory holds, whatever its on-disk format (version)."""
KIND_NAMES: dict[str, str] = {"fifo": "FIFO", "mpmc": "MPMC"}

CHUNK_ITEMS = 1024
"""Items read at once by the tool."""

_ROCKSQ_FIFO_FAMILIES = ["default"]
_ROCKSQ_MPMC_FAMILIES = {"default", "system", "data", "reader"}

T = TypeVar("T")


@dataclass(frozen=True)
class Detected:
    """What is stored at a path: a rocksq_aio queue of a known kind."""

    path: str
    kind: Kind
    format: str
    """The on-disk format tag, such as ``rocksq_aio.fifo.v2``."""
    column_families: tuple[str, ...]


def check_directory(path: str) -> str:
    """The absolute path of a directory holding a RocksDB database; CliError (exit 3) if not."""
    absolute = os.path.abspath(path)
    if not os.path.lexists(absolute):
        raise CliError(f"{path}: no such file or directory", EXIT_NOT_FOUND)
    if not os.path.isdir(absolute):
        raise CliError(f"{path}: not a directory, so not a queue", EXIT_NOT_FOUND)
    if not os.path.exists(os.path.join(absolute, "CURRENT")):
        raise CliError(
            f"{path}: not a queue (the directory holds no RocksDB database)", EXIT_NOT_FOUND
        )
    return absolute


def list_families(path: str) -> list[str]:
    try:
        return list(Rdict.list_cf(path, Options(raw_mode=True)))
    except Exception as error:
        raise translate(error, path, "reading the column families") from error


def rocksq_kind(families: Sequence[str]) -> Kind | None:
    """The RocksQ 0.3.0 queue these column families make, if any."""
    if list(families) == _ROCKSQ_FIFO_FAMILIES:
        return "fifo"
    if set(families) == _ROCKSQ_MPMC_FAMILIES:
        return "mpmc"
    return None


def detect(path: str) -> Detected:
    """Say which kind of rocksq_aio queue is at ``path`` without changing it.

    Raises CliError (exit 3) when there is none.
    """
    absolute = check_directory(path)
    families = list_families(absolute)
    if META_CF not in families:
        hint = ""
        if rocksq_kind(families) is not None:
            hint = "; it looks like a RocksQ queue: convert it with migrate-rocksq"
        raise CliError(
            f"{path}: not a rocksq_aio queue (column families {sorted(families)}){hint}",
            EXIT_NOT_FOUND,
        )
    try:
        stored = directory.stored_format(absolute)
    except Exception as error:
        raise translate(error, absolute, "opening") from error
    if stored in FIFO_FORMATS:
        found: Kind = "fifo"
    elif stored in MPMC_FORMATS:
        found = "mpmc"
    elif stored is None:
        raise CliError(f"{path}: not a queue (no kind marker in its meta)", EXIT_NOT_FOUND)
    else:
        raise CliError(
            f"{path}: unknown queue kind {stored!r} (written by a newer rocksq_aio?)",
            EXIT_NOT_FOUND,
        )
    return Detected(absolute, found, stored.decode("ascii", "replace"), tuple(families))


# ---------------------------------------------------------------- the engines


def _fifo_engine(path: str, sync: bool = False) -> RocksDBFifo:
    return RocksDBFifo(path, FifoOptions(max_elements=MAX_CAPACITY, sync=sync))


def _mpmc_engine(
    path: str, sync: bool = False, clock: Callable[[], float] | None = None
) -> RocksDBMpmc:
    return RocksDBMpmc(path, MpmcOptions(ttl=0, sync=sync, clock=clock))


def open_fifo(path: str, *, sync: bool = False) -> contextlib.closing[RocksDBFifo]:
    """``with open_fifo(path) as fifo:`` the FIFO engine, with the largest capacity."""
    return contextlib.closing(_fifo_engine(path, sync))


def open_mpmc(
    path: str, *, sync: bool = False, clock: Callable[[], float] | None = None
) -> contextlib.closing[RocksDBMpmc]:
    """``with open_mpmc(path) as queue:`` the MPMC engine; ttl=0: nothing expires meanwhile."""
    return contextlib.closing(_mpmc_engine(path, sync, clock))


# ---------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    """What the tool says about reading a queue that is open elsewhere."""

    taken_at: float
    """When the snapshot was taken (seconds since the epoch)."""
    holder: str
    """Who holds the queue open: ``another process`` or ``this process``."""

    @property
    def text(self) -> str:
        return (
            f"snapshot of a queue open in {self.holder}, as of {iso_ms(int(self.taken_at * 1000))}"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "open_in": self.holder,
            "as_of": iso_ms(int(self.taken_at * 1000)),
            "as_of_ms": int(self.taken_at * 1000),
            "note": self.text,
        }


def _holder(path: str) -> str:
    return "this process" if directory.is_claimed(path) else "another process"


def snapshot_of(reader: object) -> Snapshot | None:
    """Whether ``reader`` is a snapshot of a queue open elsewhere, and of when."""
    if isinstance(reader, FifoView | MpmcView):
        return Snapshot(reader.taken_at, _holder(reader.path))
    return None


def reading_fifo(path: str) -> contextlib.closing[RocksDBFifo | FifoView]:
    """``with reading_fifo(path) as fifo:`` the engine, or a snapshot if the queue is
    open elsewhere (then nothing of it is opened for writing)."""
    if not directory.lock_is_held(path):
        try:
            engine: RocksDBFifo | FifoView = _fifo_engine(path)
            return contextlib.closing(engine)
        except QueueLockedError:
            pass  # opened elsewhere meanwhile
    return contextlib.closing(FifoView(path))


def reading_mpmc(path: str) -> contextlib.closing[RocksDBMpmc | MpmcView]:
    """``with reading_mpmc(path) as queue:`` as ``reading_fifo``, for MPMC (ttl=0)."""
    if not directory.lock_is_held(path):
        try:
            engine: RocksDBMpmc | MpmcView = _mpmc_engine(path)
            return contextlib.closing(engine)
        except QueueLockedError:
            pass
    return contextlib.closing(MpmcView(path))


def iter_stored(
    read: Callable[[int, int], list[T]], start: int, stop: int
) -> Iterator[tuple[int, T]]:
    """(index, what ``read(index, count)`` gives) for indices [start, stop), in chunks."""
    index = start
    while index < stop:
        count = min(CHUNK_ITEMS, stop - index)
        for offset, value in enumerate(read(index, count)):
            yield index + offset, value
        index += count


# ---------------------------------------------------------------- raw access


@contextlib.contextmanager
def open_raw_snapshot(
    path: str, families: Sequence[str]
) -> Iterator[tuple[dict[str, Rdict], Snapshot]]:
    """The column families of a database open elsewhere, as of one moment
    (``directory.open_secondary``); the same rules as ``open_raw``."""
    holder = _holder(path)
    with directory.open_secondary(path, families) as (database, taken_at):
        try:
            handles = {name: database.get_column_family(name) for name in families}
        except Exception as error:
            raise translate(error, path, "opening a snapshot") from error
        finally:
            del database
        try:
            yield handles, Snapshot(taken_at, holder)
        finally:
            handles.clear()


@contextlib.contextmanager
def open_raw(
    path: str, families: Sequence[str], *, read_only: bool = True
) -> Iterator[dict[str, Rdict]]:
    """The column families of the database at ``path`` by name, for reading.

    Read-only (the default) takes no lock and works while the queue is open
    elsewhere. Otherwise the database is opened with the library's own
    options, so that opening changes nothing, and the path is claimed in this
    process as an open queue's is. Callers must drop every handle they took
    before the block ends: the DB lock is released only once none is alive.
    """
    if not read_only:
        directory.claim(path)
    try:
        with directory.config_left_alone(path):
            try:
                if read_only:
                    database = directory.open_read_only(path, families)
                else:
                    options = {name: directory.open_options(create=False) for name in families}
                    database = directory.open_read_write(
                        path, directory.open_options(create=False), options
                    )
            except Exception as error:
                raise translate(error, path, "opening") from error
            handles = {name: database.get_column_family(name) for name in families}
            try:
                yield handles
            finally:
                handles.clear()
                try:
                    database.close()
                except Exception as error:
                    raise translate(error, path, "closing") from error
    finally:
        if not read_only:
            directory.release(path)


@contextlib.contextmanager
def reading(path: str, action: str) -> Iterator[None]:
    """Raise what rocksdict raises inside the block as the matching QueueError."""
    try:
        yield
    except Exception as error:
        translated = translate(error, path, action)
        if translated is error:
            raise
        raise translated from error


def scan(family: Rdict, path: str, action: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a raw column family, in key order."""
    with reading(path, action):
        iterator = family.iter()
        try:
            iterator.seek_to_first()
            while iterator.valid():
                yield iterator.key(), iterator.value()
                iterator.next()
            # Iterators stop quietly on corruption; status() says why.
            iterator.status()
        finally:
            del iterator
