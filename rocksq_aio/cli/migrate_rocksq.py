"""The ``migrate-rocksq`` command: a RocksQ 0.3.0 queue directory read as a queue image.

RocksQ's directory is opened read-only through ``_inspect.open_raw`` (never
while RocksQ has it open) and left exactly as it was; the image is written by
``image.write_image``, as ``import`` writes an export.

RocksQ 0.3.0's layout: 8-byte little-endian index keys, which run in
``[0, ROCKSQ_MAX_ALLOWED_INDEX)`` and wrap to 0 there, and counters at the top
indices. FIFO: one ``default`` column family. MPMC: ``data``, ``system`` (the
counters) and ``reader`` (each label's bincode ``Reader``), all in RocksDB's
TTL mode, which appends the write time in seconds to every value.
"""

from __future__ import annotations

import argparse
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from rocksdict import Rdict

from .._errors import QueueCorruptedError, QueueLockedError
from .._validate import MAX_LABEL_BYTES
from ..rocksdb import directory
from ..rocksdb.format import META_CF
from ._exit import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from ._inspect import (
    CHUNK_ITEMS,
    KIND_NAMES,
    Kind,
    check_directory,
    list_families,
    open_raw,
    reading,
    rocksq_kind,
    scan,
)
from ._output import note, show_label, warn
from .image import LabelImage, QueueImage, write_image

ROCKSQ_MAX_ALLOWED_INDEX = 2**64 - 1 - 100
"""RocksQ's indices run in [0, u64::MAX - 100) and wrap to 0 there."""
_U64_MAX = 2**64 - 1
_ROCKSQ_FIFO_WRITE_INDEX = _U64_MAX  # tail: the next index written
_ROCKSQ_FIFO_READ_INDEX = _U64_MAX - 1  # head: the next index read
_ROCKSQ_FIFO_SPACE = _U64_MAX - 2  # payload size in bytes
_ROCKSQ_MPMC_START_INDEX = _U64_MAX  # in "system"; the oldest element (0 when absent)
_ROCKSQ_MPMC_WRITE_INDEX = _U64_MAX - 1
_ROCKSQ_MPMC_WRITE_TIMESTAMP = _U64_MAX - 2  # nanoseconds
_TTL_SUFFIX = 4  # RocksDB TTL mode appends a little-endian u32 time in seconds
_LE_U64 = struct.Struct("<Q")
_LE_U32 = struct.Struct("<I")


def _rocksq_key(index: int) -> bytes:
    return _LE_U64.pack(index)


@dataclass
class RocksqReader:
    """bincode 2 (standard, varint) of RocksQ's ``struct Reader``."""

    index: int
    end_timestamp: int | None
    expired: bool


def _bincode_varint(raw: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(raw):
        raise ValueError("truncated varint")
    tag = raw[offset]
    if tag < 251:
        return tag, offset + 1
    size = {251: 2, 252: 4, 253: 8, 254: 16}.get(tag)
    if size is None or offset + 1 + size > len(raw):
        raise ValueError("bad or truncated varint")
    return int.from_bytes(raw[offset + 1 : offset + 1 + size], "little"), offset + 1 + size


def decode_rocksq_reader(raw: bytes) -> RocksqReader:
    """Decode ``Reader { index: u64, end_timestamp: Option<u64>, expired: bool }``."""
    index, offset = _bincode_varint(raw, 0)
    if offset >= len(raw) or raw[offset] not in (0, 1):
        raise ValueError("bad Option tag")
    end: int | None = None
    if raw[offset] == 1:
        end, offset = _bincode_varint(raw, offset + 1)
    else:
        offset += 1
    if offset >= len(raw) or raw[offset] not in (0, 1):
        raise ValueError("bad bool")
    expired = raw[offset] == 1
    if offset + 1 != len(raw):
        raise ValueError("trailing bytes")
    if index > _U64_MAX or (end is not None and end > _U64_MAX):
        raise ValueError("u64 out of range")
    return RocksqReader(index, end, expired)


def _rocksq_directory(path: str) -> tuple[str, Kind, list[str]]:
    """The absolute path, kind and column families of the RocksQ queue at ``path``."""
    absolute = check_directory(path)
    families = list_families(absolute)
    kind = rocksq_kind(families)
    if kind is None:
        hint = " (it is a rocksq_aio queue)" if META_CF in families else ""
        raise CliError(
            f"{path}: not a RocksQ 0.3.0 queue: column families {sorted(families)}{hint}",
            EXIT_NOT_FOUND,
        )
    if directory.lock_is_held(absolute):
        raise QueueLockedError(f"RocksQ queue at {absolute!r} is open (in this or another process)")
    return absolute, kind, families


class RocksqSource:
    """A RocksQ 0.3.0 queue directory, read through raw read-only column families."""

    def __init__(self, path: str, families: dict[str, Rdict], *, ttl: float | None) -> None:
        self.path = path
        self.families = families
        self.ttl = ttl
        self.now = time.time()
        self.warnings: list[str] = []

    def corrupted(self, message: str) -> QueueCorruptedError:
        return QueueCorruptedError(f"RocksQ queue at {self.path!r}: {message}")

    def _get(self, family: str, index: int) -> bytes | None:
        with reading(self.path, "reading"):
            value: bytes | None = self.families[family].get(_rocksq_key(index))
        return value

    def _counter(self, family: str, index: int, *, ttl_suffix: bool) -> int | None:
        value = self._get(family, index)
        if value is None:
            return None
        if ttl_suffix:
            value = value[:-_TTL_SUFFIX]
        if len(value) != 8:
            raise self.corrupted(f"counter {index} in {family!r} has {len(value)} bytes")
        counter: int = _LE_U64.unpack(value)[0]
        return counter

    def _relatives(
        self, family: str, start: int, length: int, counters: set[int]
    ) -> tuple[int, Sequence[int]]:
        """Count the stored entries inside RocksQ's range [start, start + length).

        Returns the count and the relative indices to read, in queue order: a
        range from the first stored one, or, when the stored entries are sparse
        in a much longer range, exactly theirs.
        """
        inside = outside = 0
        first = length
        for index in self._indices(family, counters):
            relative = (index - start) % ROCKSQ_MAX_ALLOWED_INDEX
            if index < ROCKSQ_MAX_ALLOWED_INDEX and relative < length:
                inside += 1
                first = min(first, relative)
            else:
                outside += 1
        if outside:
            self.warnings.append(
                f"{outside} stored entries lie outside RocksQ's counted range and are not "
                "migrated (RocksQ never delivers them)"
            )
        if length - first <= 4 * inside + 1_000_000:
            return inside, range(first, length)
        relatives = sorted(
            relative
            for relative in (
                (index - start) % ROCKSQ_MAX_ALLOWED_INDEX
                for index in self._indices(family, counters)
                if index < ROCKSQ_MAX_ALLOWED_INDEX
            )
            if relative < length
        )
        return inside, relatives

    def _indices(self, family: str, counters: set[int]) -> Iterator[int]:
        for key, _value in scan(self.families[family], self.path, "scanning " + family):
            if len(key) != 8:
                raise self.corrupted(f"key {key!r} in {family!r} is not an 8-byte index")
            index: int = _LE_U64.unpack(key)[0]
            if index not in counters:
                yield index

    def _values(
        self, family: str, start: int, relatives: Sequence[int]
    ) -> Iterator[tuple[int, bytes | None]]:
        """(relative index, value or None when missing), read in chunks."""
        for offset in range(0, len(relatives), CHUNK_ITEMS):
            chunk = relatives[offset : offset + CHUNK_ITEMS]
            keys: list[Any] = [
                _rocksq_key((start + relative) % ROCKSQ_MAX_ALLOWED_INDEX) for relative in chunk
            ]
            with reading(self.path, "reading"):
                values = cast("list[bytes | None]", self.families[family].get(keys))
            yield from zip(chunk, values, strict=True)

    # ------------------------------------------------------------ FIFO

    def fifo_image(self) -> QueueImage:
        read = self._counter("default", _ROCKSQ_FIFO_READ_INDEX, ttl_suffix=False) or 0
        write = self._counter("default", _ROCKSQ_FIFO_WRITE_INDEX, ttl_suffix=False) or 0
        space = self._counter("default", _ROCKSQ_FIFO_SPACE, ttl_suffix=False) or 0
        if read >= ROCKSQ_MAX_ALLOWED_INDEX or write >= ROCKSQ_MAX_ALLOWED_INDEX:
            raise self.corrupted(f"read index {read} or write index {write} is out of range")
        length = (write - read) % ROCKSQ_MAX_ALLOWED_INDEX
        head_present = self._get("default", read) is not None
        if length == 0 and head_present:
            raise self.corrupted("it is full (2**64 - 101 items): not supported")
        if length and not head_present:
            raise self.corrupted(
                f"it counts {length} items from index {read} but that element is missing "
                "(RocksQ itself would report it empty)"
            )
        counters = {_ROCKSQ_FIFO_READ_INDEX, _ROCKSQ_FIFO_WRITE_INDEX, _ROCKSQ_FIFO_SPACE}
        stored, relatives = self._relatives("default", read, length, counters)
        if stored != length:
            raise self.corrupted(
                f"it counts {length} items from index {read} but stores {stored} of them"
            )

        def items() -> Iterator[tuple[int, bytes]]:
            total = 0
            for relative, value in self._values("default", read, relatives):
                if value is None:
                    raise self.corrupted(f"element {(read + relative)} vanished while reading")
                total += len(value)
                yield 0, value
            if total != space:
                self.warnings.append(
                    f"RocksQ's payload size counter says {space} bytes, the items hold {total}"
                )

        header = {"rocksq_read_index": read, "rocksq_write_index": write}
        return QueueImage("fifo", length, items(), header=header)

    # ------------------------------------------------------------ MPMC

    def _expired_by_ttl(self, value: bytes) -> bool:
        if self.ttl is None or self.ttl <= 0:
            return False
        written: int = _LE_U32.unpack(value[-_TTL_SUFFIX:])[0]
        return written + self.ttl < self.now  # RocksDB's rule

    def _readers(self) -> dict[str, RocksqReader]:
        readers: dict[str, RocksqReader] = {}
        for key, value in scan(self.families["reader"], self.path, "scanning reader"):
            try:
                label = key.decode("utf-8")
            except UnicodeDecodeError:
                raise self.corrupted(f"reader label {key!r} is not UTF-8") from None
            try:
                readers[label] = decode_rocksq_reader(value[:-_TTL_SUFFIX])
            except ValueError as error:
                raise self.corrupted(f"reader record of {label!r} is unreadable: {error}") from None
        return readers

    def mpmc_image(self, dropped_labels: Sequence[str]) -> QueueImage:
        start = self._counter("system", _ROCKSQ_MPMC_START_INDEX, ttl_suffix=True) or 0
        write = self._counter("system", _ROCKSQ_MPMC_WRITE_INDEX, ttl_suffix=True) or 0
        written_ns = self._counter("system", _ROCKSQ_MPMC_WRITE_TIMESTAMP, ttl_suffix=True)
        if start >= ROCKSQ_MAX_ALLOWED_INDEX or write >= ROCKSQ_MAX_ALLOWED_INDEX:
            raise self.corrupted(f"start index {start} or write index {write} is out of range")
        length = (write - start) % ROCKSQ_MAX_ALLOWED_INDEX
        _candidates, relatives = self._relatives("data", start, length, set())
        # Count what is kept (present, not past --ttl) in a first pass, so that
        # the image knows its length; missing elements expired and were compacted.
        kept = 0
        for _relative, value in self._values("data", start, relatives):
            if value is not None:
                if len(value) < _TTL_SUFFIX:
                    raise self.corrupted("an element has no TTL timestamp")
                kept += not self._expired_by_ttl(value)
        readers = self._readers()
        unknown = sorted(set(dropped_labels) - set(readers))
        if unknown:
            raise CliError(f"--drop-label: no such RocksQ label(s): {unknown}", EXIT_NOT_FOUND)
        for label in dropped_labels:
            del readers[label]
        for label in readers:
            if not label or len(label.encode("utf-8")) > MAX_LABEL_BYTES:
                raise CliError(
                    f"RocksQ label {label!r} is not a valid rocksq_aio label (non-empty, at "
                    f"most {MAX_LABEL_BYTES} UTF-8 bytes); leave it out with --drop-label"
                )
        # A reader outside [start, write] is behind RocksQ's start (-1): the
        # elements it had not read are gone, RocksQ moves it to the oldest one.
        relative_of = {}
        for label, reader in readers.items():
            relative = (reader.index - start) % ROCKSQ_MAX_ALLOWED_INDEX
            relative_of[label] = relative if relative <= length else -1
        images = {label: LabelImage(label) for label in sorted(readers)}

        def items() -> Iterator[tuple[int, bytes]]:
            waiting = sorted(readers, key=lambda label: relative_of[label])
            count = 0
            pending = 0
            for relative, value in self._values("data", start, relatives):
                if value is None or self._expired_by_ttl(value):
                    continue
                # Labels positioned at or before this element read it next.
                while pending < len(waiting) and relative_of[waiting[pending]] <= relative:
                    label = waiting[pending]
                    images[label].offset = count
                    images[label].expired_unseen = (
                        readers[label].expired or relative_of[label] != relative
                    )
                    pending += 1
                count += 1
                yield _LE_U32.unpack(value[-_TTL_SUFFIX:])[0] * 1000, value[:-_TTL_SUFFIX]
            for label in waiting[pending:]:
                images[label].offset = count
                missed = relative_of[label] != length
                images[label].expired_unseen = readers[label].expired or missed
            if count != kept:
                raise self.corrupted("the queue changed while it was read")

        header: dict[str, Any] = {"rocksq_start_index": start, "rocksq_write_index": write}
        if written_ns is not None:
            header["rocksq_write_timestamp_ns"] = written_ns
        return QueueImage("mpmc", kept, items(), list(images.values()), header)


def _dry_run_summary(image: QueueImage) -> str:
    for _ in image.items:
        pass
    if image.kind == "fifo":
        return f"{image.count} items"
    positions = ", ".join(
        f"{show_label(label.label)}@{label.offset}" + ("(expired)" if label.expired_unseen else "")
        for label in image.labels
    )
    return f"{image.count} elements and labels [{positions}]"


def command_migrate(args: argparse.Namespace) -> int:
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise CliError("SRC and DST must be different paths", EXIT_USAGE)
    path, kind, families = _rocksq_directory(args.src)
    if kind == "fifo" and args.drop_label:
        raise CliError("--drop-label applies to MPMC queues only", EXIT_USAGE)
    with open_raw(path, families) as handles:
        source = RocksqSource(path, handles, ttl=args.ttl)
        image = source.fifo_image() if kind == "fifo" else source.mpmc_image(args.drop_label)
        if args.dry_run:
            summary = _dry_run_summary(image)
        else:
            summary = write_image(args.dst, image, quiet=args.quiet, action="migrate")
    for warning in source.warnings:
        warn(warning)
    name = KIND_NAMES[kind]
    if args.dry_run:
        note(f"dry run: would migrate RocksQ {name} queue {path}: {summary}", args.quiet)
    else:
        note(
            f"migrated RocksQ {name} queue {path} to {os.path.abspath(args.dst)}: {summary}",
            args.quiet,
        )
    return EXIT_OK
