"""The read-only commands: ``info``, ``peek`` and ``stats``.

``info`` and ``peek`` open the queue through its engine, or take a snapshot of
it when another process holds it open (``_inspect.reading_fifo``), and read
only their public accessors (``snapshot``, ``read_stored``, ``len``,
``payload_size``, ``disk_size``); nothing is consumed. ``stats`` reads
RocksDB's properties through ``_inspect.open_raw`` (``open_raw_snapshot`` for
a queue open elsewhere).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from rocksdict import Rdict

from .._errors import QueueLockedError
from ..rocksdb import directory
from ..rocksdb.mpmc import RocksDBMpmc
from ..rocksdb.plan import expiry_cutoff_ms
from ..rocksdb.view import MpmcView
from ._exit import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from ._inspect import (
    KIND_NAMES,
    Detected,
    Snapshot,
    detect,
    iter_stored,
    open_raw,
    open_raw_snapshot,
    reading_fifo,
    reading_mpmc,
    snapshot_of,
)
from ._output import (
    binary_stdout,
    hexdump,
    human_bytes,
    iso_ms,
    note,
    print_table,
    say,
    show_label,
)

# ---------------------------------------------------------------- info


def _timestamp_at(queue: RocksDBMpmc | MpmcView, index: int) -> int:
    return queue.read_stored(index, 1)[0][0]


def collect_info(path: str, ttl: float | None) -> dict[str, Any]:
    detected = detect(path)
    info: dict[str, Any] = {
        "path": detected.path,
        "kind": detected.kind,
        "format": detected.format,
        "column_families": sorted(detected.column_families),
    }
    if detected.kind == "fifo":
        with reading_fifo(detected.path) as fifo:
            _note_snapshot(info, snapshot_of(fifo))
            counters = fifo.snapshot()
            info.update(
                length=fifo.len,
                head=counters.head,
                tail=counters.tail,
                payload_size=fifo.payload_size,
                disk_size=fifo.disk_size,
            )
            if "snapshot" in info:
                # An open engine gave dead reservations back; these are live ones.
                info["reserved"] = counters.pending
        return info
    with reading_mpmc(detected.path) as queue:
        _note_snapshot(info, snapshot_of(queue))
        snapshot = queue.snapshot()
        head, tail = snapshot.head, snapshot.tail
        info.update(length=queue.len, head=head, tail=tail, disk_size=queue.disk_size)
        info["ttl"] = None
        info["ttl_note"] = (
            "TTL is not stored on disk: it is the ttl argument of whoever opens the queue"
        )
        info["newest_timestamp_counter_ms"] = snapshot.newest_timestamp_ms
        for name, index in (("oldest", head), ("newest", tail - 1)):
            if head < tail:
                stamp = _timestamp_at(queue, index)
                info[name] = {"index": index, "timestamp_ms": stamp, "time": iso_ms(stamp)}
            else:
                info[name] = None
        if ttl is not None:
            info["display_ttl_seconds"] = ttl
            info["expired_with_display_ttl"] = _count_expired(queue, ttl, head, tail)
        info["labels"] = [
            {
                "label": label,
                "position": saved.index,
                "offset": saved.index - head,
                "lag": tail - saved.index,
                "returned": len(snapshot.given_back.get(label, ())),
                "expired_unseen": saved.expired_unseen,
            }
            for label, saved in sorted(snapshot.positions.items())
        ]
        if "snapshot" in info:
            for entry in info["labels"]:
                entry["reserved"] = snapshot.pending.get(entry["label"], 0)
    return info


def _note_snapshot(document: dict[str, Any], snapshot: Snapshot | None) -> None:
    """Say in a JSON result that it is a snapshot (nothing when it is not)."""
    if snapshot is not None:
        document["snapshot"] = snapshot.as_json()


def _count_expired(queue: RocksDBMpmc | MpmcView, ttl: float, head: int, tail: int) -> int:
    """Elements that a queue opened with ``ttl`` would drop now."""
    cutoff = expiry_cutoff_ms(int(time.time() * 1000), math.ceil(ttl * 1000))
    if cutoff is None:
        return 0
    # Stamps never decrease along the queue: count those at or before the cutoff.
    return bisect.bisect_right(
        range(head, tail), cutoff, key=lambda index: _timestamp_at(queue, index)
    )


def _print_info(info: dict[str, Any]) -> None:
    kind = info["kind"]
    unit = "items" if kind == "fifo" else "elements"
    snapshot = info.get("snapshot")
    if snapshot is not None:
        say(snapshot["note"])
    say(f"path:          {info['path']}")
    say(f"kind:          {KIND_NAMES[kind]} ({info['format']})")
    say(f"length:        {info['length']} {unit}")
    if kind == "fifo":
        say(f"payload size:  {human_bytes(info['payload_size'])}")
        if snapshot is not None:
            say(f"reserved:      {info['reserved']} items (taken, not yet acked)")
    say(f"head, tail:    {info['head']}, {info['tail']} (first index, one past the last)")
    size = info["disk_size"]
    say(f"disk size:     {human_bytes(size)} ({size} bytes)")
    if kind == "fifo":
        return
    for name in ("oldest", "newest"):
        element = info[name]
        text = "-" if element is None else f"#{element['index']} at {element['time']}"
        say(f"{name}:        {text}")
    ttl_line = "not stored on disk (it is the ttl argument of MpmcQueue(path, ttl))"
    if "display_ttl_seconds" in info:
        ttl_line += (
            f"; with --ttl {info['display_ttl_seconds']:g}: "
            f"{info['expired_with_display_ttl']} {unit} already past it"
        )
    say(f"ttl:           {ttl_line}")
    labels = info["labels"]
    say(f"labels:        {len(labels)}")
    if not labels:
        return
    # Reservations are a live process's own: only a snapshot can show any.
    reserved = "snapshot" in info
    rows = [
        ("LABEL", "POSITION", "OFFSET", "LAG", "RETURNED")
        + (("RESERVED",) if reserved else ())
        + ("EXPIRY-UNSEEN",)
    ]
    rows += [
        (
            show_label(entry["label"]),
            str(entry["position"]),
            str(entry["offset"]),
            str(entry["lag"]),
            str(entry["returned"]),
        )
        + ((str(entry["reserved"]),) if reserved else ())
        + ("yes" if entry["expired_unseen"] else "no",)
        for entry in labels
    ]
    print_table(rows, indent="  ")


def command_info(args: argparse.Namespace) -> int:
    info = collect_info(args.path, args.ttl)
    if args.json:
        say(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        _print_info(info)
    return EXIT_OK


# ---------------------------------------------------------------- peek


@dataclass
class Peeked:
    index: int | None
    """None for an item handed back to the label (delivered before its position)."""
    timestamp_ms: int | None
    item: bytes


@dataclass
class PeekResult:
    detected: Detected
    summary: str
    items: list[Peeked]
    snapshot: Snapshot | None
    """Set when the queue is open elsewhere and this is a snapshot of it."""


def collect_peek(path: str, label: str | None, count: int) -> PeekResult:
    detected = detect(path)
    if detected.kind == "fifo":
        if label is not None:
            raise CliError("--label applies to MPMC queues only; this is a FIFO queue", EXIT_USAGE)
        with reading_fifo(detected.path) as fifo:
            head, tail, _pending = fifo.snapshot()
            stop = min(tail, head + count)
            items = [
                Peeked(index, None, value)
                for index, value in iter_stored(fifo.read_stored, head, stop)
            ]
            summary = f"{fifo.len} items; from the head (index {head})"
            return PeekResult(detected, summary, items, snapshot_of(fifo))
    with reading_mpmc(detected.path) as queue:
        snapshot = queue.snapshot()
        peeked: list[Peeked] = []
        if label is None:
            start = snapshot.head
            where = f"from the head (index {start})"
        else:
            saved = snapshot.positions.get(label)
            if saved is None:
                known = ", ".join(map(show_label, sorted(snapshot.positions))) or "none"
                raise CliError(f"{path}: no label {label!r} (labels: {known})", EXIT_NOT_FOUND)
            start = saved.index
            returned = snapshot.given_back.get(label, [])
            peeked = [Peeked(None, None, item) for item in returned[:count]]
            where = f"for label {label!r} at position {start}"
            if returned:
                where += f", {len(returned)} handed-back items first"
        stop = min(snapshot.tail, start + count - len(peeked))
        for index, (stamp, item) in iter_stored(queue.read_stored, start, stop):
            peeked.append(Peeked(index, stamp, item))
        summary = f"{queue.len} elements; {where}"
        return PeekResult(detected, summary, peeked, snapshot_of(queue))


def command_peek(args: argparse.Namespace) -> int:
    result = collect_peek(args.path, args.label, args.n)
    detected, peeked = result.detected, result.items
    if args.raw:
        if result.snapshot is not None:
            note(result.snapshot.text)  # stdout holds the items alone
        out = binary_stdout()
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
        _note_snapshot(document, result.snapshot)
        say(json.dumps(document, indent=2, ensure_ascii=False))
        return EXIT_OK
    if result.snapshot is not None:
        say(result.snapshot.text)
    say(f"{KIND_NAMES[detected.kind]} queue {detected.path}: {result.summary}")
    if not peeked:
        say("(nothing to read)")
    limit = args.max_bytes
    for entry in peeked:
        where = "returned" if entry.index is None else f"#{entry.index}"
        stamp = "" if entry.timestamp_ms is None else f"  {iso_ms(entry.timestamp_ms)}"
        shown = entry.item if limit == 0 else entry.item[:limit]
        more = len(entry.item) - len(shown)
        suffix = f" ... (+{more} bytes)" if more else ""
        if args.hex:
            say(f"{where}  {len(entry.item)} B{stamp}{suffix}")
            for line in hexdump(shown):
                say(line)
        else:
            say(f"{where}  {len(entry.item)} B{stamp}  {shown!r}{suffix}")
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


def collect_stats(path: str, read_only: bool) -> dict[str, Any]:
    detected = detect(path)
    families = sorted(detected.column_families)
    if not read_only and not directory.lock_is_held(detected.path):
        try:
            with open_raw(detected.path, families, read_only=False) as handles:
                return _stats_of(detected, handles, read_only, None)
        except QueueLockedError:
            pass  # opened elsewhere meanwhile
    if read_only:
        with open_raw(detected.path, families) as handles:
            return _stats_of(detected, handles, read_only, None)
    with open_raw_snapshot(detected.path, families) as (handles, snapshot):
        return _stats_of(detected, handles, read_only, snapshot)


def _stats_of(
    detected: Detected, handles: dict[str, Rdict], read_only: bool, snapshot: Snapshot | None
) -> dict[str, Any]:
    """The properties; the caller drops ``handles`` (each family's is deleted here)."""
    families = sorted(detected.column_families)
    default = handles["default"]
    stats: dict[str, Any] = {
        "path": detected.path,
        "kind": detected.kind,
        "read_only": read_only,
        "db": {name: _int_property(default, name) for name in _DB_INT_PROPERTIES},
        "column_families": {},
    }
    _note_snapshot(stats, snapshot)
    for name in families:
        family = handles[name]
        entry: dict[str, Any] = {
            prop: _int_property(family, prop) for prop in _FAMILY_INT_PROPERTIES
        }
        entry["files_per_level"] = [
            _int_property(family, f"rocksdb.num-files-at-level{level}") for level in range(_LEVELS)
        ]
        stats["column_families"][name] = entry
        del family
    stats["rocksdb.stats"] = default.property_value("rocksdb.stats")
    del default
    return stats


def _print_stats(stats: dict[str, Any], verbose: bool) -> None:
    mode = " (opened read-only)" if stats["read_only"] else ""
    if "snapshot" in stats:
        say(f"{stats['snapshot']['note']} (a RocksDB secondary instance)")
    say(f"path:  {stats['path']}{mode}")
    say(f"kind:  {KIND_NAMES[stats['kind']]}")
    for name, value in stats["db"].items():
        say(f"{name.removeprefix('rocksdb.')}: {'-' if value is None else value}")
    rows = [
        ("FAMILY", "KEYS(EST)", "SST", "LIVE(EST)", "MEMTABLES", "PENDING-COMPACT", "FILES/LEVEL")
    ]
    for name, entry in stats["column_families"].items():

        def size(key: str, entry: dict[str, Any] = entry) -> str:
            value = entry[key]
            return "-" if value is None else human_bytes(value)

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
    print_table(rows)
    if verbose and stats.get("rocksdb.stats"):
        say()
        say(stats["rocksdb.stats"].rstrip())


def command_stats(args: argparse.Namespace) -> int:
    stats = collect_stats(args.path, args.read_only)
    if args.json:
        say(json.dumps(stats, indent=2))
    else:
        _print_stats(stats, args.verbose)
    return EXIT_OK
