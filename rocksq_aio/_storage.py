"""The only module that touches rocksdict.

It opens a queue directory safely, reads ranges of elements, and applies a
:class:`~rocksq_aio._plan.WritePlan` as one atomic WriteBatch. Every rocksdict
exception is translated into our error hierarchy here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from rocksdict import (
    AccessType,
    ColumnFamily,
    DbClosedError,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from ._errors import (
    QueueClosedError,
    QueueCorruptedError,
    QueueError,
    QueueIOError,
    QueueLockedError,
)
from ._plan import (
    DATA_CF,
    FIFO_KINDS,
    KIND_KEY,
    META_CF,
    MPMC_KINDS,
    POSITIONS_CF,
    STAGING_KEY,
    STATE_KEY,
    WritePlan,
    decode_index,
    decode_staged_range,
    encode_index,
    encode_staged_range,
)

DEFAULT_BATCH_BYTES = 1024 * 1024
"""Largest WriteBatch we hand to RocksDB at once.

rocksdict holds the GIL for the whole write (fsync included), so a bigger
batch would freeze every other Python thread, an event loop among them."""

_END_OF_INDICES = b"\xff" * 9  # sorts after every 8-byte index key

_open_paths: set[str] = set()
_open_paths_lock = threading.Lock()


def translate(error: BaseException, path: str, action: str) -> QueueError:
    """Turn a rocksdict exception into the matching QueueError."""
    if isinstance(error, QueueError):
        return error
    if isinstance(error, DbClosedError):
        return QueueClosedError(f"queue at {path!r} is closed")
    message = str(error)
    if "lock" in message.lower() and "LOCK" in message:
        return QueueLockedError(
            f"queue at {path!r} is already open (in this or another process): {message}"
        )
    if message.startswith("Invalid argument"):
        return QueueError(
            f"{action} failed: {path!r} does not hold a rocksq_aio queue RocksDB can open "
            f"with our options: {message}"
        )
    if "Corruption" in message or "Checksum" in message or "checksum" in message:
        return QueueCorruptedError(f"{action} failed, queue at {path!r} is corrupted: {message}")
    return QueueIOError(f"{action} failed for queue at {path!r}: {message}")


def _options(*, create: bool) -> Options:
    # raw_mode: bytes in, bytes out, no pickle; passing options explicitly also
    # keeps rocksdict from trusting the directory's rocksdict-config.json.
    options = Options(raw_mode=True)
    options.create_if_missing(create)
    options.create_missing_column_families(create)
    options.set_keep_log_file_num(2)
    options.set_max_total_wal_size(64 * 1024 * 1024)
    # A torn last record is what a crash leaves and is dropped; corruption
    # anywhere before it fails the open (QueueCorruptedError) instead of
    # silently dropping every write after it, as point-in-time recovery does.
    options.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
    options.set_paranoid_checks(True)
    return options


_CREATION_FILES = frozenset({"LOCK", "LOG", "IDENTITY", "rocksdict-config.json"})
_CREATION_PREFIXES = ("LOG.old.", "MANIFEST-", "OPTIONS-")
_CREATION_SUFFIXES = (".dbtmp", ".log")


def _is_creation_leftover(name: str) -> bool:
    return (
        name in _CREATION_FILES
        or name.startswith(_CREATION_PREFIXES)
        or name.endswith(_CREATION_SUFFIXES)
    )


def _fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_directories(path: str, mode: int) -> None:
    """Create ``path`` and its missing parents with ``mode`` (not filtered by the umask).

    os.makedirs gives intermediate directories the umask's default mode; and
    each new entry is fsynced into its parent so that power loss cannot
    remove the directory of a queue that already reported durable writes.
    """
    missing: list[str] = []
    current = path
    while current and not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        os.chmod(directory, mode)
        _fsync_directory(os.path.dirname(directory) or ".")


@contextlib.contextmanager
def _config_left_alone(path: str) -> Iterator[None]:
    """rocksdict rewrites rocksdict-config.json at every open: put it back as it was."""
    config = os.path.join(path, "rocksdict-config.json")
    try:
        with open(config, "rb") as source:
            before: bytes | None = source.read()
    except FileNotFoundError:
        before = None
    try:
        yield
    finally:
        if before is None:
            with contextlib.suppress(OSError):
                os.remove(config)
        else:
            with open(config, "wb") as target:
                target.write(before)


def _open_restoring_config_on_failure(
    path: str, options: Options, families: dict[str, Options]
) -> Rdict:
    """Open read-write; a refused open leaves someone else's directory as it was."""
    config = os.path.join(path, "rocksdict-config.json")
    existed = os.path.exists(config)
    try:
        with open(config, "rb") if existed else contextlib.nullcontext() as source:
            before = source.read() if source is not None else None
    except OSError:
        before = None
    try:
        return Rdict(path, options, column_families=families)
    except BaseException:
        if before is not None:
            with contextlib.suppress(OSError), open(config, "wb") as target:
                target.write(before)
        elif not existed:
            with contextlib.suppress(OSError):
                os.remove(config)
        raise


def _read_only(path: str, families: Iterable[str]) -> Rdict:
    return Rdict(
        path,
        Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in families},
        access_type=AccessType.read_only(False),
    )


def _holds_no_queue_data(path: str, present: set[str]) -> bool:
    """True when every family is empty: a creation that did not finish."""
    families = sorted(present - {"default"})
    try:
        with _config_left_alone(path):
            database = _read_only(path, families)
            try:
                for name in ["default", *families]:
                    family = database if name == "default" else database.get_column_family(name)
                    iterator = family.iter()
                    iterator.seek_to_first()
                    empty = not iterator.valid()
                    del iterator, family
                    if not empty:
                        return False
            finally:
                database.close()
    except Exception as error:
        raise translate(error, path, "inspecting the database") from error
    return True


def directory_size(path: str) -> int:
    total = 0
    for root, _directories, files in os.walk(path):
        for name in files:
            # RocksDB may remove a file while we walk.
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class Store:
    """An open RocksDB directory with fixed column families."""

    def __init__(
        self,
        path: str,
        column_families: tuple[str, ...],
        *,
        sync: bool,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        directory_mode: int = 0o700,
    ) -> None:
        self.path = path
        self.batch_bytes = batch_bytes
        self.failure: QueueError | None = None
        """Set once a write failed: the handle refuses everything until reopened."""
        self.closed = False
        with _open_paths_lock:
            if path in _open_paths:
                raise QueueLockedError(f"queue at {path!r} is already open in this process")
            _open_paths.add(path)
        try:
            self._prepare_directory(path, column_families, directory_mode)
            options = _options(create=True)
            families = {name: _options(create=True) for name in column_families}
            try:
                self._db = _open_restoring_config_on_failure(path, options, families)
            except Exception as error:
                raise translate(error, path, "opening") from error
            # Held for the queue's lifetime: dropping a column-family handle
            # flushes the memtable, and a live one keeps the DB lock.
            self._handles: dict[str, ColumnFamily] = {
                name: self._db.get_column_family_handle(name) for name in column_families
            }
            self._data_handle = self._handles[DATA_CF]
            self._meta_handle = self._handles[META_CF]
            self._families: dict[str, Rdict] = {
                name: self._db.get_column_family(name) for name in column_families
            }
            self._data = self._families[DATA_CF]
            # None for a FIFO queue, which has no positions.
            self._positions: Rdict | None = self._families.get(POSITIONS_CF)
        except BaseException:
            with _open_paths_lock:
                _open_paths.discard(path)
            raise
        self._write_options = WriteOptions()
        self._write_options.sync = False
        self._read_options = ReadOptions()
        self.sync = sync

    @staticmethod
    def _prepare_directory(path: str, column_families: tuple[str, ...], mode: int) -> None:
        """Create the directory if needed; refuse one that holds something else."""
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"path {path!r} exists and is not a directory")
        if not os.path.exists(path):
            try:
                _make_directories(path, mode)
            except OSError as error:
                raise QueueIOError(f"cannot create the queue directory {path!r}: {error}") from None
            return
        if not os.path.exists(os.path.join(path, "CURRENT")):
            # Files RocksDB makes before CURRENT are what a creation killed
            # early leaves: the creation starts again. Anything else is not ours.
            if not all(_is_creation_leftover(name) for name in os.listdir(path)):
                raise QueueError(
                    f"path {path!r} is a non-empty directory that holds no RocksDB database; "
                    "refusing to write into it"
                )
            return
        try:
            present = set(Rdict.list_cf(path, Options(raw_mode=True)))
        except Exception as error:
            raise translate(error, path, "reading the column families") from error
        expected = {"default", *column_families}
        if present == expected:
            # Table files but no kind: RocksDB dropped MANIFEST records it
            # took for a torn tail, and the read-write open would delete the
            # tables they listed, leaving what looks like a new, empty queue.
            if any(name.endswith(".sst") for name in os.listdir(path)):
                try:
                    kind = _stored_kind(path)
                except Exception as error:
                    raise translate(error, path, "reading the queue kind") from error
                if kind is None:
                    raise QueueCorruptedError(
                        f"queue at {path!r} has table files but its metadata is gone "
                        "(damaged MANIFEST?); refusing to open it as an empty queue"
                    )
            return  # the core checks the kind and the counters
        # A queue killed while being created has only some of our families
        # and nothing else: finish creating it. Anything else is not ours,
        # and is left exactly as it was.
        # An interrupted creation never flushed: table files mean lost data.
        has_tables = any(name.endswith(".sst") for name in os.listdir(path))
        if not present <= expected or has_tables or not _holds_no_queue_data(path, present):
            raise QueueError(
                f"path {path!r} holds a RocksDB database with column families "
                f"{sorted(present)} that is not a rocksq_aio queue of this kind "
                f"(expected {sorted(expected)}); refusing to open it"
            )

    # ------------------------------------------------------------ lifecycle

    def check_usable(self) -> None:
        if self.closed:
            raise QueueClosedError(f"queue at {self.path!r} is closed")
        if self.failure is not None:
            raise QueueIOError(
                f"queue at {self.path!r} refused the operation: an earlier write failed "
                f"({self.failure}); close and reopen the queue"
            )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.failure is not None:
            # Frames kept by the failure's traceback may hold column-family
            # handles, and a live handle keeps the DB lock.
            for error in (self.failure, self.failure.__cause__):
                if error is not None and error.__traceback__ is not None:
                    traceback.clear_frames(error.__traceback__)
        try:
            # The DB lock is released only once no column-family handle is alive.
            self._families.clear()
            self._handles.clear()
            del self._data_handle, self._meta_handle, self._positions, self._data
            self._db.close()
        except Exception as error:
            # The failure was reported when it happened; closing is how the
            # caller recovers, and must not raise it again.
            if self.failure is None:
                raise translate(error, self.path, "closing") from error
        finally:
            with _open_paths_lock:
                _open_paths.discard(self.path)

    @contextmanager
    def _reading(self, action: str) -> Iterator[None]:
        try:
            yield
        except QueueError:
            raise
        except Exception as error:
            raise translate(error, self.path, action) from error

    # ------------------------------------------------------------ reads

    def get(self, family: str, key: bytes) -> bytes | None:
        try:
            value: Any = self._families[family].get(key)
        except Exception as error:
            raise translate(error, self.path, "reading") from error
        if value is not None and not isinstance(value, bytes):
            raise QueueCorruptedError(f"unexpected value type {type(value).__name__}")
        return value

    def read_elements(self, start: int, count: int) -> list[bytes]:
        """Return the values of data indices [start, start + count); all must exist."""
        if count <= 0:
            return []
        if count == 1:
            value = self.get(DATA_CF, encode_index(start))
            if value is None:
                raise QueueCorruptedError(
                    f"element {start} is missing from the queue at {self.path!r}"
                )
            return [value]
        values: list[bytes] = []
        with self._reading("reading elements"):
            iterator = self._families[DATA_CF].iter(self._read_options)
            try:
                iterator.seek(encode_index(start))
                expected = start
                stop = start + count
                while expected < stop and iterator.valid():
                    key = iterator.key()
                    if key != encode_index(expected):
                        break
                    values.append(iterator.value())
                    expected += 1
                    iterator.next()
                # Iterators stop quietly on corruption; status() says why.
                iterator.status()
            finally:
                del iterator
        if len(values) != count:
            raise QueueCorruptedError(
                f"element {start + len(values)} is missing from the queue at {self.path!r}"
            )
        return values

    def data_key_bounds(self) -> tuple[int, int] | None:
        """First and last data index stored, or None when the data family is empty."""
        with self._reading("scanning the data"):
            iterator = self._families[DATA_CF].iter(self._read_options)
            try:
                iterator.seek_to_first()
                if not iterator.valid():
                    iterator.status()
                    return None
                first = decode_index(iterator.key())
                iterator.seek_to_last()
                last = decode_index(iterator.key()) if iterator.valid() else first
                iterator.status()
            finally:
                del iterator
        return first, last

    def first_data_index_from(self, start: int) -> int | None:
        """The lowest data index at or past ``start``, or None."""
        with self._reading("scanning the data"):
            iterator = self._families[DATA_CF].iter(self._read_options)
            try:
                iterator.seek(encode_index(start))
                first = decode_index(iterator.key()) if iterator.valid() else None
                iterator.status()
            finally:
                del iterator
        return first

    def payload_of(self, start: int, stop: int) -> int:
        """Total size of the values at indices [start, stop); all must exist."""
        size = 0
        expected = start
        with self._reading("counting the payload"):
            iterator = self._families[DATA_CF].iter(self._read_options)
            try:
                iterator.seek(encode_index(start))
                while expected < stop and iterator.valid():
                    if iterator.key() != encode_index(expected):
                        break
                    size += len(iterator.value())
                    expected += 1
                    iterator.next()
                iterator.status()
            finally:
                del iterator
        if expected != stop:
            raise QueueCorruptedError(
                f"element {expected} is missing from the queue at {self.path!r}"
            )
        return size

    def family_items(self, family: str) -> list[tuple[bytes, bytes]]:
        items: list[tuple[bytes, bytes]] = []
        with self._reading("scanning " + family):
            iterator = self._families[family].iter(self._read_options)
            try:
                iterator.seek_to_first()
                while iterator.valid():
                    items.append((iterator.key(), iterator.value()))
                    iterator.next()
                iterator.status()
            finally:
                del iterator
        return items

    # ------------------------------------------------------------ writes

    def apply(self, plan: WritePlan, *, sync: bool | None = None) -> None:
        """Write ``plan`` atomically.

        Element puts beyond ``batch_bytes`` are first staged in smaller
        batches: they sit outside the committed [head, tail) range, invisible
        to readers, until the final batch moves the counters. A crash in
        between leaves only orphans, which ``discard_outside`` removes at the
        next open.
        """
        if self.failure is not None or self.closed:
            self.check_usable()
        handles = self._handles
        data = self._data_handle
        batch = WriteBatch(raw_mode=True)
        try:
            if plan.data_bytes <= self.batch_bytes:
                for index, value in plan.data_puts:
                    batch.put(encode_index(index), value, data)
            else:
                # The marker, written with the first staged batch and deleted
                # by the last, names the keys to drop if the last never lands:
                # a FIFO queue's tail is found from its keys at open.
                indices = [index for index, _value in plan.data_puts]
                marker = encode_staged_range(min(indices), max(indices) + 1)
                batch.put(STAGING_KEY, marker, self._meta_handle)
                staged_bytes = 0
                for index, value in plan.data_puts:
                    if staged_bytes + len(value) > self.batch_bytes and staged_bytes:
                        self._db.write(batch, self._write_options)
                        batch = WriteBatch(raw_mode=True)
                        staged_bytes = 0
                    batch.put(encode_index(index), value, data)
                    staged_bytes += len(value)
                batch.delete(STAGING_KEY, self._meta_handle)
            for index in range(plan.data_delete_start, plan.data_delete_stop):
                batch.delete(encode_index(index), data)
            if plan.meta_puts:
                meta = handles[META_CF]
                for key, value in plan.meta_puts:
                    batch.put(key, value, meta)
            for family, writes in (
                ("positions", plan.position_writes),
                ("returned", plan.returned_writes),
                ("leased", plan.leased_writes),
            ):
                if writes:
                    handle = handles[family]
                    for key, record in writes:
                        if record is None:
                            batch.delete(key, handle)
                        else:
                            batch.put(key, record, handle)
            self._db.write(batch, self._write_options)
            # One fsync through flush_wal, which releases the GIL (a synced
            # write() holds it), and which serves every caller of a group.
            if self.sync if sync is None else sync:
                self._db.flush_wal(True)
        except Exception as error:
            # The traceback keeps this frame alive; a column-family handle
            # left in it would keep the DB lock after close().
            handles = data = batch = meta = handle = None  # type: ignore[assignment]
            self._fail(error)

    # The two one-batch FIFO writes, for the blocking face's hot path: the same
    # batch as apply() with a plan, without building the plan.
    def write_elements(self, first_index: int, values: list[bytes], counters: bytes) -> None:
        """Put ``values`` at ``first_index`` on, with the new counters, in one batch."""
        if self.failure is not None or self.closed:
            self.check_usable()
        data = self._data_handle
        batch = WriteBatch(raw_mode=True)
        try:
            for index, value in enumerate(values, first_index):
                batch.put(encode_index(index), value, data)
            batch.put(STATE_KEY, counters, self._meta_handle)
            self._db.write(batch, self._write_options)
            if self.sync:
                self._db.flush_wal(True)
        except Exception as error:
            del data, batch
            self._fail(error)

    def write_element(self, index: int, value: bytes | None, counters: bytes) -> None:
        """Put ``value`` at ``index`` (delete it when None), with the new counters, in one batch.

        The one-item push and pop of the blocking face's hot path; the caller
        has checked that the store is usable (``check_usable``).
        """
        batch = WriteBatch(True)  # raw_mode, passed by position: measurably cheaper
        try:
            if value is None:
                batch.delete(encode_index(index), self._data_handle)
            else:
                batch.put(encode_index(index), value, self._data_handle)
            batch.put(STATE_KEY, counters, self._meta_handle)
            self._db.write(batch, self._write_options)
            if self.sync:
                self._db.flush_wal(True)
        except Exception as error:
            del batch
            self._fail(error)

    def put_element(self, index: int, value: bytes) -> None:
        """Put ``value`` at ``index`` alone: a one-item push or add (format v2).

        The caller has checked that the store is usable (``check_usable``).
        """
        try:
            self._data.put(encode_index(index), value, self._write_options)
            if self.sync:
                self._db.flush_wal(True)
        except Exception as error:
            self._fail(error)

    def delete_element(self, index: int) -> None:
        """Delete the element at ``index`` alone: the FIFO one-item pop (format v2).

        The caller has checked that the store is usable (``check_usable``).
        """
        try:
            self._data.delete(encode_index(index), self._write_options)
            if self.sync:
                self._db.flush_wal(True)
        except Exception as error:
            self._fail(error)

    def put_position(self, label_key: bytes, position: bytes) -> None:
        """Save one label's position: the blocking one-item next.

        The caller has checked that the store is usable (``check_usable``).
        """
        positions = self._positions
        if positions is None:
            raise AssertionError("this queue has no positions")
        try:
            positions.put(label_key, position, self._write_options)
            if self.sync:
                self._db.flush_wal(True)
        except Exception as error:
            self._fail(error)

    def delete_elements(self, start: int, stop: int, counters: bytes) -> None:
        """Delete indices [start, stop), with the new counters, in one batch."""
        if self.failure is not None or self.closed:
            self.check_usable()
        data = self._data_handle
        batch = WriteBatch(raw_mode=True)
        try:
            for index in range(start, stop):
                batch.delete(encode_index(index), data)
            batch.put(STATE_KEY, counters, self._meta_handle)
            self._db.write(batch, self._write_options)
            if self.sync:
                self._db.flush_wal(True)
        except Exception as error:
            del data, batch
            self._fail(error)

    def _fail(self, error: Exception) -> NoReturn:
        failure = translate(error, self.path, "writing")
        # The write may or may not be on disk: only a reopen tells.
        self.failure = failure
        raise failure from error

    def discard_staged(self) -> bool:
        """Drop the keys of a staged write whose last batch never landed; True if any."""
        raw = self.get(META_CF, STAGING_KEY)
        if raw is None:
            return False
        start, stop = decode_staged_range(raw)
        self.check_usable()
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(encode_index(start), encode_index(stop), self._data_handle)
        batch.delete(STAGING_KEY, self._meta_handle)
        self._clean_up(batch)
        return True

    def discard_outside(self, head: int, tail: int) -> None:
        """Delete orphans staged outside [head, tail) by a write that never committed."""
        self.check_usable()
        batch = WriteBatch(raw_mode=True)
        data = self._handles[DATA_CF]
        batch.delete_range(encode_index(0), encode_index(head), data)
        batch.delete_range(encode_index(tail), _END_OF_INDICES, data)
        self._clean_up(batch)

    def _clean_up(self, batch: WriteBatch) -> None:
        """Write an at-open repair durably, before anything relies on it."""
        try:
            self._db.write(batch, self._write_options)
            self._db.flush_wal(True)
        except Exception as error:
            self.failure = translate(error, self.path, "cleaning up")
            raise self.failure from error


def _held_by_another_process(lock_file: str) -> bool:
    """True when another process holds RocksDB's lock on ``lock_file``."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def lock_is_held(directory: str) -> bool:
    """True when some process (this one included) holds RocksDB's lock on ``directory``.

    RocksQ carries its own RocksDB, whose lock neither rocksdict nor a probe
    from this process can see, so /proc/locks is read where it exists.
    """
    lock = os.path.join(directory, "LOCK")
    try:
        status = os.stat(lock)
    except FileNotFoundError:
        return False
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            table = locks.read()
    except OSError:
        return _held_by_another_process(lock)
    target = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    return any(target in line.split() for line in table.splitlines())


def _stored_kind(path: str) -> bytes | None:
    """The ``kind`` a queue directory records, read without taking its lock."""
    families = [name for name in Rdict.list_cf(path, Options(raw_mode=True)) if name != "default"]
    if META_CF not in families:
        return None
    with _config_left_alone(path):
        database = _read_only(path, families)
        try:
            meta = database.get_column_family(META_CF)
            kind: Any = meta.get(KIND_KEY)
            del meta
        finally:
            database.close()
    return kind if isinstance(kind, bytes) else None


def destroy(path: str) -> None:
    """Remove a queue directory entirely; it must not be open anywhere."""
    absolute = os.path.abspath(os.fspath(path))
    with _open_paths_lock:
        if absolute in _open_paths:
            raise QueueLockedError(f"queue at {absolute!r} is open; close it before removing it")
    if not os.path.exists(absolute):
        return
    if not os.path.isdir(absolute):
        raise ValueError(f"path {absolute!r} is not a directory")
    if not os.path.exists(os.path.join(absolute, "CURRENT")):
        # Never rmtree a directory that is not ours.
        if os.listdir(absolute):
            raise QueueError(f"path {absolute!r} is not a queue directory; refusing to remove it")
        os.rmdir(absolute)
        return
    if lock_is_held(absolute):
        raise QueueLockedError(f"queue at {absolute!r} is open; close it before removing it")
    try:
        kind = _stored_kind(absolute)
    except Exception as error:
        raise translate(error, absolute, "reading the queue kind") from error
    if kind not in (*FIFO_KINDS, *MPMC_KINDS):
        raise QueueError(
            f"path {absolute!r} holds a RocksDB database that is not a rocksq_aio queue; "
            "refusing to remove it"
        )
    shutil.rmtree(absolute)
