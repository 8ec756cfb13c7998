"""Command-line tool: ``python -m rocksq_aio COMMAND ...`` (installed as ``rocksq-aio``).

Commands: ``info``, ``peek``, ``export``, ``import``, ``migrate-rocksq`` and ``stats``;
``--help`` on each. Results go to stdout, messages and progress to stderr.

Exit codes: 0 success, 1 other error, 2 usage, 3 path (or label) not found or not a
queue, 4 queue locked (open elsewhere), 5 queue corrupted, 130 interrupted.

Queues are opened through the library classes (``rocksq_aio.blocking``, MPMC with
``ttl=0`` so that nothing expires), so the usual validation and open-time recovery
apply; nothing is consumed. The kind of a queue is read first from its ``meta``
column family, with explicit raw options and explicit column families.

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
import datetime
import gzip
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from rocksdict import AccessType, Options, Rdict

from . import __version__, _plan
from ._errors import QueueCorruptedError, QueueError, QueueLockedError
from ._storage import _options, lock_is_held, translate
from ._types import StartPosition
from ._validate import MAX_CAPACITY
from .blocking import MpmcQueue, PersistentQueueWithCapacity

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_LOCKED = 4
EXIT_CORRUPTED = 5
EXIT_INTERRUPTED = 130

EXPORT_FORMAT = "rocksq_aio-export"
EXPORT_VERSION = 1

PROGRESS_MIN_ITEMS = 10_000
"""Progress is shown on stderr for runs of at least this many items."""
PROGRESS_INTERVAL = 0.5
"""Seconds between two progress lines."""

_CHUNK_ITEMS = 1024
_WRITE_BATCH_ITEMS = 10_000
_WRITE_BATCH_BYTES = 1024 * 1024
_MAX_TIMESTAMP_MS = 2**47  # about year 6429: exact through the float clock of MpmcQueue

Kind = Literal["fifo", "mpmc"]
_KIND_NAMES: dict[str, str] = {"fifo": "FIFO", "mpmc": "MPMC"}

_EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  other error (bad export file, refusing to overwrite a non-empty queue, ...)
  2  usage error
  3  path (or label) not found, or not a queue
  4  queue locked: it is open elsewhere (in another process or this one)
  5  queue corrupted
"""


class CliError(Exception):
    """A failure reported as one line on stderr with a given exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------- small helpers


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _iso_ms(timestamp_ms: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(timestamp_ms / 1000, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp_ms} ms"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


def _show_label(label: str) -> str:
    return label if label and label.isprintable() else repr(label)


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"{_prog()}: warning: {message}\n")


def _note(message: str, quiet: bool = False) -> None:
    if not quiet:
        sys.stderr.write(f"{_prog()}: {message}\n")


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("", "__main__.py", "-c", "-m") or name.startswith("pytest"):
        return "python -m rocksq_aio"
    return name


class _Progress:
    """Progress on stderr for long runs only: a tqdm bar when tqdm is installed
    (the ``cli`` extra), else a plain line."""

    def __init__(self, action: str, total: int, enabled: bool = True) -> None:
        self.action = action
        self.total = total
        self.done = 0
        self.enabled = enabled and total >= PROGRESS_MIN_ITEMS
        self._started = time.monotonic()
        self._last = self._started
        self._shown = False
        stream = sys.stderr
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=action, unit="item", file=sys.stderr)

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        interval = PROGRESS_INTERVAL if self._tty else PROGRESS_INTERVAL * 4
        if now - self._last >= interval:
            self._last = now
            self._show(now, final=False)

    def _show(self, now: float, *, final: bool) -> None:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        elapsed = max(now - self._started, 1e-9)
        line = (
            f"{self.action}: {self.done}/{self.total} items ({percent:.0f}%), "
            f"{self.done / elapsed:.0f} items/s"
        )
        if self._tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self._shown = True

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._show(time.monotonic(), final=True)


# ---------------------------------------------------------------- opening queues


@dataclass(frozen=True)
class Detected:
    """What is stored at a path: a rocksq_aio queue of a known kind."""

    path: str
    kind: Kind
    format: str
    column_families: tuple[str, ...]


_ROCKSQ_MPMC_FAMILIES = {"default", "system", "data", "reader"}


def _check_directory(path: str) -> str:
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


def _list_families(path: str) -> list[str]:
    try:
        return list(Rdict.list_cf(path, Options(raw_mode=True)))
    except Exception as error:
        raise translate(error, path, "reading the column families") from error


class _RawDb:
    """A rocksdict database opened with explicit raw options and column families.

    Never ``Rdict(path)`` without options: rocksdict would then trust (and
    unpickle from) the directory's rocksdict-config.json. rocksdict writes that
    file at every open; with ``keep_directory_clean`` it is removed again if it
    was not there before (used for RocksQ directories, which we only read).
    """

    def __init__(
        self,
        path: str,
        families: Sequence[str],
        *,
        read_only: bool,
        keep_directory_clean: bool = False,
    ) -> None:
        self.path = path
        config = os.path.join(path, "rocksdict-config.json")
        self._remove_config = keep_directory_clean and not os.path.exists(config)
        if read_only:
            options = Options(raw_mode=True)
            family_options = {name: Options(raw_mode=True) for name in families}
            access = AccessType.read_only(False)
        else:
            # The library's own options, so that opening changes nothing.
            options = _options(create=False)
            family_options = {name: _options(create=False) for name in families}
            access = AccessType.read_write()
        try:
            self.db = Rdict(path, options, column_families=family_options, access_type=access)
        except Exception as error:
            self._clean()
            raise translate(error, path, "opening") from error
        self.families: dict[str, Rdict] = {
            name: self.db.get_column_family(name) for name in families
        }

    def get(self, family: str, key: bytes) -> bytes | None:
        try:
            value: Any = self.families[family].get(key)
        except Exception as error:
            raise translate(error, self.path, "reading") from error
        if value is not None and not isinstance(value, bytes):
            raise QueueCorruptedError(f"unexpected value type {type(value).__name__}")
        return value

    def get_many(self, family: str, keys: list[bytes]) -> list[bytes | None]:
        try:
            wanted: list[Any] = list(keys)
            values: Any = self.families[family].get(wanted)
        except Exception as error:
            raise translate(error, self.path, "reading") from error
        return list(values)

    def items(self, family: str) -> Iterator[tuple[bytes, bytes]]:
        try:
            iterator = self.families[family].iter()
            iterator.seek_to_first()
            while iterator.valid():
                yield iterator.key(), iterator.value()
                iterator.next()
            iterator.status()
        except QueueError:
            raise
        except Exception as error:
            raise translate(error, self.path, "scanning " + family) from error
        finally:
            with contextlib.suppress(NameError):
                del iterator

    def close(self) -> None:
        # The DB lock is released only once no column-family handle is alive.
        self.families.clear()
        try:
            self.db.close()
        except Exception as error:
            raise translate(error, self.path, "closing") from error
        finally:
            self._clean()

    def _clean(self) -> None:
        if self._remove_config:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.path, "rocksdict-config.json"))

    def __enter__(self) -> _RawDb:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def detect(path: str) -> Detected:
    """Say which kind of rocksq_aio queue is at ``path`` without changing it.

    Raises CliError (exit 3) when there is none.
    """
    absolute = _check_directory(path)
    families = _list_families(absolute)
    if _plan.META_CF not in families:
        hint = ""
        if set(families) == _ROCKSQ_MPMC_FAMILIES or families == ["default"]:
            hint = "; it looks like a RocksQ queue: convert it with migrate-rocksq"
        raise CliError(
            f"{path}: not a rocksq_aio queue (column families {sorted(families)}){hint}",
            EXIT_NOT_FOUND,
        )
    with _RawDb(absolute, families, read_only=True) as db:
        kind = db.get(_plan.META_CF, _plan.KIND_KEY)
    if kind in _plan.FIFO_KINDS:
        found: Kind = "fifo"
    elif kind in _plan.MPMC_KINDS:
        found = "mpmc"
    elif kind is None:
        raise CliError(f"{path}: not a queue (no kind marker in its meta)", EXIT_NOT_FOUND)
    else:
        raise CliError(
            f"{path}: unknown queue kind {kind!r} (written by a newer rocksq_aio?)",
            EXIT_NOT_FOUND,
        )
    return Detected(absolute, found, kind.decode("ascii", "replace"), tuple(families))


@contextlib.contextmanager
def _open_fifo(path: str, *, sync: bool = False) -> Iterator[PersistentQueueWithCapacity]:
    queue = PersistentQueueWithCapacity(path, max_elements=MAX_CAPACITY, sync=sync)
    try:
        yield queue
    finally:
        queue.close()


@contextlib.contextmanager
def _open_mpmc(
    path: str, *, sync: bool = False, clock: Callable[[], float] = time.time
) -> Iterator[MpmcQueue]:
    # ttl=0: nothing expires while the tool has the queue open.
    queue = MpmcQueue(path, 0, sync=sync, clock=clock)
    try:
        yield queue
    finally:
        queue.close()


# ---------------------------------------------------------------- library internals read here
# The tool reads a few internals of the queue classes (same package): the
# counters, the saved label flags and the items handed back to labels. They
# are all gathered here.


def _fifo_bounds(queue: PersistentQueueWithCapacity) -> tuple[int, int]:
    state = queue._state
    return state.head, state.tail


def _mpmc_bounds(queue: MpmcQueue) -> tuple[int, int]:
    state = queue._state
    return state.head, state.tail


def _mpmc_newest_counter(queue: MpmcQueue) -> int:
    return queue._state.newest_timestamp_ms


def _mpmc_expired_unseen(queue: MpmcQueue, label: str) -> bool:
    saved = queue._state.positions.get(label)
    return saved is not None and saved.expired_unseen


def _mpmc_returned(queue: MpmcQueue, label: str) -> list[bytes]:
    """Items handed back to ``label``: its next read delivers them first."""
    return list(queue._returned.get(label, ()))


def _read_values(
    queue: PersistentQueueWithCapacity | MpmcQueue, start: int, count: int
) -> list[bytes]:
    return queue._store.read_elements(start, count)


def _iter_values(
    queue: PersistentQueueWithCapacity | MpmcQueue, start: int, stop: int
) -> Iterator[tuple[int, bytes]]:
    """(index, stored value) for indices [start, stop), read in chunks."""
    index = start
    while index < stop:
        count = min(_CHUNK_ITEMS, stop - index)
        for offset, value in enumerate(_read_values(queue, index, count)):
            yield index + offset, value
        index += count


def _timestamp_at(queue: MpmcQueue, index: int) -> int:
    return _plan.stamped_timestamp(_read_values(queue, index, 1)[0])


def _set_expired_unseen(queue: MpmcQueue, label: str) -> bool:
    """Make ``label``'s next read report expired elements, keeping its position.

    Uses the core's give_back: rewinding a label over elements that are no
    longer there (or with the report of an undone read) sets the flag.
    Returns False when it cannot be done (label at the tail of a non-empty queue).
    """
    head, tail = _mpmc_bounds(queue)
    position = queue.position(label)
    if position is None:
        raise AssertionError(f"label {label!r} is not registered")
    if position < tail:
        if _mpmc_returned(queue, label):
            raise AssertionError("the flag must be set before items are handed back")
        items, _expired = queue.next(label, StartPosition.Oldest, 1)
        queue.give_back(label, items, position, True)
    elif position == head:
        queue.give_back(label, [b""], position - 1, True)
    else:
        return False
    if queue.position(label) != position or not _mpmc_expired_unseen(queue, label):
        raise QueueError(f"could not restore the expiry report of label {label!r}")
    return True


# ---------------------------------------------------------------- info


def _collect_info(path: str, ttl: float | None) -> dict[str, Any]:
    detected = detect(path)
    info: dict[str, Any] = {
        "path": detected.path,
        "kind": detected.kind,
        "format": detected.format,
        "column_families": sorted(detected.column_families),
    }
    if detected.kind == "fifo":
        with _open_fifo(detected.path) as fifo:
            head, tail = _fifo_bounds(fifo)
            info.update(
                length=fifo.len,
                head=head,
                tail=tail,
                payload_size=fifo.payload_size,
                disk_size=fifo.disk_size,
            )
        return info
    with _open_mpmc(detected.path) as queue:
        head, tail = _mpmc_bounds(queue)
        info.update(length=queue.len, head=head, tail=tail, disk_size=queue.disk_size)
        info["ttl"] = None
        info["ttl_note"] = (
            "TTL is not stored on disk: it is the ttl argument of whoever opens the queue"
        )
        info["newest_timestamp_counter_ms"] = _mpmc_newest_counter(queue)
        for name, index in (("oldest", head), ("newest", tail - 1)):
            if head < tail:
                stamp = _timestamp_at(queue, index)
                info[name] = {"index": index, "timestamp_ms": stamp, "time": _iso_ms(stamp)}
            else:
                info[name] = None
        if ttl is not None:
            info["display_ttl_seconds"] = ttl
            info["expired_with_display_ttl"] = _count_expired(queue, ttl, head, tail)
        labels = []
        for label in queue.labels:
            position = queue.position(label)
            assert position is not None
            labels.append(
                {
                    "label": label,
                    "position": position,
                    "offset": position - head,
                    "lag": tail - position,
                    "returned": len(_mpmc_returned(queue, label)),
                    "expired_unseen": _mpmc_expired_unseen(queue, label),
                }
            )
        info["labels"] = labels
    return info


def _count_expired(queue: MpmcQueue, ttl: float, head: int, tail: int) -> int:
    """Elements that a queue opened with ``ttl`` would drop now (stamps never decrease)."""
    cutoff = _plan.expiry_cutoff_ms(int(time.time() * 1000), math.ceil(ttl * 1000))
    if cutoff is None or head == tail:
        return 0
    low, high = head, tail
    while low < high:  # first index stamped after the cutoff
        middle = (low + high) // 2
        if _timestamp_at(queue, middle) > cutoff:
            high = middle
        else:
            low = middle + 1
    return low - head


def _print_info(info: dict[str, Any]) -> None:
    kind = info["kind"]
    unit = "items" if kind == "fifo" else "elements"
    _print(f"path:          {info['path']}")
    _print(f"kind:          {_KIND_NAMES[kind]} ({info['format']})")
    _print(f"length:        {info['length']} {unit}")
    if kind == "fifo":
        _print(f"payload size:  {_human_bytes(info['payload_size'])}")
    _print(f"head, tail:    {info['head']}, {info['tail']} (first index, one past the last)")
    size = info["disk_size"]
    _print(f"disk size:     {_human_bytes(size)} ({size} bytes)")
    if kind == "fifo":
        return
    for name in ("oldest", "newest"):
        element = info[name]
        text = "-" if element is None else f"#{element['index']} at {element['time']}"
        _print(f"{name}:        {text}")
    ttl_line = "not stored on disk (it is the ttl argument of MpmcQueue(path, ttl))"
    if "display_ttl_seconds" in info:
        ttl_line += (
            f"; with --ttl {info['display_ttl_seconds']:g}: "
            f"{info['expired_with_display_ttl']} {unit} already past it"
        )
    _print(f"ttl:           {ttl_line}")
    labels = info["labels"]
    _print(f"labels:        {len(labels)}")
    if not labels:
        return
    rows = [("LABEL", "POSITION", "OFFSET", "LAG", "RETURNED", "EXPIRY-UNSEEN")]
    for entry in labels:
        rows.append(
            (
                _show_label(entry["label"]),
                str(entry["position"]),
                str(entry["offset"]),
                str(entry["lag"]),
                str(entry["returned"]),
                "yes" if entry["expired_unseen"] else "no",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        _print(("  " + "  ".join(cells)).rstrip())


def _command_info(args: argparse.Namespace) -> int:
    info = _collect_info(args.path, args.ttl)
    if args.json:
        _print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        _print_info(info)
    return EXIT_OK


# ---------------------------------------------------------------- peek


@dataclass
class _Peeked:
    index: int | None
    """None for an item handed back to the label (delivered before its position)."""
    timestamp_ms: int | None
    item: bytes


def _collect_peek(path: str, label: str | None, count: int) -> tuple[Detected, str, list[_Peeked]]:
    detected = detect(path)
    if detected.kind == "fifo":
        if label is not None:
            raise CliError("--label applies to MPMC queues only; this is a FIFO queue", EXIT_USAGE)
        with _open_fifo(detected.path) as fifo:
            head, tail = _fifo_bounds(fifo)
            stop = min(tail, head + count)
            items = [_Peeked(index, None, value) for index, value in _iter_values(fifo, head, stop)]
            return detected, f"{fifo.len} items; from the head (index {head})", items
    with _open_mpmc(detected.path) as queue:
        head, tail = _mpmc_bounds(queue)
        peeked: list[_Peeked] = []
        if label is None:
            start = head
            where = f"from the head (index {head})"
        else:
            position = queue.position(label)
            if position is None:
                known = ", ".join(map(_show_label, queue.labels)) or "none"
                raise CliError(f"{path}: no label {label!r} (labels: {known})", EXIT_NOT_FOUND)
            start = position
            returned = _mpmc_returned(queue, label)
            peeked = [_Peeked(None, None, item) for item in returned[:count]]
            where = f"for label {label!r} at position {position}"
            if returned:
                where += f", {len(returned)} handed-back items first"
        stop = min(tail, start + count - len(peeked))
        for index, value in _iter_values(queue, start, stop):
            peeked.append(_Peeked(index, _plan.stamped_timestamp(value), _plan.unstamp(value)))
        return detected, f"{queue.len} elements; {where}", peeked


def _hexdump(data: bytes) -> list[str]:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{byte:02x}" for byte in chunk)
        text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"    {offset:08x}  {hexes:<47}  |{text}|")
    return lines


def _command_peek(args: argparse.Namespace) -> int:
    detected, summary, peeked = _collect_peek(args.path, args.label, args.n)
    if args.raw:
        out = _binary_stdout()
        for entry in peeked:
            out.write(b"%d:" % len(entry.item) + entry.item + b",")
        out.flush()
        return EXIT_OK
    if args.json:
        document = {
            "path": detected.path,
            "kind": detected.kind,
            "label": args.label,
            "items": [
                {
                    "index": entry.index,
                    "returned": entry.index is None,
                    "timestamp_ms": entry.timestamp_ms,
                    "size": len(entry.item),
                    "base64": base64.b64encode(entry.item).decode("ascii"),
                }
                for entry in peeked
            ],
        }
        _print(json.dumps(document, indent=2, ensure_ascii=False))
        return EXIT_OK
    _print(f"{_KIND_NAMES[detected.kind]} queue {detected.path}: {summary}")
    if not peeked:
        _print("(nothing to read)")
    limit = args.max_bytes
    for entry in peeked:
        where = "returned" if entry.index is None else f"#{entry.index}"
        stamp = "" if entry.timestamp_ms is None else f"  {_iso_ms(entry.timestamp_ms)}"
        shown = entry.item if limit == 0 else entry.item[:limit]
        more = len(entry.item) - len(shown)
        suffix = f" ... (+{more} bytes)" if more else ""
        if args.hex:
            _print(f"{where}  {len(entry.item)} B{stamp}{suffix}")
            for line in _hexdump(shown):
                _print(line)
        else:
            _print(f"{where}  {len(entry.item)} B{stamp}  {shown!r}{suffix}")
    return EXIT_OK


def _binary_stdout() -> BinaryIO:
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        raise CliError("stdout does not accept bytes")
    sys.stdout.flush()
    result: BinaryIO = buffer
    return result


# ---------------------------------------------------------------- queue images
# What export and migrate-rocksq read and what import and migrate-rocksq write:
# the items in order, and for MPMC the labels with positions relative to them.


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


def _image_of_fifo(queue: PersistentQueueWithCapacity) -> QueueImage:
    head, tail = _fifo_bounds(queue)
    return QueueImage(
        "fifo",
        tail - head,
        ((0, value) for _index, value in _iter_values(queue, head, tail)),
        header={"head": head, "tail": tail, "payload_size": queue.payload_size},
    )


def _image_of_mpmc(queue: MpmcQueue) -> QueueImage:
    head, tail = _mpmc_bounds(queue)
    labels = []
    for label in queue.labels:
        position = queue.position(label)
        assert position is not None
        labels.append(
            LabelImage(
                label,
                position - head,
                _mpmc_expired_unseen(queue, label),
                _mpmc_returned(queue, label),
            )
        )
    items = (
        (_plan.stamped_timestamp(value), _plan.unstamp(value))
        for _index, value in _iter_values(queue, head, tail)
    )
    header = {"head": head, "tail": tail, "newest_timestamp_ms": _mpmc_newest_counter(queue)}
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
    header["exported_at"] = _iso_ms(int(time.time() * 1000))
    header["exported_by"] = f"rocksq_aio {__version__}"
    header.update(image.header)
    return header


def _write_export(stream: BinaryIO, image: QueueImage, source: str, progress: _Progress) -> int:
    header = _export_header(image, source)
    stream.write(json.dumps(header, ensure_ascii=True).encode("ascii") + b"\n")
    written = 0
    mpmc = image.kind == "mpmc"
    for timestamp, item in image.items:
        encoded = base64.b64encode(item)
        stream.write(b"%d %s\n" % (timestamp, encoded) if mpmc else encoded + b"\n")
        written += 1
        if written % _CHUNK_ITEMS == 0:
            progress.advance(_CHUNK_ITEMS)
    progress.advance(written % _CHUNK_ITEMS)
    if written != image.count:
        raise QueueCorruptedError(f"expected {image.count} items, read {written}")
    return written


@contextlib.contextmanager
def _output_file(name: str, force: bool) -> Iterator[BinaryIO]:
    """Write to ``name`` through a temporary file renamed at the end (``-``: stdout)."""
    if name == "-":
        yield _binary_stdout()
        return
    target = os.path.abspath(name)
    if os.path.isdir(target):
        raise CliError(f"{name}: is a directory")
    if os.path.lexists(target) and not force:
        raise CliError(f"{name}: already exists; pass --force to overwrite it")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise CliError(f"{name}: directory {directory} does not exist", EXIT_NOT_FOUND)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
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


def _command_export(args: argparse.Namespace) -> int:
    detected = detect(args.path)
    quiet = args.quiet
    with _output_file(args.file, args.force) as stream:
        if detected.kind == "fifo":
            with _open_fifo(detected.path) as fifo:
                image = _image_of_fifo(fifo)
                progress = _Progress("export", image.count, not quiet)
                written = _write_export(stream, image, detected.path, progress)
        else:
            with _open_mpmc(detected.path) as queue:
                image = _image_of_mpmc(queue)
                progress = _Progress("export", image.count, not quiet)
                written = _write_export(stream, image, detected.path, progress)
        stream.flush()
    progress.finish()
    labels = f" and {len(image.labels)} labels" if image.kind == "mpmc" else ""
    target = "stdout" if args.file == "-" else args.file
    _note(f"exported {written} items{labels} of {detected.path} to {target}", quiet)
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


def _command_import(args: argparse.Namespace) -> int:
    with _input_file(args.file) as stream:
        name = "<stdin>" if args.file == "-" else args.file
        image = _ExportReader(stream, name).read()
        summary = _write_image(args.path, image, quiet=args.quiet, action="import")
    _note(f"imported {summary} into {os.path.abspath(args.path)}", args.quiet)
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
                    f"{path}: holds a {_KIND_NAMES[detected.kind]} queue, the source is "
                    f"{_KIND_NAMES[kind]}; refusing to write into it"
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
        descriptor = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _check_empty_queue(detected: Detected) -> None:
    if detected.kind == "fifo":
        with _open_fifo(detected.path) as fifo:
            length = fifo.len
            labels: list[str] = []
    else:
        with _open_mpmc(detected.path) as queue:
            length = queue.len
            labels = queue.labels
    if length or labels:
        raise CliError(
            f"{detected.path}: refusing to overwrite a non-empty queue "
            f"({length} items, {len(labels)} labels)"
        )


def _write_image(path: str, image: QueueImage, *, quiet: bool, action: str) -> str:
    with _destination(path, image.kind) as directory:
        if image.kind == "fifo":
            _write_fifo(directory, image, _Progress(action, image.count, not quiet))
            return f"{image.count} items"
        _write_mpmc(directory, image, action, quiet)
        return f"{image.count} elements and {len(image.labels)} labels"


def _write_fifo(path: str, image: QueueImage, progress: _Progress) -> None:
    with _open_fifo(path, sync=True) as fifo:
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
    with _open_mpmc(path, sync=True, clock=lambda: now[0]) as queue:
        if queue.len or queue.labels:
            raise AssertionError("the destination must be empty")
        # Labels are registered at the head while the queue is empty, then
        # moved to their position by reading (the only way to move a label).
        for label in image.labels:
            queue.next(label.label, StartPosition.Oldest, 1)
        progress = _Progress(action, image.count, not quiet)
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
            _warn(
                f"{raised} timestamps were below an earlier one and were raised to it "
                "(timestamps never decrease along a rocksq_aio queue)"
            )
        if queue.len != image.count:
            raise QueueError(f"wrote {queue.len} elements, expected {image.count}")
        _position_labels(queue, image.labels, quiet)


def _position_labels(queue: MpmcQueue, labels: list[LabelImage], quiet: bool) -> None:
    head, _tail = _mpmc_bounds(queue)
    progress = _Progress("positioning labels", sum(label.offset for label in labels), not quiet)
    for label in labels:
        remaining = label.offset
        while remaining:
            items, _expired = queue.next(
                label.label, StartPosition.Oldest, min(remaining, _CHUNK_ITEMS)
            )
            if not items:
                raise QueueError(f"label {label.label!r} could not reach offset {label.offset}")
            remaining -= len(items)
            progress.advance(len(items))
    progress.finish()
    for label in labels:
        if label.expired_unseen and not _set_expired_unseen(queue, label.label):
            _warn(f"label {label.label!r}: its pending expiry report could not be kept")
    for label in labels:
        if label.returned:
            queue.give_back(label.label, list(label.returned), None)
    for label in labels:
        position = queue.position(label.label)
        if position is None or position - head != label.offset:
            raise QueueError(f"label {label.label!r} ended at {position}, not {label.offset}")


# ---------------------------------------------------------------- RocksQ 0.3.0


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


class RocksqSource:
    """A RocksQ 0.3.0 queue directory, opened read-only."""

    def __init__(self, path: str, *, ttl: float | None) -> None:
        self.path = _check_directory(path)
        families = _list_families(self.path)
        if families == ["default"]:
            self.kind: Kind = "fifo"
        elif set(families) == _ROCKSQ_MPMC_FAMILIES:
            self.kind = "mpmc"
        else:
            hint = " (it is a rocksq_aio queue)" if _plan.META_CF in families else ""
            raise CliError(
                f"{path}: not a RocksQ 0.3.0 queue: column families {sorted(families)}{hint}",
                EXIT_NOT_FOUND,
            )
        if lock_is_held(self.path):
            raise QueueLockedError(
                f"RocksQ queue at {self.path!r} is open (in this or another process)"
            )
        self.ttl = ttl
        self.now = time.time()
        self.warnings: list[str] = []
        self.db = _RawDb(self.path, families, read_only=True, keep_directory_clean=True)

    def close(self) -> None:
        self.db.close()

    def corrupted(self, message: str) -> QueueCorruptedError:
        return QueueCorruptedError(f"RocksQ queue at {self.path!r}: {message}")

    def _counter(self, family: str, index: int, *, ttl_suffix: bool) -> int | None:
        value = self.db.get(family, _rocksq_key(index))
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
        for key, _value in self.db.items(family):
            if len(key) != 8:
                raise self.corrupted(f"key {key!r} in {family!r} is not an 8-byte index")
            index: int = _LE_U64.unpack(key)[0]
            if index not in counters:
                yield index

    def _values(
        self, family: str, start: int, relatives: Sequence[int]
    ) -> Iterator[tuple[int, bytes | None]]:
        """(relative index, value or None when missing), read in chunks."""
        for offset in range(0, len(relatives), _CHUNK_ITEMS):
            chunk = relatives[offset : offset + _CHUNK_ITEMS]
            keys = [
                _rocksq_key((start + relative) % ROCKSQ_MAX_ALLOWED_INDEX) for relative in chunk
            ]
            yield from zip(chunk, self.db.get_many(family, keys), strict=True)

    # ------------------------------------------------------------ FIFO

    def fifo_image(self) -> QueueImage:
        read = self._counter("default", _ROCKSQ_FIFO_READ_INDEX, ttl_suffix=False) or 0
        write = self._counter("default", _ROCKSQ_FIFO_WRITE_INDEX, ttl_suffix=False) or 0
        space = self._counter("default", _ROCKSQ_FIFO_SPACE, ttl_suffix=False) or 0
        if read >= ROCKSQ_MAX_ALLOWED_INDEX or write >= ROCKSQ_MAX_ALLOWED_INDEX:
            raise self.corrupted(f"read index {read} or write index {write} is out of range")
        length = (write - read) % ROCKSQ_MAX_ALLOWED_INDEX
        head_present = self.db.get("default", _rocksq_key(read)) is not None
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
        for key, value in self.db.items("reader"):
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
            if not label or len(label.encode("utf-8")) > 4096:
                raise CliError(
                    f"RocksQ label {label!r} is not a valid rocksq_aio label (non-empty, at "
                    "most 4096 UTF-8 bytes); leave it out with --drop-label"
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


def _command_migrate(args: argparse.Namespace) -> int:
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise CliError("SRC and DST must be different paths", EXIT_USAGE)
    source = RocksqSource(args.src, ttl=args.ttl)
    try:
        if source.kind == "fifo":
            if args.drop_label:
                raise CliError("--drop-label applies to MPMC queues only", EXIT_USAGE)
            image = source.fifo_image()
        else:
            image = source.mpmc_image(args.drop_label)
        if args.dry_run:
            for _ in image.items:
                pass
            summary = f"{image.count} items"
            if image.kind == "mpmc":
                positions = ", ".join(
                    f"{_show_label(label.label)}@{label.offset}"
                    + ("(expired)" if label.expired_unseen else "")
                    for label in image.labels
                )
                summary = f"{image.count} elements and labels [{positions}]"
        else:
            summary = _write_image(args.dst, image, quiet=args.quiet, action="migrate")
    finally:
        source.close()
    for warning in source.warnings:
        _warn(warning)
    kind = _KIND_NAMES[image.kind]
    if args.dry_run:
        _note(f"dry run: would migrate RocksQ {kind} queue {source.path}: {summary}", args.quiet)
    else:
        _note(
            f"migrated RocksQ {kind} queue {source.path} to {os.path.abspath(args.dst)}: {summary}",
            args.quiet,
        )
    return EXIT_OK


# ---------------------------------------------------------------- stats

_DB_INT_PROPERTIES = (
    "rocksdb.num-running-compactions",
    "rocksdb.num-running-flushes",
    "rocksdb.background-errors",
    "rocksdb.is-write-stopped",
    "rocksdb.actual-delayed-write-rate",
    "rocksdb.num-snapshots",
)
_FAMILY_INT_PROPERTIES = (
    "rocksdb.estimate-num-keys",
    "rocksdb.estimate-live-data-size",
    "rocksdb.total-sst-files-size",
    "rocksdb.live-sst-files-size",
    "rocksdb.cur-size-all-mem-tables",
    "rocksdb.num-entries-active-mem-table",
    "rocksdb.num-deletes-active-mem-table",
    "rocksdb.num-immutable-mem-table",
    "rocksdb.mem-table-flush-pending",
    "rocksdb.compaction-pending",
    "rocksdb.estimate-pending-compaction-bytes",
    "rocksdb.num-live-versions",
)
_LEVELS = 7


def _int_property(family: Rdict, name: str) -> int | None:
    try:
        value = family.property_int_value(name)
    except Exception:
        text = family.property_value(name)
        return int(text) if text is not None and text.strip().isdigit() else None
    return None if value is None else int(value)


def _collect_stats(path: str, read_only: bool) -> dict[str, Any]:
    detected = detect(path)
    families = sorted(detected.column_families)
    with _RawDb(detected.path, families, read_only=read_only) as db:
        default = db.families["default"]
        stats: dict[str, Any] = {
            "path": detected.path,
            "kind": detected.kind,
            "read_only": read_only,
            "db": {name: _int_property(default, name) for name in _DB_INT_PROPERTIES},
            "column_families": {},
        }
        for name in families:
            family = db.families[name]
            entry: dict[str, Any] = {
                prop: _int_property(family, prop) for prop in _FAMILY_INT_PROPERTIES
            }
            entry["files_per_level"] = [
                _int_property(family, f"rocksdb.num-files-at-level{level}")
                for level in range(_LEVELS)
            ]
            stats["column_families"][name] = entry
            del family
        stats["rocksdb.stats"] = default.property_value("rocksdb.stats")
        del default
    return stats


def _print_stats(stats: dict[str, Any], verbose: bool) -> None:
    mode = " (opened read-only)" if stats["read_only"] else ""
    _print(f"path:  {stats['path']}{mode}")
    _print(f"kind:  {_KIND_NAMES[stats['kind']]}")
    for name, value in stats["db"].items():
        _print(f"{name.removeprefix('rocksdb.')}: {'-' if value is None else value}")
    header = (
        "FAMILY",
        "KEYS(EST)",
        "SST",
        "LIVE(EST)",
        "MEMTABLES",
        "PENDING-COMPACT",
        "FILES/LEVEL",
    )
    rows = [header]
    for name, entry in stats["column_families"].items():

        def size(key: str, entry: dict[str, Any] = entry) -> str:
            value = entry[key]
            return "-" if value is None else _human_bytes(value)

        rows.append(
            (
                name,
                str(entry["rocksdb.estimate-num-keys"]),
                size("rocksdb.total-sst-files-size"),
                size("rocksdb.estimate-live-data-size"),
                size("rocksdb.cur-size-all-mem-tables"),
                size("rocksdb.estimate-pending-compaction-bytes"),
                ",".join("-" if n is None else str(n) for n in entry["files_per_level"]),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        _print("  ".join(cells).rstrip())
    if verbose and stats.get("rocksdb.stats"):
        _print()
        _print(stats["rocksdb.stats"].rstrip())


def _command_stats(args: argparse.Namespace) -> int:
    stats = _collect_stats(args.path, args.read_only)
    if args.json:
        _print(json.dumps(stats, indent=2))
    else:
        _print_stats(stats, args.verbose)
    return EXIT_OK


# ---------------------------------------------------------------- argument parsing


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog or _prog(),
        description="Inspect, export, import and migrate rocksq_aio queues.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        command = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=_EXIT_CODES_HELP,
            formatter_class=formatter,
        )
        return command

    info = add(
        "info",
        "kind, length, sizes, head/tail, labels with positions and lag",
        "Show what a queue holds: its kind (FIFO or MPMC), length, payload size (FIFO),\n"
        "disk size, head and tail indices; for MPMC the oldest and newest element times\n"
        "and every label with its position, lag (tail - position), items handed back to\n"
        "it and whether its next read reports expired elements. The TTL of an MPMC queue\n"
        "is not stored on disk (it is an argument of whoever opens it); --ttl only shows\n"
        "how many elements a queue opened with that TTL would drop now.\n"
        "Nothing is consumed; the queue must not be open elsewhere.",
    )
    info.add_argument("path", metavar="PATH", help="queue directory")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument(
        "--ttl", type=_seconds, metavar="SECONDS", help="MPMC: display only, see above"
    )
    info.set_defaults(handler=_command_info)

    peek = add(
        "peek",
        "show the next items without consuming them",
        "Show the next N items without consuming them: FIFO from the head; MPMC from\n"
        "the saved position of --label (items handed back to the label first, as its\n"
        "next read would), or from the head without --label.\n"
        "Items are shown as Python bytes literals (or a hex dump with --hex), cut at\n"
        "--max-bytes. --raw writes the raw bytes of each item to stdout as a netstring\n"
        "'<decimal length>:<bytes>,' (no separator between items), so that items\n"
        "containing newlines stay unambiguous.",
    )
    peek.add_argument("path", metavar="PATH", help="queue directory")
    peek.add_argument("--label", "-l", help="MPMC: read from this label's position")
    peek.add_argument(
        "-n", type=_positive_int, default=10, metavar="N", help="items to show (default 10)"
    )
    peek.add_argument(
        "--max-bytes",
        type=_non_negative_int,
        default=100,
        metavar="B",
        help="show at most B bytes of each item (0: all; default 100)",
    )
    output = peek.add_mutually_exclusive_group()
    output.add_argument("--hex", action="store_true", help="hex and ASCII dump")
    output.add_argument("--json", action="store_true", help="JSON with base64 items")
    output.add_argument("--raw", action="store_true", help="raw bytes as netstrings")
    peek.set_defaults(handler=_command_peek)

    export = add(
        "export",
        "write a queue to a line-oriented file (nothing is consumed)",
        "Write every item of the queue at PATH to FILE ('-': stdout; a name ending in\n"
        ".gz is gzip-compressed). Nothing is consumed.\n\n"
        'Format: line 1 is a JSON header {"format": "rocksq_aio-export", "version": 1,\n'
        '"kind": "fifo"|"mpmc", "count": N, ...}; for MPMC its "labels" list holds\n'
        '{"label", "offset" (position relative to the first item), "expired_unseen",\n'
        '"returned" (base64 items handed back to the label)}. Then N lines, one per item:\n'
        "FIFO '<base64>', MPMC '<timestamp_ms> <base64>'.",
    )
    export.add_argument("path", metavar="PATH", help="queue directory")
    export.add_argument("file", metavar="FILE", help="output file, '-' for stdout")
    export.add_argument("--force", "-f", action="store_true", help="overwrite FILE")
    export.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    export.set_defaults(handler=_command_export)

    import_ = add(
        "import",
        "create a queue from an export file",
        "Create the queue at PATH from FILE ('-': stdin; gzip is detected), written by\n"
        "export: items in order, MPMC timestamps, labels at their positions, pending\n"
        "expiry reports and items handed back to labels. PATH must not exist, or be an\n"
        "empty directory (the queue is built beside it and renamed into place, so a\n"
        "failed import leaves nothing), or an empty queue of the same kind (written in\n"
        "place). A non-empty queue is never overwritten.",
    )
    import_.add_argument("file", metavar="FILE", help="export file, '-' for stdin")
    import_.add_argument("path", metavar="PATH", help="queue directory to create")
    import_.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    import_.set_defaults(handler=_command_import)

    migrate = add(
        "migrate-rocksq",
        "convert a RocksQ 0.3.0 queue directory into a rocksq_aio queue",
        "Read the RocksQ 0.3.0 queue at SRC (FIFO or MPMC; opened read-only, it must not\n"
        "be open in RocksQ) and write an equivalent rocksq_aio queue at DST (same rules\n"
        "as import). FIFO: the items between RocksQ's read and write indices, in order\n"
        "(wrapped indices included). MPMC: the stored elements between its start and\n"
        "write indices with their RocksDB TTL time (to the second) as timestamp, and\n"
        "every label at the same element; a label whose next elements were removed by\n"
        "RocksQ's TTL reports expired on its next read, as in RocksQ. RocksQ delivers\n"
        "elements past their TTL until RocksDB compacts them away: they are migrated\n"
        "unless --ttl is given.",
    )
    migrate.add_argument("src", metavar="SRC", help="RocksQ queue directory")
    migrate.add_argument("dst", metavar="DST", help="rocksq_aio queue directory to create")
    migrate.add_argument(
        "--ttl",
        type=_seconds,
        metavar="SECONDS",
        help="MPMC: leave out elements older than this (RocksQ's ttl)",
    )
    migrate.add_argument(
        "--drop-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="MPMC: do not migrate this label (repeatable; needed for RocksQ's empty label)",
    )
    migrate.add_argument("--dry-run", action="store_true", help="read SRC, write nothing")
    migrate.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    migrate.set_defaults(handler=_command_migrate)

    stats = add(
        "stats",
        "RocksDB statistics and compaction state per column family",
        "Show RocksDB properties of every column family (estimated keys, SST and live\n"
        "data sizes, memtables, files per level, pending compaction) and of the database\n"
        "(running compactions and flushes, background errors, write stalls). The queue\n"
        "is opened with the library's options; counters such as running compactions are\n"
        "those of this process's instance. --read-only opens without taking the lock,\n"
        "which works while the queue is open elsewhere (files as last persisted).",
    )
    stats.add_argument("path", metavar="PATH", help="queue directory")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument(
        "--verbose", "-v", action="store_true", help="also print the rocksdb.stats text"
    )
    stats.add_argument("--read-only", action="store_true", help="do not take the lock")
    stats.set_defaults(handler=_command_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code (``sys.exit(main())``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as error:
        return _fail(error.message, error.code)
    except QueueLockedError as error:
        return _fail(str(error), EXIT_LOCKED)
    except QueueCorruptedError as error:
        return _fail(str(error), EXIT_CORRUPTED)
    except (QueueError, ValueError, TypeError) as error:
        return _fail(str(error), EXIT_ERROR)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as error:
        return _fail(str(error), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _fail(message: str, code: int) -> int:
    with contextlib.suppress(OSError):
        sys.stderr.write(f"{_prog()}: error: {message}\n")
    return code
