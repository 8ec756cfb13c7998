"""Queue images and the ``export`` and ``import`` commands.

A :class:`QueueImage` is what ``export`` and ``migrate-rocksq`` read and what
``import`` and ``migrate-rocksq`` write: the items in order and, for MPMC, the
labels with positions relative to them. Queues are read and written through
the RocksDB engines (``_inspect.open_fifo``, ``_inspect.open_mpmc``); a queue
that another process holds open is exported from a snapshot of it
(``_inspect.reading_fifo``), its reserved items included as a restart would
deliver them again: FIFO before the head, MPMC first to their label.

Export format (line oriented, UTF-8, ``\\n`` line ends; ``.gz`` file names are
gzip-compressed):

* line 1: a JSON object ``{"format": "rocksq_aio-export", "version": 1,
  "kind": "fifo" | "mpmc", "count": N, ...}``; for MPMC ``"labels"`` is a list of
  ``{"label": str, "offset": int, "expired_unseen": bool, "returned": [base64...]}``
  where ``offset`` is the label's position relative to the first exported item
  (0 = reads the first item next, N = has read everything);
* then exactly N lines, one per item in queue order: FIFO ``<base64>``, MPMC
  ``<timestamp_ms> <base64>`` (standard base64 with padding, RFC 4648; an empty
  item is an empty base64 string).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .. import __version__
from .._dispatch import give_back_operation, next_operation
from .._errors import QueueCorruptedError, QueueError
from .._types import StartPosition
from ..rocksdb import directory
from ..rocksdb.fifo import RocksDBFifo
from ..rocksdb.mpmc import RocksDBMpmc
from ..rocksdb.view import FifoView, MpmcView
from ._exit import EXIT_NOT_FOUND, EXIT_OK, CliError
from ._inspect import (
    CHUNK_ITEMS,
    KIND_NAMES,
    Detected,
    Kind,
    detect,
    iter_stored,
    open_fifo,
    open_mpmc,
    reading_fifo,
    reading_mpmc,
    snapshot_of,
)
from ._output import Progress, binary_stdout, iso_ms, note, warn

EXPORT_FORMAT = "rocksq_aio-export"
EXPORT_VERSION = 1

_WRITE_BATCH_ITEMS = 10_000
_WRITE_BATCH_BYTES = 1024 * 1024
_MAX_TIMESTAMP_MS = 2**47  # about year 6429: exact through the float clock of the engine


@dataclass
class LabelImage:
    label: str
    offset: int = 0
    """Items before the label's position: 0 = reads the first item next."""
    expired_unseen: bool = False
    """The label's next read reports that elements it had not read expired."""
    returned: list[bytes] = field(default_factory=list)
    """Items handed back to the label, delivered to it before its position."""


@dataclass
class QueueImage:
    kind: Kind
    count: int
    items: Iterator[tuple[int, bytes]]
    """(timestamp in ms, item); the timestamp is 0 for FIFO queues."""
    labels: list[LabelImage] = field(default_factory=list)
    """Names are known at once; offsets may be final only once ``items`` is exhausted."""
    header: dict[str, Any] = field(default_factory=dict)
    """Informational header fields of an export."""


def _image_of_fifo(fifo: RocksDBFifo | FifoView) -> QueueImage:
    head, tail, _pending = fifo.snapshot()
    # The engine gave back any reservation at open; a snapshot's are the owner's.
    reserved = fifo.reserved_items() if isinstance(fifo, FifoView) else []
    header: dict[str, Any] = {"head": head, "tail": tail, "payload_size": fifo.payload_size}
    if reserved:
        header["reserved_included"] = len(reserved)
    items = itertools.chain(
        ((0, item) for item in reserved),
        ((0, value) for _index, value in iter_stored(fifo.read_stored, head, tail)),
    )
    return QueueImage("fifo", len(reserved) + tail - head, items, header=header)


def _image_of_mpmc(queue: RocksDBMpmc | MpmcView) -> QueueImage:
    snapshot = queue.snapshot()
    head, tail = snapshot.head, snapshot.tail
    given_back = (
        queue.given_back_after_restart() if isinstance(queue, MpmcView) else snapshot.given_back
    )
    labels = [
        LabelImage(
            label,
            saved.index - head,
            saved.expired_unseen,
            list(given_back.get(label, ())),
        )
        for label, saved in sorted(snapshot.positions.items())
    ]
    items = (stamped for _index, stamped in iter_stored(queue.read_stored, head, tail))
    header: dict[str, Any] = {
        "head": head,
        "tail": tail,
        "newest_timestamp_ms": snapshot.newest_timestamp_ms,
    }
    reserved = sum(snapshot.pending.values())
    if reserved:
        header["reserved_included"] = reserved
    return QueueImage("mpmc", tail - head, items, labels, header)


# ---------------------------------------------------------------- export


def _export_header(image: QueueImage, source: str) -> dict[str, Any]:
    header: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "kind": image.kind,
        "count": image.count,
    }
    if image.kind == "mpmc":
        header["labels"] = [
            {
                "label": label.label,
                "offset": label.offset,
                "expired_unseen": label.expired_unseen,
                "returned": [base64.b64encode(item).decode("ascii") for item in label.returned],
            }
            for label in image.labels
        ]
    header["source"] = source
    header["exported_at"] = iso_ms(int(time.time() * 1000))
    header["exported_by"] = f"rocksq_aio {__version__}"
    header.update(image.header)
    return header


def _write_export(stream: BinaryIO, image: QueueImage, source: str, progress: Progress) -> int:
    header = _export_header(image, source)
    stream.write(json.dumps(header, ensure_ascii=True).encode("ascii") + b"\n")
    written = 0
    mpmc = image.kind == "mpmc"
    for timestamp, item in image.items:
        encoded = base64.b64encode(item)
        stream.write(b"%d %s\n" % (timestamp, encoded) if mpmc else encoded + b"\n")
        written += 1
        if written % CHUNK_ITEMS == 0:
            progress.advance(CHUNK_ITEMS)
    progress.advance(written % CHUNK_ITEMS)
    if written != image.count:
        raise QueueCorruptedError(f"expected {image.count} items, read {written}")
    return written


@contextlib.contextmanager
def _output_file(name: str, force: bool) -> Iterator[BinaryIO]:
    """Write to ``name`` through a temporary file renamed at the end (``-``: stdout)."""
    if name == "-":
        yield binary_stdout()
        return
    target = os.path.abspath(name)
    if os.path.isdir(target):
        raise CliError(f"{name}: is a directory")
    if os.path.lexists(target) and not force:
        raise CliError(f"{name}: already exists; pass --force to overwrite it")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise CliError(f"{name}: directory {parent} does not exist", EXIT_NOT_FOUND)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent
    )
    try:
        with os.fdopen(descriptor, "wb") as raw:
            if target.endswith(".gz"):
                with gzip.GzipFile(
                    filename=os.path.basename(target)[:-3], mode="wb", fileobj=raw
                ) as compressed:
                    yield compressed  # type: ignore[misc]
            else:
                yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def command_export(args: argparse.Namespace) -> int:
    detected = detect(args.path)
    quiet = args.quiet
    with _output_file(args.file, args.force) as stream:
        reader = reading_fifo if detected.kind == "fifo" else reading_mpmc
        with reader(detected.path) as queue:
            snapshot = snapshot_of(queue)
            if isinstance(queue, RocksDBFifo | FifoView):
                image = _image_of_fifo(queue)
            else:
                image = _image_of_mpmc(queue)
            if snapshot is not None:
                image.header["snapshot"] = snapshot.as_json()
            progress = Progress("export", image.count, not quiet)
            written = _write_export(stream, image, detected.path, progress)
        stream.flush()
    progress.finish()
    labels = f" and {len(image.labels)} labels" if image.kind == "mpmc" else ""
    target = "stdout" if args.file == "-" else args.file
    if snapshot is not None:
        reserved = image.header.get("reserved_included", 0)
        kept = f", {reserved} reserved items included as a restart would deliver them"
        note(f"exported a {snapshot.text}{kept if reserved else ''}", quiet)
    note(f"exported {written} items{labels} of {detected.path} to {target}", quiet)
    return EXIT_OK


# ---------------------------------------------------------------- import


class _ExportReader:
    """Reads and validates an export stream into a QueueImage."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.line_number = 0

    def fail(self, message: str) -> CliError:
        return CliError(f"{self.name}:{self.line_number}: {message}")

    def _line(self) -> bytes | None:
        line = self.stream.readline()
        if not line:
            return None
        self.line_number += 1
        if line.endswith(b"\n"):
            line = line[:-1]
        return line[:-1] if line.endswith(b"\r") else line

    def _base64(self, text: object, what: str) -> bytes:
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        if not isinstance(text, bytes):
            raise self.fail(f"{what} must be a base64 string")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail(f"{what} is not valid base64") from None

    def read(self) -> QueueImage:
        first = self._line()
        if first is None:
            raise self.fail("empty file: expected a JSON header line")
        try:
            header = json.loads(first)
        except (UnicodeDecodeError, ValueError):
            raise self.fail("the first line is not a JSON header") from None
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            raise self.fail(f"not a {EXPORT_FORMAT} file (header 'format' is missing or wrong)")
        version = header.get("version")
        if version != EXPORT_VERSION:
            raise self.fail(
                f"export format version {version!r} is not supported (this tool reads "
                f"version {EXPORT_VERSION})"
            )
        kind = header.get("kind")
        if kind not in ("fifo", "mpmc"):
            raise self.fail(f"header 'kind' must be 'fifo' or 'mpmc', got {kind!r}")
        count = header.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise self.fail(f"header 'count' must be an int >= 0, got {count!r}")
        labels = self._labels(header.get("labels", []), count) if kind == "mpmc" else []
        if kind == "fifo" and header.get("labels"):
            raise self.fail("a FIFO export cannot have labels")
        return QueueImage(kind, count, self._items(kind == "mpmc", count), labels, header)

    def _labels(self, raw: object, count: int) -> list[LabelImage]:
        if not isinstance(raw, list):
            raise self.fail("header 'labels' must be a list")
        labels: list[LabelImage] = []
        seen: set[str] = set()
        for entry in raw:
            if not isinstance(entry, dict):
                raise self.fail("each label must be a JSON object")
            label = entry.get("label")
            offset = entry.get("offset", 0)
            expired = entry.get("expired_unseen", False)
            returned = entry.get("returned", [])
            if not isinstance(label, str) or not label:
                raise self.fail(f"label name must be a non-empty string, got {label!r}")
            if label in seen:
                raise self.fail(f"label {label!r} appears twice")
            seen.add(label)
            if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= count:
                raise self.fail(f"offset of label {label!r} must be an int in [0, {count}]")
            if not isinstance(expired, bool):
                raise self.fail(f"expired_unseen of label {label!r} must be a bool")
            if not isinstance(returned, list):
                raise self.fail(f"returned items of label {label!r} must be a list")
            items = [self._base64(item, f"a returned item of label {label!r}") for item in returned]
            labels.append(LabelImage(label, offset, expired, items))
        return labels

    def _items(self, mpmc: bool, count: int) -> Iterator[tuple[int, bytes]]:
        for _ in range(count):
            line = self._line()
            if line is None:
                raise self.fail(f"truncated: the header announces {count} items")
            timestamp = 0
            if mpmc:
                stamp, _space, line = line.partition(b" ")
                if not _space or not stamp.isdigit():
                    raise self.fail("expected '<timestamp_ms> <base64>'")
                timestamp = int(stamp)
                if timestamp >= _MAX_TIMESTAMP_MS:
                    raise self.fail(f"timestamp {timestamp} is out of range")
            yield timestamp, self._base64(line, "the item")
        extra = self._line()
        while extra == b"":
            extra = self._line()
        if extra is not None:
            raise self.fail(f"more lines than the {count} items the header announces")


@contextlib.contextmanager
def _input_file(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:
            raise CliError("stdin does not give bytes")
        yield buffer
        return
    try:
        raw = open(name, "rb")  # noqa: SIM115 (closed below, also for gzip)
    except FileNotFoundError:
        raise CliError(f"{name}: no such file", EXIT_NOT_FOUND) from None
    with raw:
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as compressed:
                yield compressed  # type: ignore[misc]
        else:
            raw.seek(0)
            yield raw


def command_import(args: argparse.Namespace) -> int:
    with _input_file(args.file) as stream:
        name = "<stdin>" if args.file == "-" else args.file
        image = _ExportReader(stream, name).read()
        summary = write_image(args.path, image, quiet=args.quiet, action="import")
    note(f"imported {summary} into {os.path.abspath(args.path)}", args.quiet)
    return EXIT_OK


# ---------------------------------------------------------------- writing a queue


@contextlib.contextmanager
def _destination(path: str, kind: Kind) -> Iterator[str]:
    """The directory to write the new queue into.

    A new path (or an empty directory) is written in a temporary sibling that is
    renamed into place at the end, so a failed run leaves nothing behind. An
    existing queue of the same kind is written in place if it is empty (no
    elements, no labels); anything else is refused.
    """
    target = os.path.abspath(path)
    if os.path.lexists(target):
        if os.path.isdir(target) and not os.path.islink(target) and not os.listdir(target):
            pass  # an empty directory: replaced by the new queue
        elif os.path.isdir(target) and os.path.exists(os.path.join(target, "CURRENT")):
            detected = detect(target)
            if detected.kind != kind:
                raise CliError(
                    f"{path}: holds a {KIND_NAMES[detected.kind]} queue, the source is "
                    f"{KIND_NAMES[kind]}; refusing to write into it"
                )
            _check_empty_queue(detected)
            yield target
            return
        else:
            raise CliError(
                f"{path}: exists and is neither a queue nor an empty directory; "
                "refusing to write into it",
                EXIT_NOT_FOUND,
            )
    parent = os.path.dirname(target)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent)
    try:
        yield temporary
        os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):
        directory.fsync_directory(parent)


def _check_empty_queue(detected: Detected) -> None:
    if detected.kind == "fifo":
        with open_fifo(detected.path) as fifo:
            length = fifo.len
            labels: list[str] = []
    else:
        with open_mpmc(detected.path) as queue:
            length = queue.len
            labels = queue.labels
    if length or labels:
        raise CliError(
            f"{detected.path}: refusing to overwrite a non-empty queue "
            f"({length} items, {len(labels)} labels)"
        )


def write_image(path: str, image: QueueImage, *, quiet: bool, action: str) -> str:
    """Write ``image`` as a new queue at ``path``; returns what was written, for the summary."""
    with _destination(path, image.kind) as target:
        if image.kind == "fifo":
            _write_fifo(target, image, Progress(action, image.count, not quiet))
            return f"{image.count} items"
        _write_mpmc(target, image, action, quiet)
        return f"{image.count} elements and {len(image.labels)} labels"


def _write_fifo(path: str, image: QueueImage, progress: Progress) -> None:
    with open_fifo(path, sync=True) as fifo:
        batch: list[bytes] = []
        size = 0
        for _timestamp, item in image.items:
            batch.append(item)
            size += len(item)
            if len(batch) >= _WRITE_BATCH_ITEMS or size >= _WRITE_BATCH_BYTES:
                fifo.push(batch)
                progress.advance(len(batch))
                batch, size = [], 0
        if batch:
            fifo.push(batch)
            progress.advance(len(batch))
        progress.finish()
        if fifo.len != image.count:
            raise QueueError(f"wrote {fifo.len} items, expected {image.count}")


def _clock_value(timestamp_ms: int) -> float:
    """A clock reading that the queue turns into exactly ``timestamp_ms``."""
    value = (timestamp_ms + 0.5) / 1000
    while int(value * 1000) > timestamp_ms:
        value = math.nextafter(value, -math.inf)
    while int(value * 1000) < timestamp_ms:
        value = math.nextafter(value, math.inf)
    return value


def _write_mpmc(path: str, image: QueueImage, action: str, quiet: bool) -> None:
    now = [time.time()]
    with open_mpmc(path, sync=True, clock=lambda: now[0]) as queue:
        if queue.len or queue.labels:
            raise AssertionError("the destination must be empty")
        # Labels are registered at the head while the queue is empty, then
        # moved to their position by reading (the only way to move a label).
        for label in image.labels:
            queue.next(label.label, StartPosition.Oldest, 1)
        progress = Progress(action, image.count, not quiet)
        batch: list[bytes] = []
        batch_stamp = -1
        size = 0
        raised = 0
        newest = -1
        for timestamp, item in image.items:
            if timestamp < newest:
                raised += 1
            newest = max(newest, timestamp)
            if batch and (
                timestamp != batch_stamp
                or len(batch) >= _WRITE_BATCH_ITEMS
                or size >= _WRITE_BATCH_BYTES
            ):
                now[0] = _clock_value(batch_stamp)
                queue.add(batch)
                progress.advance(len(batch))
                batch, size = [], 0
            batch.append(item)
            batch_stamp = timestamp
            size += len(item)
        if batch:
            now[0] = _clock_value(batch_stamp)
            queue.add(batch)
            progress.advance(len(batch))
        progress.finish()
        if raised:
            warn(
                f"{raised} timestamps were below an earlier one and were raised to it "
                "(timestamps never decrease along a rocksq_aio queue)"
            )
        if queue.len != image.count:
            raise QueueError(f"wrote {queue.len} elements, expected {image.count}")
        _position_labels(queue, image.labels, quiet)


def _position_labels(queue: RocksDBMpmc, labels: list[LabelImage], quiet: bool) -> None:
    head = queue.snapshot().head
    progress = Progress("positioning labels", sum(label.offset for label in labels), not quiet)
    for label in labels:
        remaining = label.offset
        while remaining:
            items, _expired = queue.next(
                label.label, StartPosition.Oldest, min(remaining, CHUNK_ITEMS)
            )
            if not items:
                raise QueueError(f"label {label.label!r} could not reach offset {label.offset}")
            remaining -= len(items)
            progress.advance(len(items))
    progress.finish()
    for label in labels:
        if label.expired_unseen:
            queue.mark_expired_unseen(label.label)
        if label.returned:
            _hand_back(queue, label.label, label.returned)
    for label in labels:
        position = queue.position(label.label)
        if position is None or position - head != label.offset:
            raise QueueError(f"label {label.label!r} ended at {position}, not {label.offset}")


def _hand_back(queue: RocksDBMpmc, label: str, items: list[bytes]) -> None:
    """Save ``items`` as handed back to ``label``: its next read delivers them first.

    The engine has no accessor for this. Through its dispatcher API it is the
    give-back of a finished read that took these items from the label's
    handed-back items (a read with no first index, ``token`` None) and
    delivered none of them.
    """
    read = next_operation(label, StartPosition.Oldest, len(items))
    read.result = (list(items), False)
    queue.run(give_back_operation(read))
    if queue.snapshot().given_back.get(label) != items:
        raise QueueError(f"could not hand back the items of label {label!r}")
