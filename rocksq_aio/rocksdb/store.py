"""The store: the one object that reads and writes an open queue's RocksDB.

It reads ranges of elements and applies a :class:`~rocksq_aio.rocksdb.plan.WritePlan`
as one atomic WriteBatch; every rocksdict exception is translated into our
error hierarchy here. ``SnapshotStore`` reads a directory that another process
holds open, as of one moment. Opening, locking and removing directories is
``directory.py``'s job; nothing but these two modules and the command line's
inspection uses rocksdict.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, NoReturn

from rocksdict import ColumnFamily, Rdict, ReadOptions, WriteBatch, WriteOptions

from .._errors import QueueClosedError, QueueCorruptedError, QueueError, QueueIOError
from . import directory
from .format import (
    DATA_CF,
    GIVEN_BACK_CF,
    META_CF,
    POSITIONS_CF,
    RESERVED_CF,
    STAGING_KEY,
    STATE_KEY,
    decode_index,
    decode_staged_range,
    encode_index,
    encode_staged_range,
)
from .plan import WritePlan

DEFAULT_BATCH_BYTES = 1024 * 1024
"""Largest WriteBatch we hand to RocksDB at once.

rocksdict holds the GIL for the whole write (fsync included), so a bigger
batch would freeze every other Python thread, an event loop among them."""

_END_OF_INDICES = b"\xff" * 9  # sorts after every 8-byte index key


class StoredReads:
    """The reads of a queue's column families: what the store and a snapshot share."""

    path: str
    _families: dict[str, Rdict]
    _read_options: ReadOptions

    @contextmanager
    def _reading(self, action: str) -> Iterator[None]:
        try:
            yield
        except QueueError:
            raise
        except Exception as error:
            raise directory.translate(error, self.path, action) from error

    def get(self, family: str, key: bytes) -> bytes | None:
        try:
            value: Any = self._families[family].get(key)
        except Exception as error:
            raise directory.translate(error, self.path, "reading") from error
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

    def last_data_index_below(self, stop: int) -> int | None:
        """The highest data index below ``stop``, or None."""
        if stop <= 0:
            return None
        with self._reading("scanning the data"):
            iterator = self._families[DATA_CF].iter(self._read_options)
            try:
                iterator.seek_for_prev(encode_index(stop - 1))
                last = decode_index(iterator.key()) if iterator.valid() else None
                iterator.status()
            finally:
                del iterator
        return last


class Store(StoredReads):
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
        directory.claim(path)
        try:
            directory.replay_log_in_child(path, column_families, directory_mode)
            self._db = directory.open_queue_database(path, column_families, directory_mode)
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
            directory.release(path)
            raise
        self._write_options = WriteOptions()
        self._write_options.sync = False
        self._read_options = ReadOptions()
        self.sync = sync

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
            if self.failure is None:
                # Dropping a family's Rdict flushes its memtable holding the
                # GIL (100-350 ms after 64 MiB, every thread frozen); flush()
                # releases it, and leaves the drop nothing to write.
                for family in self._families.values():
                    family.flush(True)
            # The DB lock is released only once no column-family handle is alive.
            self._families.clear()
            self._handles.clear()
            del self._data_handle, self._meta_handle, self._positions, self._data
            self._db.close()
        except Exception as error:
            # The failure was reported when it happened; closing is how the
            # caller recovers, and must not raise it again.
            if self.failure is None:
                raise directory.translate(error, self.path, "closing") from error
        finally:
            directory.release(self.path)

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
                (POSITIONS_CF, plan.position_writes),
                (GIVEN_BACK_CF, plan.given_back_writes),
                (RESERVED_CF, plan.reserved_writes),
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
        failure = directory.translate(error, self.path, "writing")
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

    def cover_removed(self, head: int) -> None:
        """Cover every data key below ``head`` (all removed already) with one range deletion.

        Pops and expiry delete their keys one by one, and the next open's scan
        from the first key (``data_key_bounds``) reads the value of every
        removed key still in a table file, holding the GIL: 100-200 ms after
        64 MiB went through. Behind a range deletion RocksDB seeks past them.
        Written at close, one per life: many would slow every read.
        """
        if head <= 0:
            return
        self.check_usable()
        batch = WriteBatch(raw_mode=True)
        try:
            batch.delete_range(encode_index(0), encode_index(head), self._data_handle)
            self._db.write(batch, self._write_options)
        except Exception as error:
            del batch
            self._fail(error)

    def _clean_up(self, batch: WriteBatch) -> None:
        """Write an at-open repair durably, before anything relies on it."""
        try:
            self._db.write(batch, self._write_options)
            self._db.flush_wal(True)
        except Exception as error:
            self.failure = directory.translate(error, self.path, "cleaning up")
            raise self.failure from error


class SnapshotStore(StoredReads):
    """A queue directory's column families as of one moment, for reading only.

    Read through a RocksDB secondary instance (``directory.open_secondary``),
    which works while another process holds the queue open and never sees its
    later writes: every read is of the moment ``taken_at``.
    """

    def __init__(self, path: str, column_families: tuple[str, ...]) -> None:
        self.path = path
        self._exit = ExitStack()
        database, self.taken_at = self._exit.enter_context(
            directory.open_secondary(path, ("default", *column_families))
        )
        try:
            self._families = {name: database.get_column_family(name) for name in column_families}
        except Exception as error:
            del database
            self._exit.close()
            raise directory.translate(error, path, "opening a snapshot") from error
        del database
        self._read_options = ReadOptions()
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._families.clear()
        self._exit.close()
